"""Joining a running cluster: ask to be added as a learner, catch up, get promoted.

The joining node drives the whole procedure against any member's API (the member forwards each
request to the leader), so progress is visible from the joining side:

1. ``prepare``: read the cluster's id and members; refuse an id already taken by another node
   (a learner with our own raft address is our own interrupted join: resume it).
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

from univrs.api.fetch import request_json
from univrs.config import NodeConfig
from univrs.runtime.membership import DEFAULT_MAX_LAG

if TYPE_CHECKING:
    from univrs.runtime.node import Node

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


def _refused(message: str) -> Exception:
    from univrs.runtime.node import JoinRefused

    return JoinRefused(message)


async def prepare(config: NodeConfig, target: str) -> JoinInfo:
    """Check that ``config``'s node may join the cluster at ``target``; raise JoinRefused."""
    try:
        resp = await request_json(target, "GET", "/v1/cluster/status", timeout=REQUEST_TIMEOUT)
    except (OSError, ValueError, trio.TooSlowError) as exc:
        reason = str(exc) or type(exc).__name__
        raise _refused(f"cannot reach a univrs API at {target}: {reason}") from None
    doc = resp.body if isinstance(resp.body, dict) else {}
    cluster_id = doc.get("cluster_id")
    if resp.status != 200 or not isinstance(cluster_id, str):
        raise _refused(f"{target} did not describe its cluster (HTTP {resp.status})")
    members = doc.get("members", [])
    for m in members:
        if m.get("id") == config.node_id:
            own = m.get("raft_addr") == config.raft_addr and not m.get("voter")
            if not own:
                raise _refused(
                    f"node id {config.node_id!r} is already a member of cluster {cluster_id} "
                    f"(at {m.get('raft_addr')}); choose another id or remove that member first"
                )
    return JoinInfo(
        target=target,
        cluster_id=cluster_id,
        members=tuple(str(m.get("id")) for m in members),
        addresses=tuple(
            (str(m["id"]), m["raft_addr"])
            for m in members
            if isinstance(m.get("raft_addr"), str) and m.get("id") != config.node_id
        ),
    )


async def _call(target: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await request_json(target, method, path, body=body, timeout=REQUEST_TIMEOUT)
    return resp.status, resp.body


def _error_of(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message", err))
        if err:
            return str(err)
    return str(body)


async def run_join(node: Node, info: JoinInfo) -> None:
    """Drive the join to the end, recording progress in ``node.join``; never raises."""
    me = node.config
    node.join = {"state": "adding", "target": info.target, "cluster_id": info.cluster_id}
    log.info("joining cluster", extra={"cluster": info.cluster_id, "via": info.target})
    body = {"id": me.node_id, "raft_addr": me.raft_addr, "api_addr": me.api_addr}
    try:
        with trio.fail_after(JOIN_TIMEOUT):
            while True:  # 1. learner
                try:
                    status, doc = await _call(info.target, "POST", "/v1/cluster/members", body)
                except (OSError, ValueError, trio.TooSlowError) as exc:
                    status, doc = 0, str(exc)
                if status in (200, 201):
                    break
                if status in (400, 404, 409, 422):
                    raise _refused(_error_of(doc))
                node.join.update(detail=f"retrying: {_error_of(doc)}")
                await trio.sleep(POLL * 4)
            log.info("added as a learner", extra={"cluster": info.cluster_id})
            node.join = {**node.join, "state": "catching-up", "detail": None}
            while True:  # 2. catch up, 3. promote
                lag = await _own_lag(info.target, me.node_id)
                node.join["entries_remaining"] = lag
                if lag is not None and lag <= DEFAULT_MAX_LAG:
                    node.join["state"] = "promoting"
                    try:
                        status, doc = await _call(
                            info.target, "POST", f"/v1/cluster/members/{me.node_id}/promote"
                        )
                    except (OSError, ValueError, trio.TooSlowError) as exc:
                        status, doc = 0, str(exc)
                    if status == 200:
                        break
                    if status in (400, 404, 422):
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


async def _own_lag(target: str, node_id: str) -> int | None:
    try:
        status, doc = await _call(target, "GET", "/v1/cluster/members")
    except (OSError, ValueError, trio.TooSlowError):
        return None
    if status != 200 or not isinstance(doc, dict):
        return None
    for row in doc.get("members", []):
        if row.get("id") == node_id:
            lag = row.get("lag")
            return lag if isinstance(lag, int) else None
    return None
