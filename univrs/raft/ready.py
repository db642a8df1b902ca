"""The values that cross the boundary of the sans-IO core: its config, start state and output.

Ordering contract of a ``Ready`` (the runtime and the simulator must both obey it):

0. ``snapshot`` (a verified snapshot received from the leader) comes first: store it durably
   (if the log holds an entry at ``meta.index`` with ``meta.term`` keep the entries after it,
   otherwise drop the whole log: paper Figure 13, steps 6-7) and restore the state machine
   from it before applying this Ready's ``committed`` entries (all of them are after it).
   It is part of step 1's durable write as far as ordering goes: writes stay FIFO, and
   ``messages_after_persist`` wait for it. Once stored, report
   ``RaftNode.persisted(meta.index, meta.term)``; once restored, ``applied(meta.index)``.
1. ``truncate_from``, ``entries`` and ``hard_state`` are written in one storage transaction
   (delete entries with index >= truncate_from, append entries, store hard state, its pins
   included), and that transaction is synced to disk.
2. ``messages`` may be sent at any time, even before step 1 completes: they never claim
   anything about this node's durable state. (A leader's AppendEntries to followers belong here:
   the leader replicates before its own write is durable, and counts itself only later.)
3. ``messages_after_persist`` must be sent only after step 1 is durable: vote grants and
   append acknowledgements depend on the term, vote and entries they follow.
4. Once step 1 is durable the runtime reports it with ``RaftNode.persisted(index, term)`` for
   the last entry written (the hard state needs no report).
5. ``committed`` entries are applied to the state machine in order; each is committed and
   durable locally. After applying, the runtime reports ``RaftNode.applied(index)``.
6. ``reads`` are ReadIndex requests now safe to serve: leadership was confirmed by a quorum
   after the request arrived, and applied >= the read index. ``dropped_reads`` could not be
   confirmed (leadership lost, leader unknown) and should fail with a retryable error.
"""

from __future__ import annotations

import enum

import attrs

from univrs.raft.messages import Entry, HardState, Membership, Message, NodeId, SnapshotMeta


class Role(enum.Enum):
    """The role of a node in its current term."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    LEARNER = "learner"


@attrs.frozen(kw_only=True)
class RaftConfig:
    """Tuning of the core, in ticks (the runtime chooses the tick length) and sizes.

    The election timeout is drawn uniformly from [election_ticks_min, election_ticks_max] each
    time it is reset, from the RNG given to the node. Invariant:
    0 < heartbeat_ticks < election_ticks_min <= election_ticks_max.
    """

    heartbeat_ticks: int = 1
    election_ticks_min: int = 10
    election_ticks_max: int = 20
    max_entries_per_msg: int = 512
    max_bytes_per_msg: int = 1 << 20
    max_inflight: int = 64
    # InstallSnapshot streaming: bytes of snapshot data per chunk, chunks in flight per peer.
    snapshot_chunk_bytes: int = 1 << 20
    snapshot_window: int = 4
    # The largest snapshot a follower accepts (InstallSnapshot.total_size). A partial snapshot
    # is held in memory, one at a time: this bounds that memory and what storage is asked to
    # write. A larger announcement is refused and counted, and the partial one is dropped.
    max_snapshot_bytes: int = 1 << 30
    pre_vote: bool = True
    check_quorum: bool = True
    # Take leader traffic from a sender no configuration of ours lists while we follow no live
    # leader (a member that lagged behind the change adding its current leader catches up from
    # it; univrs/raft/senders.py). Safe only where the transport authenticates node ids (TLS):
    # a node without TLS turns it off, so a made-up id cannot lead it in a leaderless window.
    unlisted_leaders: bool = True
    # Lease reads (read_only.py, "Leases"; off by default): a leader answers ``read_index(ctx,
    # lease=True)`` at its commit index, without a heartbeat round, while a quorum of voters
    # acknowledged a heartbeat it sent less than ``lease_ticks`` ticks ago. Safe only if, over
    # ``election_ticks_min`` ticks, no two nodes' clocks drift apart by more than
    # ``lease_drift_ticks`` ticks (and a tick is never skipped: a paused or starved runtime
    # must catch its ticks up before it serves a lease read). Needs ``check_quorum``.
    read_lease: bool = False
    lease_drift_ticks: int = 1
    # How followers learn a new commit index (commit_notice.py). 0: the leader tells
    # each follower that holds entries it cannot know are committed in a commit-only Heartbeat
    # at once, at every commit (and the follower answers it). N > 0 (what nodes run:
    # ``NodeConfig.raft_config``): a commit whose news covers at most N bytes of entries waits
    # for the next AppendEntries (they all carry the commit index) or the next tick; larger
    # ones, and those a follower waits for to serve a read, are told at once. The core's
    # transcripts and the simulator's pinned seeds were written for 0. With N > 0 a commit
    # notice is not answered (``messages.COMMIT_NOTICE_CTX``); with 0 it is, as before.
    lazy_commit_notice_bytes: int = 0
    # Skip a periodic heartbeat to a follower that an AppendEntries reached, and that answered,
    # within the last heartbeat interval (heartbeat.py ``_heartbeat_may_wait``; issue 14,
    # docs/performance.md "Round 15 (s15-beat)"): True is what nodes run. False, the core's
    # default, sends every periodic heartbeat: the core's transcripts and the simulator's
    # pinned seeds were found with those heartbeats and their schedules depend on every message.
    # Times are whole ticks ("within" means at most heartbeat_ticks - 1 ticks ago, so the
    # follower still hears from us at least every heartbeat_ticks): with heartbeat_ticks 1
    # nothing is skipped.
    skip_busy_heartbeats: bool = False
    # Send a ReadIndex round's heartbeats to as many voters as a quorum needs besides the leader
    # (those that answered the newest rounds first), widening to every voter a tick later if it
    # is not confirmed by then (read_only.py, "Narrow rounds"; docs/performance.md, "Round 16
    # (s16-reads)"). True is what nodes run; False, the core's default, broadcasts every round
    # (the core's transcripts and the simulator's pinned seeds).
    narrow_read_rounds: bool = False

    @property
    def lease_ticks(self) -> int:
        """How long a lease lasts, from the send of the heartbeat a quorum acknowledged.

        A follower refuses votes for ``election_ticks_min`` of its ticks after it last heard from
        the leader; its timer may tick right after the heartbeat arrives, so the refusal lasts
        at least ``election_ticks_min - 1`` whole ticks of its clock: less the drift bound.
        """
        return self.election_ticks_min - 1 - self.lease_drift_ticks

    def __attrs_post_init__(self) -> None:
        if not 0 < self.heartbeat_ticks < self.election_ticks_min <= self.election_ticks_max:
            raise ValueError(
                "need 0 < heartbeat_ticks < election_ticks_min <= election_ticks_max, got "
                f"{self.heartbeat_ticks}, {self.election_ticks_min}, {self.election_ticks_max}"
            )
        if self.max_entries_per_msg < 1 or self.max_bytes_per_msg < 1 or self.max_inflight < 1:
            raise ValueError("message and inflight limits must be positive")
        if self.snapshot_chunk_bytes < 1 or self.snapshot_window < 1:
            raise ValueError("snapshot chunk size and window must be positive")
        if self.max_snapshot_bytes < 1:
            raise ValueError("max_snapshot_bytes must be positive")
        if self.lazy_commit_notice_bytes < 0:
            raise ValueError("lazy_commit_notice_bytes must be >= 0")
        if self.lease_drift_ticks < 0:
            raise ValueError(f"lease_drift_ticks must be >= 0, got {self.lease_drift_ticks}")
        if self.read_lease:
            if not self.check_quorum:
                raise ValueError(
                    "read_lease needs check_quorum: without it followers grant votes while a "
                    "leader still holds its lease"
                )
            if self.lease_ticks < 1:
                raise ValueError(
                    f"read_lease: a drift bound of {self.lease_drift_ticks} ticks leaves no lease "
                    f"(election_ticks_min {self.election_ticks_min} - 1 - drift must be >= 1)"
                )


@attrs.frozen(kw_only=True)
class InitialState:
    """What a node starts from: its durable state as read back from storage.

    ``entries`` are the log after the snapshot (contiguous, first index = snapshot index + 1).
    ``membership`` is the configuration to use when neither the log nor the snapshot holds one
    (a node waiting to be joined starts with an empty membership).
    ``applied`` is what the state machine already reflects (the snapshot index on restart).
    """

    hard_state: HardState = HardState()
    entries: tuple[Entry, ...] = ()
    snapshot: SnapshotMeta | None = None
    membership: Membership = Membership(voters=frozenset())
    applied: int = 0


@attrs.frozen(kw_only=True)
class ReadState:
    """A linearizable read that may now be served: ``applied >= index`` already holds."""

    ctx: int
    index: int


@attrs.frozen(kw_only=True)
class SnapshotInstall:
    """A complete, verified snapshot received from the leader, to install on this follower.

    The runtime must, before acting on anything else in the same Ready: store it durably
    (keeping the log after ``meta.index`` only if the log holds ``(meta.index, meta.term)``,
    otherwise dropping it), restore the state machine from ``data``, then report
    ``persisted(meta.index, meta.term)`` and ``applied(meta.index)``.
    """

    meta: SnapshotMeta
    data: bytes


@attrs.frozen(kw_only=True)
class SoftState:
    """Volatile state the runtime reports and logs when it changes."""

    role: Role
    leader: NodeId | None
    term: int


@attrs.frozen(kw_only=True)
class Ready:
    """One batch of work for the runtime; see the module docstring for the ordering contract."""

    hard_state: HardState | None = None
    truncate_from: int | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    messages_after_persist: tuple[Message, ...] = ()
    committed: tuple[Entry, ...] = ()
    reads: tuple[ReadState, ...] = ()
    dropped_reads: tuple[int, ...] = ()
    soft_state: SoftState | None = None
    snapshot: SnapshotInstall | None = None

    def is_empty(self) -> bool:
        return not (
            self.hard_state is not None
            or self.truncate_from is not None
            or self.entries
            or self.messages
            or self.messages_after_persist
            or self.committed
            or self.reads
            or self.dropped_reads
            or self.soft_state is not None
            or self.snapshot is not None
        )


@attrs.frozen(kw_only=True)
class PeerStatus:
    """The leader's view of one follower's replication progress."""

    id: NodeId
    match: int
    next: int
    state: str  # "probe" | "replicate" | "snapshot"
    inflight: int  # unacknowledged appends (in "snapshot" state: snapshot chunks)
    recent_active: bool
    voter: bool
    # While a snapshot is streamed to it ("snapshot" state): bytes it confirmed, and the total.
    snapshot_acked: int = 0
    snapshot_size: int = 0


@attrs.frozen(kw_only=True)
class Status:
    """A read-only view of a node, for the runtime, metrics, tests and the simulator."""

    id: NodeId
    role: Role
    term: int
    vote: NodeId | None
    leader: NodeId | None
    commit: int
    applied: int
    persisted: int
    last_index: int
    last_term: int
    first_index: int
    membership: Membership
    peers: tuple[PeerStatus, ...] = ()
    snapshot_index: int = 0  # last index covered by the newest snapshot this node knows
    refused_messages: int = 0  # messages refused, all reasons together (sum of ``refused``)
    # Messages refused, by reason (univrs/raft/senders.py REFUSED_*), sorted: a term above
    # MAX_TERM, a sender that is not a member, a snapshot too large or not restorable.
    refused: tuple[tuple[str, int], ...] = ()
    config_index: int = 0  # log index of ``membership`` (0: the initial configuration)
    lease: bool = False  # leader only: it holds a read lease now (RaftConfig.read_lease)
    # Members the configuration binds to no incarnation yet, held to the incarnation this
    # node first took a message from under their id (univrs/raft/gate.py ``_maybe_pin``):
    # durable, ``HardState.pins``, loaded back at a restart.
    pinned: tuple[tuple[NodeId, str], ...] = ()
