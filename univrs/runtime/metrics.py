"""The node's Prometheus metrics: Raft state gauges read at scrape time, counters, histograms."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs

from univrs.metrics import Counter, Histogram, LabelValues, Registry
from univrs.raft.ready import Role, Status

if TYPE_CHECKING:
    from univrs.storage import StorageStatistics

_ROLE_CODES = {
    Role.FOLLOWER: 0,
    Role.PRE_CANDIDATE: 1,
    Role.CANDIDATE: 2,
    Role.LEADER: 3,
    Role.LEARNER: 4,
}


@attrs.define(eq=False)
class NodeMetrics:
    """Every metric a node exports; gauges read ``status()`` (and the storage's statistics,
    when given) when scraped."""

    status: Callable[[], Status]
    storage: Callable[[], StorageStatistics] | None = None
    registry: Registry = attrs.field(factory=Registry)
    proposals: Counter = attrs.field(init=False)
    elections: Counter = attrs.field(init=False)
    leader_changes: Counter = attrs.field(init=False)
    fsync_seconds: Histogram = attrs.field(init=False)
    commit_seconds: Histogram = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        r.gauge("univrs_raft_term", "Current Raft term.", callback=self._one(lambda s: s.term))
        r.gauge(
            "univrs_raft_role",
            "Role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader, 4 learner.",
            callback=self._one(lambda s: _ROLE_CODES[s.role]),
        )
        r.gauge("univrs_raft_is_leader", "1 on the leader.", callback=self._one(self._is_leader))
        r.gauge("univrs_raft_commit_index", "Commit index.", callback=self._one(lambda s: s.commit))
        r.gauge(
            "univrs_raft_applied_index", "Applied index.", callback=self._one(lambda s: s.applied)
        )
        r.gauge(
            "univrs_raft_last_log_index",
            "Last log index.",
            callback=self._one(lambda s: s.last_index),
        )
        r.gauge(
            "univrs_raft_peer_match_index",
            "Leader's view: the peer's match index.",
            ("peer",),
            callback=lambda: [((p.id,), float(p.match)) for p in self.status().peers],
        )
        r.gauge(
            "univrs_raft_peer_lag_entries",
            "Leader's view: entries the peer is behind the leader's last index.",
            ("peer",),
            callback=self._lags,
        )
        r.gauge(
            "univrs_raft_refused_messages",
            "Messages the core refused since the node started, by reason (term, stranger, "
            "incarnation, snapshot_size, snapshot_data, entry; docs/security.md).",
            ("reason",),
            callback=lambda: [((k,), float(n)) for k, n in self.status().refused],
        )
        self.elections = r.counter("univrs_raft_elections_total", "Elections this node started.")
        self.leader_changes = r.counter(
            "univrs_raft_leader_changes_total", "Times this node saw a new leader."
        )
        self.proposals = r.counter(
            "univrs_raft_proposals_total", "Entries proposed on this node while leader."
        )
        if self.storage is not None:
            storage = self.storage
            r.gauge(
                "univrs_storage_db_bytes",
                "Size of the LMDB data file on disk (it never shrinks; see univrs defrag).",
                callback=lambda: [((), float(storage().db_bytes))],
            )
            r.gauge(
                "univrs_storage_db_in_use_bytes",
                "Bytes of the LMDB data file its databases use; the rest is free pages.",
                callback=lambda: [((), float(storage().db_in_use_bytes))],
            )
        self.fsync_seconds = r.histogram(
            "univrs_storage_fsync_seconds", "Duration of one synced log write (group commit)."
        )
        self.commit_seconds = r.histogram(
            "univrs_raft_commit_seconds", "From proposal to applied on the proposing leader."
        )

    @staticmethod
    def _is_leader(s: Status) -> float:
        return 1.0 if s.role is Role.LEADER else 0.0

    def _one(
        self, read: Callable[[Status], float]
    ) -> Callable[[], Iterable[tuple[LabelValues, float]]]:
        return lambda: [((), float(read(self.status())))]

    def _lags(self) -> Iterable[tuple[LabelValues, float]]:
        s = self.status()
        return [((p.id,), float(max(0, s.last_index - p.match))) for p in s.peers]

    def render(self) -> str:
        return self.registry.render()
