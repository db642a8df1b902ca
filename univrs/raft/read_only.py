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
    _acked: dict[NodeId, int] = attrs.field(factory=dict)
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

    def reset_acks(self) -> None:
        """A new leadership term: acknowledgements from an earlier term prove nothing now, and
        the next read starts a new round (an unsent round of the old term may share its number
        with heartbeats already queued in this one)."""
        self._acked.clear()
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
