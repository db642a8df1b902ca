"""Cluster administration endpoints: members, join, leave, remove, promote, transfer, snapshot.

Membership changes run on the leader; any other node forwards the request to the leader's API
(one hop: a forwarded request that lands on a non-leader is answered 503, never forwarded
again). Local operations (join, leave, snapshot, join progress) run on the node asked.

| endpoint | runs on | does |
| --- | --- | --- |
| GET /v1/cluster/members | leader | members with kind, addresses, match index, lag, last contact |
| POST /v1/cluster/members | leader | add a learner `{id, raft_addr, api_addr, incarnation}`; |
| | | `replace`: a member that lost its data dir takes its id back; |
| | | needs the join token or the joiner's node certificate (below) |
| POST /v1/cluster/members/{id}/promote | leader | learner -> voter once caught up |
| DELETE /v1/cluster/members/{id} | leader | remove a voter or learner |
| POST /v1/cluster/transfer-leader | leader | `{target}` optional: hand leadership over |
| POST /v1/cluster/join | this node | `{target, replace, token}`: a pristine node joins target's |
| | | cluster, showing it ``token`` (else its configured join token) |
| GET /v1/cluster/join | this node | join progress |
| POST /v1/cluster/leave | this node | leave gracefully (transfer first if leading) |
| POST /v1/cluster/snapshot | this node | take a snapshot now |
| GET /v1/cluster/backup | this node | stream a consistent snapshot (`univrs snapshot save`; |
| | | `univrs/api/backup.py`: at or after a read index, one stream per node at a time) |

Every endpoint here is for operators: each needs an ``admin`` token when auth is on
(``univrs.api.auth``; the backup too: it hands out the whole state), except the join
progress (public: a node restarting empty to join has no tokens yet to check one against) and
``POST /v1/cluster/join`` on a node that holds no tokens (a pristine node: it has nothing to
protect, and the cluster it joins checks the caller's admin token, which the join carries).
A request forwarded to the leader carries the caller's ``Authorization`` header, never the
node's own. Bodies are read with the node's limits (413 past ``limits.max_body_bytes``, 400
past ``limits.max_json_depth``).

Who may add a member (``POST /v1/cluster/members``, the step of a join that lets a node in):
with auth on, an ``admin`` token first; and always a caller that shows the cluster's join
token (header ``X-Univrs-Join-Token``, compared in constant time), or whose TLS certificate
(signed by the cluster CA) is the node certificate of the very id it asks to add, or a member
forwarding such a request to the leader (its node certificate shows it is one; it checked the
caller). A plaintext node with no join token configured admits joins only while it listens on
loopback alone (the local dev cluster). Anyone else gets 403 ``permission-denied``, logged, and
nothing changes. Knowing an address is not enough.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from univrs.api import backup
from univrs.api.auth import Caller
from univrs.api.rest import (
    NO_BODY,
    authority_of,
    caller_of,
    error_response,
    json_body,
    json_response,
)
from univrs.config import is_loopback
from univrs.config.model import valid_node_id
from univrs.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    NotLeader,
    PermissionDenied,
    Unavailable,
    UnivrsError,
)
from univrs.net.address import split_host_port
from univrs.net.hello import valid_incarnation
from univrs.net.http import request_json
from univrs.net.tls import current_peer
from univrs.raft.ready import Role
from univrs.runtime import membership as ms

if TYPE_CHECKING:
    from univrs.raft.messages import Membership
    from univrs.runtime.driver import RaftRuntime
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.api")

FORWARDED = "x-univrs-forwarded"
JOIN_TOKEN_HEADER = "x-univrs-join-token"
FORWARD_TIMEOUT = 45.0  # longer than a membership change may wait to commit (30 s)
NO_LEADER = "the cluster has no leader right now (election in progress or no quorum); retry"


def _node(request: Request) -> NodeHandle:
    node: NodeHandle = request.app.state.node
    return node


async def _admin(request: Request, what: str) -> Caller:
    """The caller, if it may run admin endpoint ``what`` (raises 401 / 403 otherwise)."""
    caller = caller_of(request)
    await authority_of(request).authorize_fresh(caller, "admin", what)
    return caller


def _forward_headers(request: Request) -> dict[str, str]:
    """The caller's own credentials, for a request this node makes on its behalf."""
    auth = request.headers.get("authorization")
    return {} if auth is None else {"Authorization": auth}


def client_ssl(node: NodeHandle) -> ssl.SSLContext | None:
    """The context this node dials other nodes' APIs with (None: plaintext)."""
    tls = node.transport.tls
    return tls.client() if tls is not None else None


def _join_refusal(request: Request, node: NodeHandle, joiner: str) -> str | None:
    """Why the caller may not add ``joiner`` to the cluster (None: it may); see the module
    docstring."""
    config = node.config
    peer = current_peer()
    if peer is not None and peer.node_id is not None:
        if peer.node_id == joiner:
            return None  # the joiner itself, with its node certificate
        if request.headers.get(FORWARDED) == peer.node_id:
            members = node.status().membership.members
            if peer.node_id in members:
                return None  # a member forwarding a request it admitted
    shown = request.headers.get(JOIN_TOKEN_HEADER)
    if shown is not None and config.join_token is not None:
        if hmac.compare_digest(shown.encode(), config.join_token.encode()):
            return None
        return "wrong join token"
    if (
        config.tls is None
        and config.join_token is None
        and is_loopback(config.api_addr)
        and is_loopback(config.raft_addr)
    ):
        return None  # the local dev cluster: nothing beyond this machine can ask
    if config.join_token is None and config.tls is None:
        return "this node has no join token configured (join.token): it admits no joiner"
    return "no join token (X-Univrs-Join-Token) and no node certificate of the joining id"


async def _body(request: Request, allowed: set[str]) -> dict[str, Any]:
    doc = await json_body(request)
    if doc is NO_BODY:
        return {}
    if not isinstance(doc, dict):
        raise InvalidArgument("request body must be a JSON object")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidArgument(f"unknown field {unknown[0]!r}", field=unknown[0])
    return doc


def _str_field(doc: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise InvalidArgument(f"{name} is required", field=name)
        return None
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty string", field=name)
    return value


def _addr_field(doc: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = _str_field(doc, name, required=required)
    if value is not None:
        try:
            split_host_port(value)
        except ValueError as exc:
            raise InvalidArgument(f"{name}: {exc}", field=name) from None
    return value


def _bool_field(doc: dict[str, Any], name: str) -> bool:
    value = doc.get(name, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false", field=name)
    return value


def _translate(exc: Exception) -> UnivrsError:
    if isinstance(exc, ms.MembershipBusy):
        return Unavailable(str(exc), retry_after=1.0)
    if isinstance(exc, ms.MembershipError):
        return Conflict(str(exc))
    if isinstance(exc, NotLeader):
        return Unavailable(NO_LEADER, retry_after=1.0)
    if isinstance(exc, UnivrsError) and exc.on_wire():
        return exc
    raise exc


def _handler(
    fn: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except (UnivrsError, ms.MembershipError, NotLeader) as exc:
            return error_response(_translate(exc))

    return wrapped


async def _on_leader(
    request: Request, run: Callable[[NodeHandle], Awaitable[tuple[int, Any]]]
) -> Response:
    """Run ``run`` here if this node leads, else forward the request to the leader once (with
    the caller's token: the leader checks it again)."""
    node = _node(request)
    status = node.status()
    if status.role is Role.LEADER:
        code, doc = await run(node)
        return json_response(doc, code)
    if request.headers.get(FORWARDED):
        raise Unavailable(f"{node.node_id} is not the leader (any more); retry", retry_after=1.0)
    leader = status.leader
    if leader is None:
        raise Unavailable(NO_LEADER, retry_after=1.0)
    addr = status.membership.api_address_of(leader)
    if addr is None:
        raise Unavailable(f"the API address of the leader {leader!r} is unknown", retry_after=1.0)
    ask = {"X-Univrs-Forwarded": node.node_id}
    token = request.headers.get(JOIN_TOKEN_HEADER)
    if token is not None:
        ask[JOIN_TOKEN_HEADER] = token  # checked again by the leader
    try:
        resp = await request_json(
            addr,
            request.method,
            request.url.path,
            raw_body=await _raw_body(request),
            headers={**ask, **_forward_headers(request)},
            timeout=FORWARD_TIMEOUT,
            ssl_context=client_ssl(node),
        )
    except (OSError, ValueError, trio.TooSlowError) as exc:
        raise Unavailable(f"cannot reach the leader {leader!r} at {addr}: {exc}") from None
    headers = (
        {"Retry-After": resp.headers["retry-after"]} if "retry-after" in resp.headers else None
    )
    return json_response(resp.body, resp.status, headers)


async def _raw_body(request: Request) -> bytes:
    """The body to forward: already read and checked by ``_body`` (Starlette caches it), or
    read now with the node's limits."""
    doc = await json_body(request)
    return b"" if doc is NO_BODY else await request.body()


@_handler
async def list_members(request: Request) -> Response:
    await _admin(request, "listing members")

    async def run(node: NodeHandle) -> tuple[int, Any]:
        s = node.status()
        return 200, {"leader": s.leader, "term": s.term, "members": ms.members(node.runtime)}

    return await _on_leader(request, run)


@_handler
async def add_member(request: Request) -> Response:
    await _admin(request, "adding a member")
    doc = await _body(request, {"id", "raft_addr", "api_addr", "incarnation", "replace"})
    node_id = _str_field(doc, "id")
    raft_addr = _addr_field(doc, "raft_addr")
    api_addr = _addr_field(doc, "api_addr", required=False)
    incarnation = _str_field(doc, "incarnation", required=False)
    replace = _bool_field(doc, "replace")
    assert node_id is not None and raft_addr is not None
    # A member the configuration lists must be able to exist: an id no node can be configured
    # with, or an incarnation no hello can name, was committed as a member that can never
    # connect (and a control character in either went into every log line naming it).
    if not valid_node_id(node_id):
        raise InvalidArgument(
            f"id {node_id[:80]!r} must be 1-64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit (raft.node_id's rule)",
            field="id",
        )
    if incarnation is not None and not valid_incarnation(incarnation):
        raise InvalidArgument(
            f"incarnation {incarnation[:80]!r} must be 1-64 letters, digits, '.', '_' or '-'",
            field="incarnation",
        )
    if replace and incarnation is None:
        raise InvalidArgument("a replace needs the new incarnation", field="incarnation")
    refusal = _join_refusal(request, _node(request), node_id)
    if refusal is not None:
        log.warning(
            "refused to add a member",
            extra={"joiner": node_id, "from": _remote(request), "reason": refusal},
        )
        raise PermissionDenied(f"not allowed to add {node_id!r}: {refusal}")

    async def run(node: NodeHandle) -> tuple[int, Any]:
        before = node.status().membership
        m = await ms.add_learner(
            node.runtime, node_id, raft_addr, api_addr, incarnation=incarnation, replace=replace
        )
        return (200 if node_id in before.members else 201), _membership_doc(m)

    return await _on_leader(request, run)


async def _change_member(
    request: Request, doing: str, change: Callable[[RaftRuntime, str], Awaitable[Membership]]
) -> Response:
    """``change`` (promote, remove) the member named in the path, on the leader: an admin's
    request; 404 if the node is not a member."""
    await _admin(request, doing)
    node_id = request.path_params["node_id"]

    async def run(node: NodeHandle) -> tuple[int, Any]:
        if node_id not in node.status().membership.members:
            raise NotFound(f"{node_id!r} is not a member of this cluster")
        return 200, _membership_doc(await change(node.runtime, node_id))

    return await _on_leader(request, run)


@_handler
async def promote_member(request: Request) -> Response:
    return await _change_member(request, "promoting a member", ms.promote)


@_handler
async def remove_member(request: Request) -> Response:
    return await _change_member(request, "removing a member", ms.remove)


@_handler
async def transfer_leader(request: Request) -> Response:
    await _admin(request, "transferring leadership")
    doc = await _body(request, {"target"})
    target = _str_field(doc, "target", required=False)

    async def run(node: NodeHandle) -> tuple[int, Any]:
        return 200, {"leader": await ms.transfer_leader(node.runtime, target)}

    return await _on_leader(request, run)


@_handler
async def join(request: Request) -> Response:
    node = _node(request)
    if node.runtime.sm.tokens_bootstrapped:
        caller = await _admin(request, "joining another cluster")
    else:
        caller = caller_of(request)  # pristine: the target checks the token
    doc = await _body(request, {"target", "replace", "token"})
    target = _addr_field(doc, "target")
    replace = _bool_field(doc, "replace")
    token = _str_field(doc, "token", required=False)
    assert target is not None
    status, body, rejoin = await node.answer_join(
        target, replace=replace, token=token, api_token=caller.token
    )
    response = json_response(body, status)
    if rejoin is not None:
        # Restart only once this answer is sent (the restart closes the API server).
        response.background = BackgroundTask(_rejoin, node, rejoin)
    return response


async def _rejoin(node: NodeHandle, info: object) -> None:
    # Async on purpose: Starlette would run a sync background function in a worker thread.
    node.request_rejoin(info)


async def join_progress(request: Request) -> Response:
    node = _node(request)
    s = node.status()
    state = node.join or {"state": "voter" if node.node_id in s.membership.voters else "none"}
    return json_response({**state, "cluster_id": node.cluster_id, "role": s.role.value}, 200)


@_handler
async def leave(request: Request) -> Response:
    """Leave the cluster: transfer leadership away first if leading, then have the leader
    remove this node."""
    await _admin(request, "leaving the cluster")
    node = _node(request)
    me = node.node_id
    if node.status().role is Role.LEADER and len(node.status().membership.voters) > 1:
        await ms.transfer_leader(node.runtime, None)
    deadline = trio.current_time() + FORWARD_TIMEOUT
    while True:
        s = node.status()
        if me not in s.membership.members:
            return json_response({"left": True, "node": me}, 200)
        addr = s.membership.api_address_of(s.leader) if s.leader else None
        if addr is not None and s.leader != me:
            try:
                resp = await request_json(
                    addr,
                    "DELETE",
                    f"/v1/cluster/members/{me}",
                    headers=_forward_headers(request),
                    timeout=FORWARD_TIMEOUT,
                    ssl_context=client_ssl(node),
                )
                if resp.status == 200:
                    return json_response({"left": True, "node": me}, 200)
                if resp.status not in (503,):
                    return json_response(resp.body, resp.status)
            except (OSError, ValueError, trio.TooSlowError):
                pass
        elif s.role is Role.LEADER:
            # The only voter, or the transfer did not happen: remove ourselves as leader.
            m = await ms.remove(node.runtime, me)
            return json_response({"left": True, "node": me, "voters": sorted(m.voters)}, 200)
        if trio.current_time() > deadline:
            raise Unavailable("could not reach a leader to leave the cluster; retry")
        with trio.move_on_after(0.5):
            await node.runtime.wait_changed()


@_handler
async def snapshot(request: Request) -> Response:
    await _admin(request, "taking a snapshot")
    node = _node(request)
    meta = await node.runtime.take_snapshot()
    if meta is None:
        raise Conflict("nothing has been applied on this node yet: there is nothing to snapshot")
    return json_response({"index": meta.index, "term": meta.term, "node": node.node_id}, 200)


def _remote(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else "unknown"


def _membership_doc(m: Any) -> dict[str, Any]:
    return {"voters": sorted(m.voters), "learners": sorted(m.learners)}


@_handler
async def backup_save(request: Request) -> Response:
    """``GET /v1/cluster/backup`` (``univrs.api.backup``), for admins."""
    await _admin(request, "a backup")
    return await backup.save(request)


def routes() -> list[Route]:
    """The admin routes, for ``build_app``."""
    return [
        Route("/v1/cluster/members", list_members, methods=["GET"]),
        Route("/v1/cluster/members", add_member, methods=["POST"]),
        Route("/v1/cluster/members/{node_id}/promote", promote_member, methods=["POST"]),
        Route("/v1/cluster/members/{node_id}", remove_member, methods=["DELETE"]),
        Route("/v1/cluster/transfer-leader", transfer_leader, methods=["POST"]),
        Route("/v1/cluster/join", join, methods=["POST"]),
        Route("/v1/cluster/join", join_progress, methods=["GET"]),
        Route("/v1/cluster/leave", leave, methods=["POST"]),
        Route("/v1/cluster/snapshot", snapshot, methods=["POST"]),
        Route("/v1/cluster/backup", backup_save, methods=["GET"]),
    ]
