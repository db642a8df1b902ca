"""The state every RaftNode holds, and the small helpers both its halves use.

``RaftNode`` (node.py: roles, the public API) combines ``ElectionMixin`` (election.py),
``FollowerMixin`` (follower.py: AppendEntries receiver) and ``SnapshotMixin`` (compaction.py:
snapshots, compaction, InstallSnapshot streaming), which extends ``LeaderMixin`` (leader.py:
replication, commit, heartbeats, ReadIndex confirmation); all of them inherit this class. The
fields are declared here once, with their invariants beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from univrs.raft.log import RaftLog
from univrs.raft.membership import ConfigHistory
from univrs.raft.messages import (
    Entry,
    HardState,
    Membership,
    Message,
    NodeId,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
)
from univrs.raft.progress import Progress
from univrs.raft.read_only import ApplyWait, ForwardedReads, LeaderReads
from univrs.raft.ready import RaftConfig, ReadState, Role, SnapshotInstall, SoftState
from univrs.raft.rng import Rng
from univrs.raft.snapshot import Snapshot, SnapshotReceiver

SnapshotCheck = Callable[[SnapshotMeta, bytes], "str | None"]
"""Decides whether a received snapshot can be restored: None if so, else the reason why not."""


@attrs.define(eq=False, init=False, repr=False)
class NodeBase:
    """Fields of a Raft node (set by RaftNode.__init__) and shared helpers."""

    id: NodeId
    incarnation: str | None  # of this node's data dir; None: not known (never checked)
    # Can the state machine restore this snapshot? None if yes, else why not (a complete,
    # checksum-verified snapshot from the leader is refused on a reason). None: no check.
    snapshot_check: SnapshotCheck | None
    config: RaftConfig
    _rng: Rng
    _log: RaftLog
    _configs: ConfigHistory  # configuration in effect = latest CONFIG entry appended
    # Persistent state (paper Figure 2); HardState carries these plus commit.
    _term: int
    _vote: NodeId | None  # whom we voted for in _term
    # Invariants: _handed <= min(_commit, _persisted), or = the snapshot index right after an
    # install whose write is still in flight; _applied <= _handed;
    # _commit <= _log.last_index; _persisted <= _log.stable_limit.
    _commit: int
    _persisted: int  # last index known durable (reported by persisted())
    _handed: int  # last committed index handed out in Ready.committed
    _applied: int  # last index the state machine reported applied
    _role: Role
    _leader: NodeId | None  # the leader of _term as far as we know
    # Timers, in ticks.
    _now: int
    _election_elapsed: int  # ticks since a timer reset (leader: since the last CheckQuorum)
    _randomized_timeout: int  # drawn from [election_ticks_min, election_ticks_max]
    _heartbeat_elapsed: int
    _transfer_elapsed: int
    _transferee: NodeId | None  # leader only: target of a leader transfer in progress
    _votes: dict[NodeId, bool]  # (pre-)candidate only: answers received
    _progress: dict[NodeId, Progress]  # leader only: every member but itself
    # Snapshots. Invariant: _log.snapshot_index <= _snapshot_index (the log is compacted only
    # up to a snapshot), and _snapshot.meta.index == _snapshot_index once data is known.
    _snapshot: Snapshot | None  # the newest snapshot's data (taken, installed or loaded)
    _snapshot_index: int  # the newest snapshot's index (0: none)
    _receiving: SnapshotReceiver | None  # follower: a snapshot being streamed to us
    _out_snapshot: SnapshotInstall | None  # a verified snapshot for the next Ready
    _leader_reads: LeaderReads
    # Messages refused, by reason (univrs/raft/senders.py: a term above MAX_TERM, a sender
    # that is not a member, a snapshot too large or not restorable). Never acted on.
    _refused: dict[str, int]
    # The leader whose messages we took last and the incarnation they were attested with
    # (univrs/raft/senders.py holds the live leader to it); (None, None) at first.
    _leader_incarnation: tuple[NodeId | None, str | None]
    _forwarded: ForwardedReads
    _next_read_id: int  # the wire id of the next forwarded read (random base, see __init__)
    _apply_wait: ApplyWait
    # Output accumulated until ready().
    _msgs: list[Message]
    _msgs_after: list[Message]
    _out_reads: list[ReadState]
    _out_dropped: list[int]
    _last_hs: HardState  # the hard state last handed out (or loaded)
    # The newest term whose hard state the runtime reported durable (persisted_hard_state) or
    # that was loaded. Invariant: _durable_term <= _term. Messages of a later term are held
    # back into messages_after_persist.
    _durable_term: int
    _last_soft: SoftState

    # ---- hooks: output queues (mutants override these) ---------------------------------------

    def _send(self, msg: Message) -> None:
        """Queue a message that claims nothing about durable state (Ready.messages)."""
        self._msgs.append(msg)

    def _send_after_persist(self, msg: Message) -> None:
        """Queue a message to send only once this Ready's writes are durable (acks, votes)."""
        self._msgs_after.append(msg)

    def _read_wire_id(self, ctx: int) -> int:
        """The id a forwarded read carries on the wire: our own, never the caller's ``ctx``."""
        wire = self._next_read_id
        self._next_read_id = wire + 1 if wire < (1 << 63) else 1
        return wire

    def _hold_until_term_durable(self, msg: Message) -> bool:
        """Must ``msg`` wait until the hard state of its term is durable?

        Every message claims its term, except pre-vote traffic, whose term is the one the
        pre-candidate *would* campaign in and which changes nobody's state (dissertation 9.6).
        A leader that sent at a term it could forget in a crash could lead that term again
        with different entries at the same (index, term) and break Log Matching.
        """
        if msg.term <= self._durable_term:
            return False
        return not (isinstance(msg, RequestVote | RequestVoteResponse) and msg.pre_vote)

    # ---- implemented by the subclasses -------------------------------------------------------

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        raise NotImplementedError

    def _on_config_change(self, before: Membership) -> None:
        raise NotImplementedError

    def _become_leader(self) -> None:
        raise NotImplementedError

    def _follow(self, leader: NodeId) -> bool:
        raise NotImplementedError

    def _start_snapshot(self, peer: NodeId, pr: Progress) -> None:
        raise NotImplementedError

    def _promotable(self) -> bool:
        raise NotImplementedError

    def _reset_election_timer(self) -> None:
        raise NotImplementedError

    def _set_state(self, role: Role, leader: NodeId | None) -> None:
        """Change role/leader, dropping reads that can no longer be confirmed."""
        if self._role is Role.LEADER and role is not Role.LEADER:
            self._drop_leader_reads()
            self._progress = {}
            self._transferee = None
        self._role = role
        self._leader = leader
        if len(self._forwarded):
            self._out_dropped.extend(self._forwarded.drop_stale(self._term, leader))

    # ---- log ---------------------------------------------------------------------------------

    def _append_entries(self, entries: Sequence[Entry]) -> None:
        """Append to the log; CONFIG entries take effect now (dissertation 4.1)."""
        before = self._configs.current
        self._log.append(entries)
        if self._configs.on_append(entries):
            self._on_config_change(before)

    # ---- reads -------------------------------------------------------------------------------

    def _read_timeout(self) -> int:
        """Unconfirmed reads are dropped after this many ticks (dropping is always safe)."""
        return 2 * self.config.election_ticks_max

    def _release_reads(self) -> None:
        self._out_reads.extend(self._apply_wait.release(self._applied))

    def _read_answer(self, dst: NodeId, ctx: int, index: int, *, ok: bool) -> ReadIndexResponse:
        return ReadIndexResponse(term=self._term, src=self.id, dst=dst, ctx=ctx, index=index, ok=ok)

    def _fail_read(self, ctx: int, requester: NodeId | None) -> None:
        """A read that can no longer be confirmed: drop it (or tell the follower that asked)."""
        if requester is None:
            self._out_dropped.append(ctx)
        else:
            self._send(self._read_answer(requester, ctx, 0, ok=False))

    def _confirmed_read(self, ctx: int, requester: NodeId | None, index: int) -> None:
        """Leadership was confirmed after this read arrived: serve it once applied >= index."""
        if requester is None:
            self._apply_wait.add(ctx, index)
            self._release_reads()
        else:
            self._send(self._read_answer(requester, ctx, index, ok=True))

    def _refuse(self, reason: str) -> None:
        """Count a refused message (``Status.refused``)."""
        self._refused[reason] = self._refused.get(reason, 0) + 1

    def _drop_leader_reads(self) -> None:
        for r in self._leader_reads.take_all():
            self._fail_read(r.ctx, r.requester)
