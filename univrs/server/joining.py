"""Joining a running cluster: ask to be added as a learner, catch up, get promoted.

The joining node drives the whole procedure against any member's API (the member forwards each
request to the leader), so progress is visible from the joining side:

1. ``prepare``: read the cluster's id and members; refuse an id already taken by another node
   (a learner with our own raft address is our own interrupted join: resume it), unless the
   join *replaces* that member: the node lost its data dir, and its new incarnation takes
   the id over (the leader demotes the old incarnation to a learner bound to the new one).
2. ``run_join``: add ourselves as a learner; wait until our log is within ``MAX_LAG`` entries
   of the leader's (it streams a snapshot when its log is compacted); ask for promotion (the
   leader checks the lag again); done when we are a voter.

``Node.join`` holds the state (``adding``, ``catching-up`` with entries remaining,
``promoting``, ``voter`` or ``failed`` with the reason) for ``univrs cluster join`` to show.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs.api.admin import JOIN_TOKEN_HEADER
from univrs.config import NodeConfig
from univrs.errors import UnivrsError
from univrs.net.http import request_json
from univrs.runtime.membership import DEFAULT_MAX_LAG
from univrs.server.wiring import client_ssl

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.join")

POLL = 0.25  # seconds between progress polls of the cluster
JOIN_TIMEOUT = 600.0  # give up (state "failed") after this long
REQUEST_TIMEOUT = 15.0


@attrs.frozen
class JoinInfo:
    """The cluster a node is joining, as its member at ``target`` describes it."""

    target: str
    cluster_id: str
    members: tuple[str, ...]
    # Raft addresses of the members, to answer the leader before our log holds the membership.
    addresses: tuple[tuple[str, str], ...] = ()
    # Replace the member of our id (another incarnation, whose data dir was lost).
    replace: bool = False
    # The incarnation the cluster lists for our id (None: not a member, or unbound).
    bound: str | None = None
    # The join token to show the cluster (`univrs cluster join --token`); None: the one in
    # this node's config, if any (a node certificate admits a joiner too).
    token: str | None = attrs.field(default=None, repr=False)
    # The API token of whoever asked for the join, for a cluster with auth on (its admin
    # endpoints check it: docs/security.md).
    api_token: str | None = attrs.field(default=None, repr=False)
    # The API addresses of the other members ``target`` listed: where the join goes on when
    # ``target`` cannot be reached (it left, was removed or died while we joined).
    contacts: tuple[str, ...] = ()


class JoinRefused(UnivrsError):
    """This node cannot join the requested cluster (the message says why)."""


def _refused(message: str) -> Exception:
    return JoinRefused(message)


def _auth(api_token: str | None) -> dict[str, str]:
    return {} if api_token is None else {"Authorization": f"Bearer {api_token}"}


async def _describe(
    config: NodeConfig, target: str, api_token: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(cluster id, member rows) as the node at ``target`` reports them; JoinRefused if it
    cannot be reached or does not answer like a univrs node."""
    try:
        resp = await request_json(
            target,
            "GET",
            "/v1/cluster/status",
            headers=_auth(api_token),
            timeout=REQUEST_TIMEOUT,
            ssl_context=client_ssl(config),
        )
    except (OSError, ValueError, trio.TooSlowError) as exc:
        reason = str(exc) or type(exc).__name__
        raise _refused(f"cannot reach a univrs API at {target}: {reason}") from None
    doc = resp.body if isinstance(resp.body, dict) else {}
    cluster_id = doc.get("cluster_id")
    members = doc.get("members")
    if resp.status != 200 or not isinstance(cluster_id, str) or not isinstance(members, list):
        raise _refused(f"{target} did not describe its cluster (HTTP {resp.status})")
    return cluster_id, [m for m in members if isinstance(m, dict)]


async def check_join(
    config: NodeConfig,
    target: str,
    state: str,
    cluster_id: str | None,
    api_token: str | None = None,
) -> JoinInfo | None:
    """What `node start --join target` means for a data dir in ``state`` (see
    ``univrs.server.datadir.data_dir_state``): the join to drive, or None when there is none.

    ``new``: a join (refused with JoinRefused when it cannot be). ``joining``: resume it if the
    target can be asked, else start and wait for the leader. ``member``: nothing to do (a
    restart with the same flags), unless the cluster lists this node as a learner still (the
    join was interrupted after entries arrived: resume it); a data dir of another cluster, or
    of a node the cluster has removed, is refused: it must start empty to join."""
    if state == "new":
        return await prepare(config, target, api_token=api_token)
    if state == "joining":
        try:
            info = await prepare(config, target, api_token=api_token)
        except Exception as exc:  # JoinRefused (e.g. promoted meanwhile) or unreachable
            log.warning("not resuming the join", extra={"reason": str(exc)})
            return None
        if info.cluster_id != cluster_id:
            raise _refused(
                f"data dir {config.data_dir} belongs to cluster {cluster_id}, not "
                f"{info.cluster_id}; start on an empty data dir to join another cluster"
            )
        return info
    try:
        theirs, members = await _describe(config, target, api_token)
    except Exception:
        return None  # cannot tell now: start as the member the data dir says we are
    if theirs != cluster_id:
        raise _refused(
            f"data dir {config.data_dir} belongs to cluster {cluster_id}, not {theirs}; start "
            "on an empty data dir to join another cluster"
        )
    row = next((m for m in members if m.get("id") == config.node_id), None)
    if row is None:
        raise _refused(
            f"{config.node_id!r} is no longer a member of cluster {theirs} (removed); start it "
            "on an empty data dir to join again"
        )
    if row.get("voter") is False:  # a learner still: the promotion is what is left to do
        try:
            return await prepare(config, target, api_token=api_token)
        except Exception as exc:  # e.g. promoted meanwhile, or another node took the id
            log.warning("not resuming the join", extra={"reason": str(exc)})
    return None


async def prepare(
    config: NodeConfig,
    target: str,
    *,
    replace: bool = False,
    token: str | None = None,
    api_token: str | None = None,
) -> JoinInfo:
    """Check that ``config``'s node may join the cluster at ``target`` (``replace``: taking
    over the id of a member whose data dir was lost); raise JoinRefused. ``token``: the join
    token; ``api_token``: the caller's API token (a cluster with auth on checks it)."""
    cluster_id, members = await _describe(config, target, api_token)
    bound: str | None = None
    for m in members:
        if m.get("id") == config.node_id:
            same_addr = m.get("raft_addr") == config.raft_addr
            if same_addr and m.get("voter") and not replace:
                raise _refused(
                    f"node id {config.node_id!r} is already a voter of cluster {cluster_id} at "
                    f"this node's raft address {config.raft_addr}: if this node runs on that "
                    "member's data dir there is nothing to join (it catches up by itself); if "
                    "it lost its data dir, replace it: `univrs cluster join <member-api> "
                    "--replace`"
                )
            if not same_addr and not replace:
                raise _refused(
                    f"node id {config.node_id!r} is already a member of cluster {cluster_id} "
                    f"(at {m.get('raft_addr')}); choose another id or remove that member "
                    "first (or, if this node lost its data dir, replace it: `univrs cluster "
                    "join <member-api> --replace`)"
                )
            inc = m.get("incarnation")
            bound = inc if isinstance(inc, str) else None
    return JoinInfo(
        target=target,
        cluster_id=cluster_id,
        members=tuple(str(m.get("id")) for m in members),
        addresses=tuple(
            (str(m["id"]), m["raft_addr"])
            for m in members
            if isinstance(m.get("raft_addr"), str) and m.get("id") != config.node_id
        ),
        replace=replace,
        bound=bound,
        token=token,
        api_token=api_token,
        contacts=tuple(
            m["api_addr"]
            for m in members
            if isinstance(m.get("api_addr"), str) and m.get("id") != config.node_id
        ),
    )


async def _call(
    config: NodeConfig,
    target: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    resp = await request_json(
        target,
        method,
        path,
        body=body,
        headers=headers,
        timeout=REQUEST_TIMEOUT,
        ssl_context=client_ssl(config),
    )
    return resp.status, resp.body


@attrs.define(eq=False)
class _Contact:
    """The member a join talks to: ``info.target`` first; when it cannot be reached or
    answers with a server error, the next of the other members' API addresses (those
    ``target`` listed, then those of the configuration this node has received since). Any
    member forwards to the leader, so any live one will do.

    Before: the join asked ``target`` only, for up to ``JOIN_TIMEOUT`` (10 minutes). A joiner
    whose target left the cluster while it joined (chaos join-and-leave-under-load, seed 303,
    lmdb: the spare's join went to the follower that the next fault made leave) retried the
    dead address and never became a member."""

    node: NodeHandle
    info: JoinInfo
    current: str = ""

    def __attrs_post_init__(self) -> None:
        self.current = self.info.target

    def candidates(self) -> list[str]:
        me = self.node.config
        learned: list[str] = []
        membership = self.node.status().membership
        for member in sorted(membership.members):
            addr = membership.api_address_of(member)
            if member != me.node_id and addr:
                learned.append(addr)
        own = {me.api_addr}
        return [
            a
            for a in dict.fromkeys([self.info.target, *self.info.contacts, *learned])
            if a not in own
        ]

    def move_on(self, reason: str) -> None:
        """``current`` failed (``reason``): take the next candidate (wrapping around)."""
        order = self.candidates()
        if not order:
            return
        at = order.index(self.current) if self.current in order else -1
        following = order[(at + 1) % len(order)]
        if following != self.current:
            log.info(
                "join: asking another member",
                extra={"unreachable": self.current, "via": following, "reason": reason},
            )
            self.current = following

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """``_call`` on the current contact; (0, reason) when it cannot be reached, and then
        (as on a 5xx answer) the next call goes to the next member."""
        try:
            status, doc = await _call(self.node.config, self.current, method, path, body, headers)
        except (OSError, ValueError, trio.TooSlowError) as exc:
            status, doc = 0, str(exc) or type(exc).__name__
        if status == 0 or status >= 500:
            self.move_on(_error_of(doc))
        return status, doc


def _error_of(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message", err))
        if err:
            return str(err)
    return str(body)


async def run_join(node: NodeHandle, info: JoinInfo) -> None:
    """Drive the join to the end, recording progress in ``node.join``; never raises."""
    me = node.config
    node.join = {"state": "adding", "target": info.target, "cluster_id": info.cluster_id}
    log.info("joining cluster", extra={"cluster": info.cluster_id, "via": info.target})
    body: dict[str, Any] = {
        "id": me.node_id,
        "raft_addr": me.raft_addr,
        "api_addr": me.api_addr,
        "incarnation": node.storage.incarnation,
    }
    if info.replace:
        body["replace"] = True
    token = info.token or me.join_token
    auth = _auth(info.api_token)
    join_headers = {**auth, **({JOIN_TOKEN_HEADER: token} if token else {})}
    contact = _Contact(node=node, info=info)
    try:
        with trio.fail_after(JOIN_TIMEOUT):
            while True:  # 1. learner
                status, doc = await contact.call("POST", "/v1/cluster/members", body, join_headers)
                if status in (200, 201):
                    break
                # 401: no API token (auth on); 403: no join token, no certificate, no role
                if status in (400, 401, 403, 404, 409, 422):
                    raise _refused(_error_of(doc))
                node.join.update(detail=f"retrying: {_error_of(doc)}")
                await trio.sleep(POLL * 4)
            log.info("added as a learner", extra={"cluster": info.cluster_id})
            node.join = {**node.join, "state": "catching-up", "detail": None}
            while True:  # 2. catch up, 3. promote
                lag = await _own_lag(contact, me.node_id, auth)
                node.join["entries_remaining"] = lag
                if lag is not None and lag <= DEFAULT_MAX_LAG:
                    node.join["state"] = "promoting"
                    status, doc = await contact.call(
                        "POST", f"/v1/cluster/members/{me.node_id}/promote", headers=auth
                    )
                    if status == 200:
                        break
                    if status in (400, 401, 403, 404, 422):
                        raise _refused(_error_of(doc))
                    node.join["state"] = "catching-up"
                    node.join["detail"] = _error_of(doc)
                await trio.sleep(POLL)
        node.join = {**node.join, "state": "voter", "entries_remaining": 0, "detail": None}
        log.info("joined cluster as a voter", extra={"cluster": info.cluster_id})
    except trio.TooSlowError:
        node.join = {**node.join, "state": "failed", "detail": "timed out"}
        log.warning("join timed out", extra={"cluster": info.cluster_id})
    except Exception as exc:
        node.join = {**node.join, "state": "failed", "detail": str(exc)}
        log.warning("join failed", extra={"cluster": info.cluster_id, "error": str(exc)})


async def _own_lag(contact: _Contact, node_id: str, auth: dict[str, str]) -> int | None:
    status, doc = await contact.call("GET", "/v1/cluster/members", headers=auth)
    if status != 200 or not isinstance(doc, dict):
        return None
    for row in doc.get("members", []):
        if row.get("id") == node_id:
            lag = row.get("lag")
            return lag if isinstance(lag, int) else None
    return None
