"""Health endpoints in etcd's sense: ``/livez`` (the process serves) and ``/readyz`` (this node
can serve the cluster's state now), plus the older ``/v1/health``.

``/readyz`` runs every check and answers 200 ``{"status": "ready", ...}`` when all pass, else
503 ``{"status": "not-ready", "reason": <the first failure>, "checks": {...}}``; each check is
``"ok"`` or a short reason:

- ``leader``: the node knows a leader (and has not been removed from the cluster);
- ``leader_contact``: a follower heard from that leader within ``leader_contact_s`` (twice the
  longest election timeout: past it, a healthy follower would have started an election);
- ``caught_up``: applied index within ``MAX_APPLY_LAG`` entries of the leader's commit index
  (asked from the leader's ``/v1/node/status`` with a short deadline; a follower that cannot
  ask uses its own commit index, which the leader-contact check keeps honest);
- ``storage``: the data dir is writable, its file system has ``MIN_FREE_BYTES`` free, and no
  log write has been outstanding longer than ``STORAGE_STALL_S`` (a stuck disk).

Who may call them: anyone who reaches the API (load balancers, orchestrators, probes). They
read only public views, take no input beyond the path, and a hostile caller gets the same
small JSON answer; ``/readyz`` makes at most one bounded request to the leader.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs.net.http import get_json
from univrs.raft.ready import Role

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

MAX_APPLY_LAG = 1000  # entries: a healthy follower under load is tens behind, not thousands
MIN_FREE_BYTES = 16 * 1024 * 1024
STORAGE_STALL_S = 10.0
LEADER_STATUS_TIMEOUT = 1.0


@attrs.define(eq=False)
class StorageWatch:
    """Notices a stuck disk: since when the log has had entries not yet durable here.

    ``sample`` (called periodically) compares the persisted index with the last index; a node
    whose writes complete sees ``persisted`` catch up within one fsync."""

    node: NodeHandle
    _since: float | None = None
    _persisted: int = -1

    def sample(self) -> None:
        s = self.node.status()
        now = trio.current_time()
        if s.persisted >= s.last_index:
            self._since = None
        elif self._since is None or s.persisted != self._persisted:
            self._since = now  # behind, but moving: restart the clock
        self._persisted = s.persisted

    async def run(self, every: float = 0.5) -> None:
        """Sample every ``every`` seconds until cancelled (for a stall of ``STORAGE_STALL_S``,
        10 s: every 0.5 s, not 0.1, since round 19 of issue 14: each sample is a timer
        wake-up of the event loop, 150-380 us of CPU on a shared two-core machine)."""
        while True:
            self.sample()
            await trio.sleep(every)

    def stalled_for(self) -> float:
        """Seconds the same un-persisted tail has waited (0 when up to date or moving)."""
        return 0.0 if self._since is None else trio.current_time() - self._since


def liveness(node: NodeHandle) -> dict[str, Any]:
    """The ``/livez`` body: the process runs its event loop and answers."""
    return {"status": "live", "id": node.node_id}


async def readiness(
    node: NodeHandle, contact_ms: int | None, storage_stall_s: float
) -> tuple[bool, dict[str, Any]]:
    """(ready, the ``/readyz`` body): see the module docstring."""
    s = node.status()
    checks: dict[str, str] = {}
    if getattr(node, "removed", False):
        checks["leader"] = "removed from the cluster"
    elif s.leader is None:
        checks["leader"] = "no leader"
    else:
        checks["leader"] = "ok"

    limit_ms = 2 * node.config.election_timeout_max_ms
    if s.leader is None or s.role is Role.LEADER:
        checks["leader_contact"] = "ok" if s.leader is not None else "no leader"
    elif contact_ms is None:
        checks["leader_contact"] = f"not heard from leader {s.leader} yet"
    elif contact_ms > limit_ms:
        checks["leader_contact"] = f"last heard from leader {s.leader} {contact_ms} ms ago"
    else:
        checks["leader_contact"] = "ok"

    leader_commit = s.commit
    if s.leader is not None and s.role is not Role.LEADER:
        leader_commit = max(leader_commit, await _leader_commit(node, s.leader))
    behind = max(0, leader_commit - s.applied)
    if behind > MAX_APPLY_LAG:
        checks["caught_up"] = f"applied {s.applied}, {behind} entries behind commit {leader_commit}"
    else:
        checks["caught_up"] = "ok"

    checks["storage"] = _storage_check(node, storage_stall_s)
    failures = [f"{name}: {why}" for name, why in checks.items() if why != "ok"]
    body: dict[str, Any] = {
        "status": "ready" if not failures else "not-ready",
        "id": node.node_id,
        "role": s.role.value,
        "leader": s.leader,
        "term": s.term,
        "applied_index": s.applied,
        "leader_commit_index": leader_commit,
        "checks": checks,
    }
    if failures:
        body["reason"] = failures[0]
    return not failures, body


async def _leader_commit(node: NodeHandle, leader: str) -> int:
    """The leader's commit index from its API (0 when it cannot be asked in time)."""
    addr = node.status().membership.api_address_of(leader)
    if addr is None:
        return 0
    try:
        doc = await get_json(addr, "/v1/node/status", timeout=LEADER_STATUS_TIMEOUT)
    except (OSError, ValueError, trio.TooSlowError):
        return 0
    value = doc.get("commit_index") if isinstance(doc, dict) else None
    return value if isinstance(value, int) else 0


def _storage_check(node: NodeHandle, stall_s: float) -> str:
    data_dir = node.config.data_dir
    if not os.access(data_dir, os.W_OK):
        return f"data dir {data_dir} is not writable"
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError as exc:
        return f"cannot stat data dir {data_dir}: {exc.strerror or exc}"
    if free < MIN_FREE_BYTES:
        return f"{free} bytes free on the data dir's file system"
    if stall_s > STORAGE_STALL_S:
        return f"a log write has been outstanding for {stall_s:.1f} s"
    return "ok"
