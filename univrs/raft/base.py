"""The state every RaftNode holds, its role changes, and the helpers every layer uses.

``RaftNode`` is one object whose code is split by topic into a single chain of layers, each
extending the one below it::

    NodeBase            base.py            fields, output queues, role changes (follow, become
                                           follower, may I campaign), read bookkeeping
    CommitNoticeLayer   commit_notice.py   commit-only heartbeats (when a follower is told a commit)
    SnapshotStreamLayer snapshot_stream.py InstallSnapshot sending (snapshot streaming)
    HeartbeatLayer      heartbeat.py       heartbeats (and skipping them), CheckQuorum, ReadIndex
                                           rounds and leases, forgetting removed peers
    LeaderLayer         leader.py          replication, commit, heartbeat answers, ticks,
                                           configuration changes
    SnapshotLayer       compaction.py      snapshot_taken, compaction, InstallSnapshot
                                           answers/receiving
    FollowerLayer       follower.py        the AppendEntries receiver, commit, truncation
    ElectionLayer       election.py        PreVote, votes, leases, becoming (pre-)candidate
    GateLayer           gate.py            what a message must pass first: the term bound, the
                                           sender rule (senders.py), vouches, in-lease answers
    InspectLayer        inspect.py         status() and the invariant check problems()
    RaftNode            node.py            the public API and message dispatch

The rule: a layer calls only methods of its own layer or of the layers below it, so every
``self._x()`` resolves statically to the one definition a reader (and mypy) finds by going
down the chain; there are no placeholder methods for a sibling to fill in. A call that would
have to go up the chain means the callee belongs lower (mypy reports it as a missing
attribute). The fields are declared here once, with their invariants beside them.

Each layer carries ``@mypyc_attr(allow_interpreted_subclasses=True)`` (native.py): run from
the sources, a slotted attrs class (``attrs.define(eq=False, init=False, repr=False)``);
compiled by ``scripts/compile``, a mypyc native class (docs/performance.md, Round 20).
"""

from __future__ import annotations

from collections.abc import Callable

from univrs.raft.log import RaftLog
from univrs.raft.membership import ConfigHistory
from univrs.raft.messages import (
    HardState,
    Membership,
    Message,
    NodeId,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
)
from univrs.raft.native import mypyc_attr
from univrs.raft.progress import Progress
from univrs.raft.read_only import ApplyWait, ForwardedReads, LeaderLease, LeaderReads
from univrs.raft.ready import RaftConfig, ReadState, Role, SnapshotInstall, SoftState
from univrs.raft.rng import Rng
from univrs.raft.snapshot import Snapshot, SnapshotReceiver

SnapshotCheck = Callable[[SnapshotMeta, bytes], "str | None"]
"""Decides whether a received snapshot can be restored: None if so, else the reason why not."""


@mypyc_attr(allow_interpreted_subclasses=True)
class NodeBase:
    """Fields of a Raft node (set by RaftNode.__init__), role changes and shared helpers."""

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
    # For RaftConfig.unlisted_leaders off (senders.py): the newest term in which a member our
    # configuration lists vouched for a leader (a rejected vote's hint) and that leader, and
    # the newest term in which we followed (or were) a leader.
    _vouched_term: int
    _vouched: NodeId | None
    _led_term: int
    _led_by: NodeId | None  # the leader we followed (or were) in _led_term
    # The tick we last refused leader traffic of a term not below ours (without
    # unlisted_leaders; None: never): a member that cannot campaign (a learner) then asks its
    # listed members for a vouch (gate.py ``_maybe_probe``).
    _refused_leader_at: int | None
    _probed_at: int | None  # the tick of our last such probe (None: none yet)
    # The sender of the latest leader traffic refused whose id our log's history named
    # (gate.py ``_probe_peers``: a learner probes it too).
    _refused_leader: NodeId | None
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
    _lease: LeaderLease  # leader only (read_only.py, "Leases"); reset at every role change
    # The tick we last heard from a live leader (AppendEntries, Heartbeat, InstallSnapshot of
    # our term); with leases on, the tick the node started at until then (election.py).
    _heard_leader_at: int
    # Messages refused, by reason (univrs/raft/senders.py: a term above MAX_TERM, a sender
    # that is not a member, a snapshot too large or not restorable). Never acted on.
    _refused: dict[str, int]
    # The leader whose messages we took last and the incarnation they were attested with
    # (univrs/raft/senders.py holds the live leader to it); (None, None) at first.
    _leader_incarnation: tuple[NodeId | None, str | None]
    # Members our configurations list but bind to no incarnation yet (a bootstrap one, until
    # the leader's binding change): the incarnation we first took a message from under each
    # such id (gate.py ``_maybe_pin``). From then on the id is held to it as if the
    # configuration bound it (senders.py ``pinned``): a leader counts acks, and a candidate
    # votes, of one incarnation only. Only ever grows by listed ids (bounded by the
    # configuration's size); a binding in the configuration takes over from a pin. Durable:
    # every hard state handed out carries them all (``HardState.pins``), and a restart loads
    # them back (a restart used to forget them and take a wiped member's new data dir, or a
    # forger, under the id).
    _pinned: dict[NodeId, str]
    # How many of ``_pinned`` the runtime reported durable (persisted_hard_state; pins only
    # grow, so a count names them) or were loaded. Invariant: _durable_pins <= len(_pinned).
    # While it is short, nothing leaves the node (messages are held into
    # messages_after_persist) and no committed entry is handed out: whatever the node does
    # after taking a message from an incarnation may depend on the pin, so it waits for it.
    _durable_pins: int
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

    # ---- roles -----------------------------------------------------------------------------

    def _set_state(self, role: Role, leader: NodeId | None) -> None:
        """Change role/leader, dropping reads that can no longer be confirmed."""
        if self._role is Role.LEADER and role is not Role.LEADER:
            self._drop_leader_reads()
            self._progress = {}
            self._transferee = None
            self._lease.reset()
        self._role = role
        self._leader = leader
        if leader is not None and self._term >= self._led_term:
            self._led_term, self._led_by = self._term, leader
        if len(self._forwarded):
            self._out_dropped.extend(self._forwarded.drop_stale(self._term, leader))

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        """Follow ``leader`` (None: unknown) at ``term`` (forgetting the vote of a lower term)."""
        if term > self._term:
            self._term = term
            self._vote = None
        self._set_state(Role.FOLLOWER if self._promotable() else Role.LEARNER, leader)
        self._votes = {}
        self._reset_election_timer()

    def _follow(self, leader: NodeId) -> bool:
        """A message from ``leader`` of our term: follow it. False if we lead this term."""
        if self._role is Role.LEADER:
            return False  # two leaders in one term cannot happen; ignore rather than obey
        self._heard_leader_at = self._now
        if self._role is Role.CANDIDATE or self._role is Role.PRE_CANDIDATE:
            self._become_follower(self._term, leader)
        elif self._leader != leader:
            self._set_state(self._role, leader)
            self._reset_election_timer()
        else:
            self._reset_election_timer()
        return True

    def _promotable(self) -> bool:
        """May this node campaign? A voter of its latest configuration, or of the latest
        committed one.

        The second case keeps an uncommitted demotion from deadlocking the cluster: the node
        it demotes may hold the most up-to-date log, and then no one else can win (seen in
        randomized runs with two overlapping demotions from different terms). Votes are still
        counted over the latest configuration's voters only, which is what election safety
        needs (dissertation 4.2.2: a leader may manage a configuration that excludes it); such
        a leader steps down once the change commits. A node whose removal or demotion is
        committed never campaigns.
        """
        current = self._configs.current
        if self.id in current.voters:
            return self._bound_to_me(current)
        committed = self._configs.committed(self._commit)
        return self.id in committed.voters and self._bound_to_me(committed)

    def _bound_to_me(self, m: Membership) -> bool:
        """Does ``m`` list this node's id for *this* incarnation (or leave it unbound)?

        A node knows its own incarnation (``RaftNode(incarnation=...)``). A node whose data dir
        was wiped comes back as a new incarnation under its old id and catches up through old
        configurations that list its id, bound to the old incarnation, as a voter: it must not
        campaign there, nor count its own vote, or it casts an amnesiac vote (alone in a
        one-voter configuration it would elect itself with a log lacking committed entries;
        the simulator found it). No message is needed to vote for oneself, so the transport's
        incarnation checks cannot stop this: the core must.
        """
        if self.incarnation is None:
            return True
        listed = m.incarnation_of(self.id)
        return listed is None or listed == self.incarnation

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        self._randomized_timeout = self._rng.randint(
            self.config.election_ticks_min, self.config.election_ticks_max
        )

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
