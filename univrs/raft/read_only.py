"""ReadIndex bookkeeping (dissertation 6.4): confirm leadership, then wait for the apply index.

Theory of operation
-------------------
A linearizable read on the leader records ``read index = commit`` (only once the leader has
committed an entry of its own term; until then it waits in ``LeaderReads.waiting``), then needs
proof that the node was still leader *after* the read arrived: a quorum of voters answering a
heartbeat sent after it. Heartbeats carry a round number (``Heartbeat.ctx``); a read joins the
newest round whose heartbeats have not gone out yet, or starts a new one. A voter's answer for
round r confirms every round <= r (its heartbeat was sent after all those reads arrived), so the
leader keeps only the highest round each voter acknowledged and confirms every read whose round a
quorum has reached (``quorum_index``). Rounds increase for the node's lifetime.

A confirmed read is served once ``applied >= index`` (``ApplyWait``). A follower forwards its
read to the leader (``ForwardedReads``) and, on the answer, waits in its own ``ApplyWait``. Any
read that can no longer be confirmed (leadership lost, leader changed, no answer for a while) is
dropped; dropping is always safe, serving early never is. Confirmed reads survive later role
changes: the confirmation already happened.

Narrow rounds (``RaftConfig.narrow_read_rounds``, what nodes run): a round started by a read
goes only to as many voters as a quorum needs besides the leader, those that answered the newest
rounds first (in a 3-node cluster: one follower, not two), so a round costs one heartbeat and
one answer instead of one per follower. Nothing about what confirms a read changes: a quorum's
answers to heartbeats carrying its round or a later one. A round still unconfirmed a tick after
it went out is sent to every voter that has not had it (heartbeat.py ``_widen_read_rounds``),
and periodic heartbeats carry the newest round as before, so a slow or lost chosen follower delays a
read by at most a tick. With leases a narrow round is a lease round too: a quorum answering it
starts a lease from its send tick, as a broadcast's would (any quorum that heard from the leader
then refuses votes as long). Off in the core by default (its transcripts and pinned seeds were
found with broadcast rounds).

Leases (``RaftConfig.read_lease``, off by default; dissertation 6.4.1)
---------------------------------------------------------------------
With leases on, every heartbeat broadcast is a round of its own, and ``LeaderLease`` remembers the
tick each round was sent at. When a quorum has acknowledged round r, the leader holds a lease
from r's *send* tick (never from the acknowledgement: the followers' timers were reset when the
heartbeat arrived, which may be long after it was sent) for ``RaftConfig.lease_ticks``. A
follower refuses votes and pre-votes for ``election_ticks_min`` ticks after it last heard from a
leader (election.py ``_in_lease``; with leases on also right after it starts, and whatever its
role), so no other leader can be elected before the lease runs out, provided the clocks drift
apart by less than ``lease_drift_ticks`` in that time. A lease read (``read_index(ctx,
lease=True)``) is confirmed at once at the commit index while the lease holds and the leader has
committed an entry of its term; otherwise it is an ordinary ReadIndex read. A leader that sends
TimeoutNow gives its lease up for the rest of its term: voters grant the transfer's votes inside
their leases, and a TimeoutNow delayed past an aborted transfer could still elect its target.
"""

from __future__ import annotations

import collections
import heapq

import attrs

from univrs.raft.messages import NodeId
from univrs.raft.ready import ReadState


@attrs.frozen(kw_only=True, slots=True)
class PendingRead:
    """A read on the leader awaiting confirmation (``requester`` None: the leader's own)."""

    ctx: int
    requester: NodeId | None
    index: int
    round: int
    deadline: int


@attrs.frozen(kw_only=True, slots=True)
class WaitingRead:
    """A read on a leader that has not yet committed an entry of its term."""

    ctx: int
    requester: NodeId | None
    deadline: int


@attrs.define(eq=False)
class LeaderReads:
    """Reads awaiting a quorum's acknowledgement of their heartbeat round (leader side)."""

    round: int = 0  # the newest round number handed out
    round_unsent: bool = False  # the newest round's heartbeats are queued but not yet sent
    # (round, tick) of the newest round sent to a quorum's worth of voters only
    # (``RaftConfig.narrow_read_rounds``): the others get it a tick later if still unconfirmed.
    narrow: tuple[int, int] | None = None
    _acked: dict[NodeId, int] = attrs.field(factory=dict)
    _sent: dict[NodeId, int] = attrs.field(factory=dict)  # the newest round sent to each peer
    _pending: collections.deque[PendingRead] = attrs.field(factory=collections.deque)
    _waiting: collections.deque[WaitingRead] = attrs.field(factory=collections.deque)

    def round_for_new_read(self) -> tuple[int, bool]:
        """The round a new read joins, and whether it is a new round (heartbeats to send)."""
        if self.round_unsent:
            return self.round, False
        self.round += 1
        self.round_unsent = True
        return self.round, True

    def add(self, read: PendingRead) -> None:
        assert not self._pending or self._pending[-1].round <= read.round
        self._pending.append(read)

    def wait_for_commit(self, read: WaitingRead) -> None:
        self._waiting.append(read)

    def take_waiting(self) -> list[WaitingRead]:
        out = list(self._waiting)
        self._waiting.clear()
        return out

    def ack(self, node: NodeId, round: int) -> None:
        """``node`` answered a heartbeat of ``round`` (only rounds already handed out count)."""
        if 0 < round <= self.round and round > self._acked.get(node, 0):
            self._acked[node] = round

    def acked_round(self, node: NodeId) -> int:
        return self._acked.get(node, 0)

    def sent(self, node: NodeId, round: int) -> None:
        """A heartbeat carrying ``round`` is queued for ``node``."""
        if round > self._sent.get(node, 0):
            self._sent[node] = round

    def sent_round(self, node: NodeId) -> int:
        return self._sent.get(node, 0)

    def newest_pending_round(self) -> int:
        """The round of the newest read awaiting confirmation (0: none)."""
        return self._pending[-1].round if self._pending else 0

    def waits_on(self, node: NodeId) -> bool:
        """Does a pending read wait for a round ``node`` has not answered yet?"""
        pending = self._pending
        return bool(pending) and pending[-1].round > self._acked.get(node, 0)

    def reset_acks(self) -> None:
        """A new leadership term: acknowledgements from an earlier term prove nothing now, and
        the next read starts a new round (an unsent round of the old term may share its number
        with heartbeats already queued in this one)."""
        self._acked.clear()
        self._sent.clear()
        self.narrow = None
        self.round_unsent = False

    def pop_confirmed(self, quorum_round: int) -> list[PendingRead]:
        """Remove and return every pending read whose round a quorum has acknowledged."""
        out: list[PendingRead] = []
        pending = self._pending
        while pending and pending[0].round <= quorum_round:
            out.append(pending.popleft())
        return out

    def take_all(self) -> list[PendingRead | WaitingRead]:
        """Remove every unconfirmed read (leadership lost)."""
        out: list[PendingRead | WaitingRead] = [*self._waiting, *self._pending]
        self._waiting.clear()
        self._pending.clear()
        return out

    def pop_expired(self, now: int) -> list[PendingRead | WaitingRead]:
        """Remove unconfirmed reads whose deadline passed (both queues are in deadline order)."""
        out: list[PendingRead | WaitingRead] = []
        while self._waiting and self._waiting[0].deadline <= now:
            out.append(self._waiting.popleft())
        while self._pending and self._pending[0].deadline <= now:
            out.append(self._pending.popleft())
        return out

    def has_unconfirmed(self) -> bool:
        return bool(self._pending or self._waiting)


@attrs.define(eq=False)
class LeaderLease:
    """The leader's read lease: the send tick of the newest heartbeat round a quorum answered.

    ``_sent`` holds (round, send tick) of rounds not yet answered by a quorum, oldest first;
    rounds older than a lease can never start a valid one and are pruned, so it holds at most
    about ``lease_ticks`` rounds per tick.
    """

    _sent: collections.deque[tuple[int, int]] = attrs.field(factory=collections.deque)
    start: int | None = None  # send tick of the newest round a quorum answered (this term)
    revoked: bool = False  # TimeoutNow was sent this term: no lease until the next term

    def sent(self, round: int, now: int, lease_ticks: int) -> None:
        """Heartbeats of ``round`` go out at tick ``now`` (only its first send is recorded)."""
        sent = self._sent
        if sent and sent[-1][0] >= round:
            return
        while sent and sent[0][1] + lease_ticks <= now:
            sent.popleft()
        sent.append((round, now))

    def quorum_acked(self, round: int) -> bool:
        """A quorum of voters answered every round up to ``round``; True if that moved the
        lease on."""
        sent = self._sent
        moved = False
        while sent and sent[0][0] <= round:
            _, tick = sent.popleft()
            if self.start is None or tick > self.start:
                self.start = tick
                moved = True
        return moved

    def valid(self, now: int, lease_ticks: int) -> bool:
        return not self.revoked and self.start is not None and now < self.start + lease_ticks

    def reset(self) -> None:
        """A new leadership term (or the end of one): nothing proven so far counts."""
        self._sent.clear()
        self.start = None
        self.revoked = False


@attrs.frozen(kw_only=True, slots=True)
class ForwardedRead:
    """A follower's read ``ctx`` sent to ``leader`` in ``term``, awaiting its ReadIndexResponse."""

    ctx: int  # the caller's ctx (the wire carries the follower's own request id instead)
    term: int
    leader: NodeId
    deadline: int


@attrs.define(eq=False)
class ForwardedReads:
    """A follower's reads forwarded to the leader, by wire request id, in the order sent.

    The wire id is the follower's own (``RaftNode`` draws ids from a random 63-bit base per
    process), never the caller's ctx: an answer to a request of an earlier process, or to an
    earlier read that reused a ctx, matches nothing and releases no read (issue 10, bug 3).
    """

    _reads: dict[int, ForwardedRead] = attrs.field(factory=dict)
    _wire_of: dict[int, int] = attrs.field(factory=dict)  # caller ctx -> wire id

    def add(self, wire: int, read: ForwardedRead) -> int | None:
        """Track ``read`` under ``wire``; returns its ctx if an older read with the same ctx was
        displaced (it is dropped: the caller reused a ctx)."""
        old = self._wire_of.pop(read.ctx, None)
        displaced = self._reads.pop(old, None) if old is not None else None
        self._reads[wire] = read
        self._wire_of[read.ctx] = wire
        return read.ctx if displaced is not None else None

    def take(self, wire: int, term: int, leader: NodeId) -> int | None:
        """Remove and return the ctx of request ``wire`` if it was sent to ``leader`` in
        ``term``; None for any other answer (stale, duplicated or not ours)."""
        read = self._reads.get(wire)
        if read is None or read.term != term or read.leader != leader:
            return None
        del self._reads[wire]
        del self._wire_of[read.ctx]
        return read.ctx

    def drop_stale(self, term: int, leader: NodeId | None) -> list[int]:
        """Remove reads sent to another leader or in another term than (term, leader)."""
        if not self._reads:
            return []
        stale = [w for w, r in self._reads.items() if r.term != term or r.leader != leader]
        return [self._remove(w) for w in stale]

    def pop_expired(self, now: int) -> list[int]:
        """Remove reads whose deadline passed (insertion order is deadline order)."""
        out: list[int] = []
        while self._reads:
            wire, read = next(iter(self._reads.items()))
            if read.deadline > now:
                break
            out.append(self._remove(wire))
        return out

    def _remove(self, wire: int) -> int:
        read = self._reads.pop(wire)
        del self._wire_of[read.ctx]
        return read.ctx

    def __len__(self) -> int:
        return len(self._reads)


@attrs.define(eq=False)
class ApplyWait:
    """Confirmed reads waiting for ``applied >= index``, lowest index first."""

    _heap: list[tuple[int, int, int]] = attrs.field(factory=list)  # (index, seq, ctx)
    _seq: int = 0

    def add(self, ctx: int, index: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (index, self._seq, ctx))

    def release(self, applied: int) -> list[ReadState]:
        out: list[ReadState] = []
        heap = self._heap
        while heap and heap[0][0] <= applied:
            index, _, ctx = heapq.heappop(heap)
            out.append(ReadState(ctx=ctx, index=index))
        return out

    def __len__(self) -> int:
        return len(self._heap)
