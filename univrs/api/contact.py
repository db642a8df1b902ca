"""``LeaderContact``: how long ago this node last heard from its leader, the freshness figure
of a read's ``meta`` (``leader_contact_ms``, univrs/api/store.py ``RaftStateStore.meta``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from univrs.raft.ready import Role

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

__all__ = ["LeaderContact"]


@attrs.define(eq=False)
class LeaderContact:
    """When this node last heard from its leader (for the freshness of local reads).

    ``run`` samples the transport's per-peer receive counters every ``every`` seconds and
    notes when the leader's counter last moved; a follower's local state lags the leader by
    what the leader committed since then (plus ``behind`` entries not yet applied here).
    """

    node: NodeHandle
    every: float = 0.05
    _leader: str | None = None
    _count: int = -1
    _heard_at: float | None = None

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(self.every)

    def sample(self) -> None:
        leader = self.node.status().leader
        count = -1
        if leader is not None and leader != self.node.node_id:
            try:
                count = self.node.transport.statistics().peer(leader).messages_received
            except KeyError:
                count = -1
        if leader != self._leader:
            self._leader, self._count, self._heard_at = leader, count, None
        elif count != self._count:
            self._count, self._heard_at = count, trio.current_time()

    def ms_since(self) -> int | None:
        """Milliseconds since the leader was last heard (0 on the leader; None if unknown)."""
        status = self.node.status()
        if status.role is Role.LEADER:
            return 0
        if self._heard_at is None or status.leader != self._leader:
            return None
        return int((trio.current_time() - self._heard_at) * 1000)
