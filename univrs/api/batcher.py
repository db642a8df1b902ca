"""Batching on the serving node: few log appends for many concurrent writes, and few ReadIndex
confirmations for many concurrent linearizable reads (``ReadCoalescer``, at the end).

Theory of operation. The driver proposes together whatever proposals sit in its event channel
when it wakes (one ``propose_many``: one append, one fsync, one AppendEntries per follower).
Left alone, concurrent clients' writes trickle in one by one while the previous ones are being
persisted and replicated, so each becomes its own append and its own message to every follower,
and the per-message cost (encoding, framing, a follower's fsync and acknowledgement) caps
throughput far below what group commit allows.

``ProposalBatcher`` keeps at most ``depth`` batches in flight. A write that arrives while that
many are still being committed waits in the *open* batch; when a batch in flight completes, the
open one is released: its writers wake in the same scheduler round, so their proposals reach
the driver's channel together and become one append. With capacity free a write goes at once
(a lone client pays no extra latency). The batch is the unit of pipelining, like Nagle's
algorithm with ``depth`` segments in flight.

Why ``depth`` 1 by default: under load the nodes are CPU-bound (Python), and most of a batch's
cost is per batch, not per entry (an append, an fsync, an AppendEntries and an ack per
follower, a commit notice; measured about 3 ms of leader CPU and 2.5 ms per follower for a
batch, against about 0.25 ms per entry on the leader). One batch in flight makes the batches
twice as large; with ``scripts/bench`` (64 clients, 3 nodes on 2 cores) that cut the CPU per
write by about a fifth and raised throughput (1,314 -> 1,708 writes/s, p99 97 -> 66 ms, same
machine, back to back). The writer syncs one batch at a time anyway, so a second batch in
flight overlapped only the network round trip.

A batch completes when every member's proposal returned (applied, failed or abandoned), so a
member that gives up (deadline) never blocks the others.
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

T = TypeVar("T")

DEFAULT_DEPTH = 1  # batches in flight; see the module docstring
MAX_BATCH = 4096  # members released together at most (the rest wait for the next release)


@attrs.define(eq=False)
class _Batch:
    released: trio.Event = attrs.field(factory=trio.Event)
    members: int = 0
    done: int = 0


@attrs.define(eq=False)
class ProposalBatcher:
    """See the module docstring. ``run(fn)`` runs ``fn()`` (a proposal) inside a batch."""

    depth: int = DEFAULT_DEPTH
    _in_flight: int = 0  # released batches not yet complete; invariant: <= depth
    _waiting: collections.deque[_Batch] = attrs.field(factory=collections.deque)
    batches: int = 0  # statistics: batches released
    proposals: int = 0  # statistics: proposals run

    async def run(self, propose: Callable[[], Awaitable[T]]) -> T:
        batch = self._join()
        try:
            if not batch.released.is_set():
                await batch.released.wait()
            return await propose()
        finally:
            batch.done += 1
            if batch.done == batch.members and batch.released.is_set():
                self._finished()

    def _join(self) -> _Batch:
        self.proposals += 1
        if self._waiting and self._waiting[-1].members < MAX_BATCH:
            batch = self._waiting[-1]
            batch.members += 1
            return batch
        batch = _Batch(members=1)
        if self._in_flight < self.depth and not self._waiting:
            self._release(batch)
        else:
            self._waiting.append(batch)
        return batch

    def _release(self, batch: _Batch) -> None:
        self._in_flight += 1
        self.batches += 1
        batch.released.set()
        if batch.done == batch.members:  # every member gave up while it waited
            self._finished()

    def _finished(self) -> None:
        self._in_flight -= 1
        if self._waiting and self._in_flight < self.depth:
            self._release(self._waiting.popleft())


@attrs.define(eq=False)
class _Round:
    done: trio.Event = attrs.field(factory=trio.Event)
    started: bool = False  # read_index was called: later readers must wait for the next round
    index: int = 0
    error: Exception | None = None


@attrs.define(eq=False)
class ReadCoalescer:
    """Shares ReadIndex confirmations between concurrent linearizable reads.

    A read may only use a confirmation *requested after it arrived* (one requested earlier may
    have had its heartbeat round answered before the read existed). So one request is in flight
    at a time, driven by a task in ``nursery`` (never by a reader, whose deadline may cancel
    it); reads arriving meanwhile wait for the next request, which starts when the current one
    finishes and serves all of them: about two confirmations per round trip, however many
    readers (Raft dissertation 6.4, batching read-only requests).
    """

    nursery: trio.Nursery
    read_index: Callable[[], Awaitable[int]]
    _running: _Round | None = None
    _next: _Round | None = None
    requests: int = 0  # statistics: read_index calls made

    async def wait(self) -> int:
        """A read index confirmed after this call began (or the error confirming it raised)."""
        running = self._running
        if running is not None and not running.started:
            chosen = running  # its request is not made yet: it will be after this arrival
        else:
            if self._next is None:
                self._next = _Round()
            chosen = self._next
            if running is None:
                self._start()
        await chosen.done.wait()
        if chosen.error is not None:
            raise copy.copy(chosen.error)
        return chosen.index

    def _start(self) -> None:
        chosen, self._next = self._next, None
        assert chosen is not None
        self._running = chosen
        self.nursery.start_soon(self._drive, chosen)

    async def _drive(self, chosen: _Round) -> None:
        try:
            chosen.started = True
            self.requests += 1
            chosen.index = await self.read_index()
        except Exception as exc:  # handed to every reader of this round
            chosen.error = exc
        finally:
            chosen.done.set()
            self._running = None
            if self._next is not None:
                self._start()
