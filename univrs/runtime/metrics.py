"""The node's Prometheus metrics: Raft state read at scrape time, counters, histograms.

Names follow etcd's where one exists: ``univrs_raft_has_leader`` (``etcd_server_has_leader``),
``univrs_raft_is_leader``, ``univrs_raft_role{role=...}`` (1 for the node's role, 0 for the
others), proposals pending and failed, the peer round-trip histogram
(``etcd_network_peer_round_trip_time_seconds``). The full list is in docs/operations.md
"Metrics".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from univrs import __version__
from univrs.metrics import Counter, Histogram, LabelValues, Registry
from univrs.raft.ready import Role, Status

if TYPE_CHECKING:
    from univrs.storage import StorageStatistics

# How late a tick fires: on time (under 1 ms) to an election timeout and beyond.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# Round trips on loopback and a LAN: 100 us to a few seconds.
RTT_BUCKETS = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
)  # fmt: skip


@attrs.define(eq=False)
class NodeMetrics:
    """Every metric a node exports; gauges read ``status()`` (and the storage's statistics,
    the pending proposals, when given) when scraped."""

    status: Callable[[], Status]
    storage: Callable[[], StorageStatistics] | None = None
    # Proposals appended, not yet settled; set once the runtime exists (0 until then).
    pending: Callable[[], int] | None = None
    # Damage found in the stored snapshot, by what the read was for (the store's
    # ``DamageHook.counts``, univrs/storage/snapshot_check.py).
    snapshot_damage: Callable[[], Mapping[str, int]] | None = None
    registry: Registry = attrs.field(factory=Registry)
    proposals: Counter = attrs.field(init=False)
    proposals_failed: Counter = attrs.field(init=False)
    proposals_dropped: Counter = attrs.field(init=False)  # the label sets the runtime counts
    proposals_unknown: Counter = attrs.field(init=False)
    elections: Counter = attrs.field(init=False)
    leader_changes: Counter = attrs.field(init=False)
    fsync_seconds: Histogram = attrs.field(init=False)
    commit_seconds: Histogram = attrs.field(init=False)
    peer_rtt_seconds: Histogram = attrs.field(init=False)
    loop_lag_seconds: Histogram = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        r.build_info(__version__)
        r.process()
        r.gauge("univrs_raft_term", "Current Raft term.", callback=self._one(lambda s: s.term))
        r.gauge(
            "univrs_raft_role",
            "1 for this node's Raft role, 0 for the others.",
            ("role",),
            callback=self._roles,
        )
        r.gauge("univrs_raft_is_leader", "1 on the leader.", callback=self._one(self._is_leader))
        r.gauge(
            "univrs_raft_has_leader",
            "1 when this node knows a leader, 0 otherwise.",
            callback=self._one(lambda s: 1.0 if s.leader is not None else 0.0),
        )
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
            "univrs_raft_snapshot_index",
            "Last log index covered by this node's newest snapshot.",
            callback=self._one(lambda s: s.snapshot_index),
        )
        r.gauge(
            "univrs_raft_first_log_index",
            "First log index still stored (the log before it is compacted into the snapshot).",
            callback=self._one(lambda s: s.first_index),
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
            "univrs_raft_proposals_pending",
            "Proposals appended on this leader and not yet applied or failed.",
            callback=lambda: [((), float(self.pending() if self.pending else 0))],
        )
        r.counter_callback(
            "univrs_raft_refused_messages_total",
            "Messages the core refused since the node started, by reason (term, stranger, "
            "incarnation, snapshot_size, snapshot_data, entry; docs/security.md).",
            lambda: [((k,), float(n)) for k, n in self.status().refused],
            ("reason",),
        )
        self.elections = r.counter("univrs_raft_elections_total", "Elections this node started.")
        self.leader_changes = r.counter(
            "univrs_raft_leader_changes_total", "Times this node saw a new leader."
        )
        self.proposals = r.counter(
            "univrs_raft_proposals_total", "Entries proposed on this node while leader."
        )
        self.proposals_failed = r.counter(
            "univrs_raft_proposals_failed_total",
            "Proposals that ended without applying, by outcome: dropped (certainly not "
            "applied) or unknown (a leader change or a snapshot left it unknown).",
            ("outcome",),
        )
        # Both label sets exist from the start, so rate() sees 0.
        self.proposals_dropped = self.proposals_failed.labels("dropped")
        self.proposals_unknown = self.proposals_failed.labels("unknown")
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
            r.counter_callback(
                "univrs_storage_syncs_total",
                "Synced LMDB write transactions (one fsync each) since the store opened.",
                lambda: [((), float(storage().syncs))],
            )
        if self.snapshot_damage is not None:
            damage = self.snapshot_damage
            r.counter_callback(
                "univrs_snapshot_damage_total",
                "Reads of the stored snapshot that found it damaged (a checksum mismatch, a "
                "short or missing file or chunk, an I/O error), by what the read was for: "
                "stream (to a follower), scrub, start (a restore at start), backup.",
                lambda: [((k,), float(n)) for k, n in damage().items()],
                ("found_by",),
            )
        self.fsync_seconds = r.histogram(
            "univrs_storage_fsync_seconds", "Duration of one synced log write (group commit)."
        )
        self.commit_seconds = r.histogram(
            "univrs_raft_commit_seconds", "From proposal to applied on the proposing leader."
        )
        self.loop_lag_seconds = r.histogram(
            "univrs_event_loop_lag_seconds",
            "How late each tick of the Raft clock fired: the event loop stalled (a long task "
            "step, a garbage collection) or the process waited for a CPU (univrs/runtime/"
            "ticks.py).",
            LAG_BUCKETS,
        )
        self.peer_rtt_seconds = r.histogram(
            "univrs_network_peer_round_trip_seconds",
            "Round trip of a websocket ping to a peer over its raft link.",
            RTT_BUCKETS,
            ("peer",),
        )

    @staticmethod
    def _is_leader(s: Status) -> float:
        return 1.0 if s.role is Role.LEADER else 0.0

    def _one(
        self, read: Callable[[Status], float]
    ) -> Callable[[], Iterable[tuple[LabelValues, float]]]:
        return lambda: [((), float(read(self.status())))]

    def _roles(self) -> Iterable[tuple[LabelValues, float]]:
        role = self.status().role
        return [((r.value,), 1.0 if r is role else 0.0) for r in Role]

    def _lags(self) -> Iterable[tuple[LabelValues, float]]:
        s = self.status()
        return [((p.id,), float(max(0, s.last_index - p.match))) for p in s.peers]

    def observe_peer_rtt(self, peer: str, seconds: float) -> None:
        """A ping's round trip to ``peer`` (the transport calls it)."""
        self.peer_rtt_seconds.observe(seconds, peer)

    def render(self) -> str:
        return self.registry.render()
