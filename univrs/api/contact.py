"""``LeaderContact``: how long ago this node last heard from its leader, the freshness figure
of a read's ``meta`` (``leader_contact_ms``, univrs/api/store.py ``RaftStateStore.meta``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from univrs.raft.ready import Role, Status

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

__all__ = ["LeaderContact"]


@attrs.define(eq=False)
class LeaderContact:
    """When this node last heard from its leader (for the freshness of local reads).

    Read when asked: the driver notes the time it steps each peer's message
    (``RaftRuntime.last_contact``), and a follower's local state lags the leader by what the
    leader committed since its last message (plus ``behind`` entries not yet applied here).
    (Until round 19 of issue 14 a task sampled the transport's receive counters every 50 ms
    on every node for this: twenty timer wake-ups a second, each a trio sleep, the status and
    the transport's statistics, for a figure only a read's answer and /readyz use.)
    """

    node: NodeHandle

    def ms_since(self, status: Status | None = None) -> int | None:
        """Milliseconds since the leader was last heard (0 on the leader; None if unknown).
        From ``status`` (the view's last built one by default: its role and leader are always
        current), not a status rebuilt with every peer's progress (``node.status()``: about
        10 us at three nodes, once per frame of reads before session 29)."""
        if status is None:
            status = self.node.runtime.view.last_status()
        if status.role is Role.LEADER:
            return 0
        leader = status.leader
        if leader is None or leader == self.node.node_id:
            return None
        heard = self.node.runtime.last_contact(leader)
        if heard is None:
            return None
        return max(0, int((trio.current_time() - heard) * 1000))
