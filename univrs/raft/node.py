"""RaftNode: the sans-IO Raft state machine (paper Figure 2; dissertation 3, 4, 6, 9.6).

Theory of operation
-------------------
Events go in (``tick``, ``step``, ``propose*``, ``read_index``, ``persisted``, ``applied``,
``campaign``, ``transfer_leader``); nothing blocks and nothing is sent directly. Output
accumulates and leaves through ``ready()`` (see univrs/raft/ready.py for the ordering
contract). This file holds the public API and message dispatch, on top of a chain of layers that
each extend the one below (base.py explains the rule): ``InspectLayer`` (inspect.py:
``status()`` and the invariant check ``problems()``), ``GateLayer`` (gate.py: what a message
must pass before it is acted on: the term bound, the sender rule, vouches), ``ElectionLayer``
(election.py), ``FollowerLayer`` (follower.py: the AppendEntries receiver), ``SnapshotLayer``
(compaction.py: snapshots, compaction, InstallSnapshot receiving), ``LeaderLayer`` (leader.py:
replication, commit), ``HeartbeatLayer`` (heartbeat.py: heartbeats, CheckQuorum, ReadIndex
rounds), ``SnapshotStreamLayer`` (snapshot_stream.py:
snapshot streaming), ``CommitNoticeLayer`` (commit_notice.py: commit-only heartbeats) and
``NodeBase`` (base.py: the fields and role changes).

Durability (the part that is easy to get wrong):
- anything that claims durable state goes through ``_send_after_persist``: vote grants, append
  acknowledgements, and the candidate's own RequestVotes (so a candidate never wins on a vote
  for itself that a crash could forget);
- the leader sends entries before its own write is durable but counts itself toward commit only
  up to ``_self_match_index()`` (what ``persisted()`` reported);
- committed entries are handed out only up to ``min(commit, persisted)``.

Timers are in ticks. Followers, learners and candidates count ``_election_elapsed`` towards a
timeout drawn from the injected RNG at every reset; the leader uses ``election_ticks_min`` as
the CheckQuorum period and the leader-transfer deadline. A follower that heard from its leader
less than ``election_ticks_min`` ticks ago is "in lease" and ignores RequestVote (CheckQuorum
on) and refuses pre-votes (etcd's raft.go has the same rule).
"""

from __future__ import annotations

from collections.abc import Sequence

from univrs.errors import CommitPending, NotLeader, ProposalDropped
from univrs.raft.base import SnapshotCheck
from univrs.raft.gate import MAX_TERM
from univrs.raft.inspect import InspectLayer
from univrs.raft.log import RaftLog
from univrs.raft.membership import ConfigHistory, voter_changes
from univrs.raft.messages import (
    COMMIT_NOTICE_CTX,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    encode_membership,
)
from univrs.raft.native import mypyc_attr
from univrs.raft.read_only import (
    ApplyWait,
    ForwardedRead,
    ForwardedReads,
    LeaderLease,
    LeaderReads,
)
from univrs.raft.ready import (
    InitialState,
    RaftConfig,
    ReadState,
    Ready,
    Role,
    SoftState,
)
from univrs.raft.rng import Rng

_FROM_LEADER = (AppendEntries, Heartbeat, InstallSnapshot)

__all__ = ["MAX_TERM", "RaftNode"]


@mypyc_attr(allow_interpreted_subclasses=True)
class RaftNode(InspectLayer):
    """One Raft member: feed it events, collect ``ready()`` batches, read ``status()``.

    Overridable hooks (small methods the real logic goes through; the simulator's mutants break them
    on purpose): ``_can_commit_by_counting``, ``_self_match_index``,
    ``_max_inflight_config_changes`` (leader.py), ``_read_needs_quorum_check`` (heartbeat.py),
    ``_snapshot_resume_ticks`` (snapshot_stream.py),
    ``_may_grant_vote``, ``_log_up_to_date`` (election.py), ``_compaction_limit`` (compaction.py),
    ``_send``, ``_send_after_persist`` (base.py), ``_sender_refusal`` and ``_live_incarnation``
    (gate.py: who may send us messages, univrs/raft/senders.py).
    """

    def __init__(
        self,
        id: NodeId,
        *,
        rng: Rng,
        config: RaftConfig | None = None,
        initial: InitialState | None = None,
        incarnation: str | None = None,
        snapshot_check: SnapshotCheck | None = None,
    ) -> None:
        config = config if config is not None else RaftConfig()
        initial = initial if initial is not None else InitialState()
        snap = initial.snapshot
        snap_index = snap.index if snap is not None else 0
        self.id = id
        self.incarnation = incarnation
        self.snapshot_check = snapshot_check
        self.config = config
        self._rng = rng
        self._log = RaftLog(
            entries=initial.entries,
            snapshot_index=snap_index,
            snapshot_term=snap.term if snap is not None else 0,
        )
        self._configs = ConfigHistory(
            base=snap.membership if snap is not None else initial.membership,
            base_index=snap_index,
        )
        self._configs.on_append(initial.entries)
        hs = initial.hard_state
        self._configs.named.update(hs.named)  # (membership.py ``ConfigHistory.named``)
        if hs.commit > self._log.last_index:
            raise ValueError(f"hard state commit {hs.commit} beyond last index {self._log}")
        self._term = hs.term
        self._vote = hs.vote
        self._persisted = self._log.last_index  # start-up entries come from storage
        self._applied = max(initial.applied, snap_index)
        if self._applied > self._log.last_index:
            raise ValueError(f"applied {self._applied} beyond the log ({self._log})")
        # What was applied was committed, even if the hard state saying so was not saved.
        self._commit = max(hs.commit, self._applied)
        self._handed = self._applied  # last committed index handed out in a Ready
        self._role = Role.FOLLOWER if self._promotable() else Role.LEARNER
        self._leader = None
        self._vouched_term = 0
        self._vouched = None
        self._led_term = 0
        self._led_by = None
        self._refused_leader_at = None
        self._probed_at = None
        self._refused_leader = None
        self._now = 0
        self._election_elapsed = 0
        self._randomized_timeout = config.election_ticks_min
        self._heartbeat_elapsed = 0
        self._transfer_elapsed = 0
        self._transferee = None
        self._votes = {}
        self._progress = {}
        self._snapshot = None  # the runtime hands the data over with snapshot_taken()
        self._snapshot_index = snap_index
        self._receiving = None
        self._out_snapshot = None
        self._leader_reads = LeaderReads()
        self._lease = LeaderLease()
        # With leases on, a start counts as hearing from a leader (election.py ``_in_lease``),
        # unless the node never can have: bootstrap_state starts at term 1, a joining node at
        # 0, and every leader's term is at least 2 (a candidate increments its term).
        self._heard_leader_at = 0 if hs.term > 1 else -config.election_ticks_min
        self._refused = {}
        self._leader_incarnation = (None, None)
        self._pinned = dict(hs.pins)  # durable pins (gate.py ``_maybe_pin``)
        self._durable_pins = len(self._pinned)
        self._forwarded = ForwardedReads()
        # Request ids of forwarded reads: a random base per process (a restart starts elsewhere
        # in 2^62, so no answer to an earlier process's request can match), then +1 each.
        self._next_read_id = rng.randint(1, 1 << 62)
        self._apply_wait = ApplyWait()
        self._msgs = []
        self._msgs_after = []
        self._out_reads = []
        self._out_dropped = []
        self._last_hs = hs
        self._durable_term = hs.term  # loaded from storage, hence durable
        self._last_soft = SoftState(role=self._role, leader=None, term=self._term)
        self._reset_election_timer()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.id} {self._role.value} term={self._term} "
            f"leader={self._leader} commit={self._commit} persisted={self._persisted} "
            f"{self._log!r}>"
        )

    # ============================================================================ events ==

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._now += 1
        if self._leader_reads.has_unconfirmed() or len(self._forwarded):
            self._expire_reads()
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._randomized_timeout:
                if self._promotable():
                    self._hup(transfer=False)
                else:
                    self._maybe_probe()  # a learner refusing a leader: ask for a vouch

    def step(self, msg: Message) -> None:
        """Handle a message from a peer. Stale or unexpected messages are dropped, never raise."""
        if not self._admit(msg):
            return  # not for us, or refused and counted (gate.py, senders.py)
        # Snapshot data is taken only from the leader we followed in our term before this
        # message (compaction.py); the term handling below may make its sender that leader.
        followed = isinstance(msg, InstallSnapshot) and self._from_followed_leader(msg)
        if msg.term > self._term:
            if isinstance(msg, RequestVote):
                if not msg.transfer and self._in_lease(msg.pre_vote):
                    self._answer_in_lease(msg)  # a live leader exists: no disruption (gate.py)
                    return
                if not msg.pre_vote:
                    self._become_follower(msg.term, None)
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                pass  # granted pre-votes carry the term we would campaign in (9.6)
            else:
                self._become_follower(msg.term, msg.src if isinstance(msg, _FROM_LEADER) else None)
        elif msg.term < self._term:
            self._answer_stale(msg)
            return
        if isinstance(msg, _FROM_LEADER):
            # The incarnation we hear this leader at (None: not attested): while it is our
            # live leader, the sender rule refuses its id at any other (senders.py).
            self._leader_incarnation = (msg.src, msg.sender_incarnation)
        if isinstance(msg, AppendEntries):
            if self._follow(msg.src):
                self._on_append(msg)
        elif isinstance(msg, AppendEntriesResponse):
            if self._role is Role.LEADER:
                self._on_append_response(msg)
        elif isinstance(msg, Heartbeat):
            if self._follow(msg.src):
                self._commit_to(min(msg.commit, self._log.last_index))
                if msg.ctx != COMMIT_NOTICE_CTX:  # a commit notice wants no answer
                    self._send(
                        HeartbeatResponse(term=self._term, src=self.id, dst=msg.src, ctx=msg.ctx)
                    )
        elif isinstance(msg, HeartbeatResponse):
            if self._role is Role.LEADER:
                self._on_heartbeat_response(msg)
        elif isinstance(msg, RequestVote):
            self._on_request_vote(msg)
        elif isinstance(msg, RequestVoteResponse):
            self._on_vote_response(msg)
        elif isinstance(msg, ReadIndexRequest):
            if self._role is Role.LEADER:
                self._leader_read(msg.ctx, msg.src)
            else:
                self._send(self._read_answer(msg.src, msg.ctx, 0, ok=False))
        elif isinstance(msg, ReadIndexResponse):
            self._on_read_index_response(msg)
        elif isinstance(msg, TimeoutNow) and self._role is not Role.LEADER and self._promotable():
            # Leader transfer (dissertation 3.10): campaign now, skipping pre-vote and leases.
            self._become_candidate(transfer=True)
        elif isinstance(msg, InstallSnapshot):
            self._on_install_snapshot(msg, followed=followed)
        elif isinstance(msg, InstallSnapshotResponse) and self._role is Role.LEADER:
            self._on_snapshot_response(msg)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append one NORMAL entry (leader only); returns its (term, index)."""
        self._check_can_propose()
        return self._term, self._append_as_leader(((EntryKind.NORMAL, data),))

    def propose_many(self, items: Sequence[bytes]) -> tuple[int, int]:
        """Append NORMAL entries with consecutive indexes; returns (term, first index)."""
        if not items:
            raise ValueError("propose_many needs at least one entry")
        self._check_can_propose()
        return self._term, self._append_as_leader([(EntryKind.NORMAL, d) for d in items])

    def propose_membership(self, membership: Membership) -> tuple[int, int]:
        """Append a CONFIG entry (single-server change, dissertation 4.1); returns (term, index).

        Raises CommitPending (a ProposalDropped) until an entry of this leader's term has
        committed, and while an earlier configuration entry is uncommitted; ProposalDropped if
        the change adds or removes more than one voter, or leaves no voter.
        """
        self._check_can_propose()
        if self._config_change_needs_term_commit() and not self._committed_in_term():
            # The 2015 correction to single-server changes (raft-dev; dissertation errata): a
            # new leader whose log lacks its predecessor's uncommitted change must not start a
            # different one, or the two configurations need not share a majority and a
            # committed entry can be overwritten. Committing our no-op settles the question.
            raise CommitPending(
                "configuration change refused: this leader has not committed an entry of its "
                f"term {self._term} yet; retry in a moment"
            )
        pending = self._configs.uncommitted(self._commit)
        if pending >= self._max_inflight_config_changes():
            raise CommitPending(
                f"configuration change refused: the previous one (index "
                f"{self._configs.current_index}) is not committed yet; retry after it commits"
            )
        if not membership.voters:
            raise ProposalDropped("configuration change refused: it leaves no voter")
        if voter_changes(self._configs.current, membership) > 1:
            raise ProposalDropped(
                "configuration change refused: add or remove at most one voter per change "
                "(dissertation 4.2); promote learners one at a time"
            )
        data = encode_membership(membership)
        return self._term, self._append_as_leader(((EntryKind.CONFIG, data),))

    def read_index(self, ctx: int, *, lease: bool = False) -> None:
        """Request a linearizable read; ``ctx`` comes back in Ready.reads or Ready.dropped_reads.

        ``lease=True`` (only with ``RaftConfig.read_lease``): a leader holding its read lease
        confirms the read at once at its commit index (read_only.py, "Leases"); otherwise, and
        on a follower, it is an ordinary ReadIndex read.
        """
        if self._role is Role.LEADER:
            self._leader_read(ctx, None, lease)
        elif self._leader is not None:
            read = ForwardedRead(
                ctx=ctx,
                term=self._term,
                leader=self._leader,
                deadline=self._now + self._read_timeout(),
            )
            wire = self._read_wire_id(ctx)
            displaced = self._forwarded.add(wire, read)
            if displaced is not None:
                self._out_dropped.append(displaced)
            self._send(ReadIndexRequest(term=self._term, src=self.id, dst=self._leader, ctx=wire))
        else:
            self._out_dropped.append(ctx)

    def persisted(self, index: int, term: int) -> None:
        """Storage made entries up to (index, term) durable. Stale reports are ignored."""
        if index <= self._persisted or index > self._log.stable_limit:
            return
        if self._log.term_at(index) != term:
            return  # the entry at index was replaced since that write: the report is stale
        self._persisted = index
        if self._role is Role.LEADER:
            self._maybe_commit()

    def persisted_hard_state(self, hard_state: HardState) -> None:
        """Storage made ``hard_state`` durable (the newest one of a completed write).

        Until the hard state of the current term is reported durable, everything this node
        sends at that term waits for the persist (``Ready.messages_after_persist``): nothing
        that carries a term leaves before that term is on disk (etcd's rule). Likewise, until
        a hard state holding every pin (``HardState.pins``) is reported durable, every message
        waits and no committed entry is handed out (base.py ``_durable_pins``). Without these
        reports the core stays safe, only slower (and, once it pinned a member, applies
        nothing more).
        """
        if hard_state.term > self._durable_term:
            self._durable_term = hard_state.term
        if len(hard_state.pins) > self._durable_pins:
            self._durable_pins = len(hard_state.pins)  # (pins only grow: a count names them)

    def applied(self, index: int) -> None:
        """The state machine has applied every committed entry up to ``index``."""
        if index <= self._applied:
            return
        if index > self._handed:
            raise ValueError(f"applied({index}) beyond the entries handed out ({self._handed})")
        self._applied = index
        if len(self._apply_wait):
            self._release_reads()

    def campaign(self) -> None:
        """Start an election now (pre-vote first when configured). No-op for leaders/learners."""
        self._hup(transfer=False)

    def transfer_leader(self, target: NodeId) -> None:
        """Hand leadership to voter ``target`` (dissertation 3.10). Leader only."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if target == self.id or target == self._transferee:
            return
        if target not in self._configs.current.voters:
            raise ProposalDropped(f"cannot transfer leadership to {target}: not a voter")
        self._transferee = target
        self._transfer_elapsed = 0
        pr = self._progress[target]
        if pr.match == self._log.last_index:
            self._send_timeout_now(target)
        else:
            self._send_appends(target)

    # ============================================================================ output ==

    def has_ready(self) -> bool:
        """True if ``ready()`` would return a non-empty batch."""
        if self._msgs or self._msgs_after or self._out_reads or self._out_dropped:
            return True
        if self._out_snapshot is not None:
            return True
        hs = self._last_hs
        soft = self._last_soft
        return (
            self._log.has_unstable()
            or (
                self._durable_pins == len(self._pinned)
                and (self._commit if self._commit < self._persisted else self._persisted)
                > self._handed
            )
            or self._term != hs.term
            or self._vote != hs.vote
            or self._commit != hs.commit
            or len(self._pinned) != len(hs.pins)
            or self._role is not soft.role
            or self._leader != soft.leader
            or self._term != soft.term
        )

    def ready(self) -> Ready:
        """Take the accumulated output (may be empty); see univrs/raft/ready.py for the contract."""
        log = self._log
        snapshot = self._out_snapshot
        self._out_snapshot = None
        truncate: int | None = None
        entries: tuple[Entry, ...] = ()
        if log.has_unstable():
            truncate, entries = log.take_unstable()
        hard_state = None
        hs = self._last_hs
        pins = self._pinned
        named = self._configs.named
        if (
            self._term != hs.term
            or self._vote != hs.vote
            or self._commit != hs.commit
            or len(pins) != len(hs.pins)
        ):
            hard_state = HardState(
                term=self._term,
                vote=self._vote,
                commit=self._commit,
                pins=tuple(sorted(pins.items())) if len(pins) != len(hs.pins) else hs.pins,
                # Rides on the next hard state written for another reason (a commit moves soon
                # after the compaction or install that grew it): never a write of its own, so
                # it moves no run's course; lost in a crash before it, the node hears fewer
                # ids, never more. (Only grows, like the pins: a count names it.)
                named=tuple(sorted(named)) if len(named) != len(hs.named) else hs.named,
            )
            self._last_hs = hard_state
        # A pin not yet durable: what the node does now may depend on it (base.py
        # ``_durable_pins``), so its messages and committed entries wait for the write.
        pins_durable = self._durable_pins >= len(pins)
        hi = min(self._commit, self._persisted)
        committed: tuple[Entry, ...] = ()
        if hi > self._handed and pins_durable:
            committed = log.entries(self._handed + 1, hi)
            self._handed = hi
        soft = None
        last = self._last_soft
        if self._role is not last.role or self._leader != last.leader or self._term != last.term:
            soft = SoftState(role=self._role, leader=self._leader, term=self._term)
            self._last_soft = soft
        messages: tuple[Message, ...] = ()
        held: list[Message] = []
        if self._msgs:
            if not pins_durable:
                held.extend(self._msgs)  # every one waits for the pin's write
            elif self._durable_term < self._term:
                # The current term's hard state is not known durable yet (it is in this Ready
                # or an earlier write still in flight): what claims that term waits for it.
                now: list[Message] = []
                for m in self._msgs:
                    (held if self._hold_until_term_durable(m) else now).append(m)
                messages = tuple(now)
            else:
                messages = tuple(self._msgs)
            self._msgs.clear()
            self._leader_reads.round_unsent = False  # the round's heartbeats are on their way
        after: tuple[Message, ...] = ()
        if self._msgs_after or held:
            after = tuple(held + self._msgs_after) if held else tuple(self._msgs_after)
            self._msgs_after.clear()
        reads: tuple[ReadState, ...] = ()
        if self._out_reads:
            reads = tuple(self._out_reads)
            self._out_reads.clear()
        dropped: tuple[int, ...] = ()
        if self._out_dropped:
            dropped = tuple(self._out_dropped)
            self._out_dropped.clear()
        return Ready(
            hard_state=hard_state,
            truncate_from=truncate,
            entries=entries,
            messages=messages,
            messages_after_persist=after,
            committed=committed,
            reads=reads,
            dropped_reads=dropped,
            soft_state=soft,
            snapshot=snapshot,
        )

    # ========================================================================= roles ==

    def _on_read_index_response(self, msg: ReadIndexResponse) -> None:
        if self._role is Role.LEADER:
            return
        ctx = self._forwarded.take(msg.ctx, msg.term, msg.src)
        if ctx is None:
            return  # not an answer to a request of ours that is still pending
        if msg.ok:
            self._apply_wait.add(ctx, msg.index)
            self._release_reads()
        else:
            self._out_dropped.append(ctx)

    def _expire_reads(self) -> None:
        for r in self._leader_reads.pop_expired(self._now):
            self._fail_read(r.ctx, r.requester)
        self._out_dropped.extend(self._forwarded.pop_expired(self._now))
