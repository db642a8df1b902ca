"""Proposal batching: the driver's open batch and the batches in flight (step.py).

The runtime, not its callers, decides how proposals are grouped: at most ``depth`` batches
(``proposal_depth``, 1 by default) are appended and not yet applied here. Proposals that
arrive while that many are in flight wait in the open batch; when the batch in flight
applies, the whole open batch becomes one ``propose_many`` (one log append, one fsync, one
AppendEntries per follower), after one scheduling round, so that the proposers woken by that
apply and the requests that arrived meanwhile are in it. With capacity free a proposal goes
at the end of the step it arrived in (a lone client pays no extra latency). So the batch is
the unit of pipelining, like Nagle's algorithm with ``depth`` segments in flight, however the
callers' tasks are scheduled. Why depth 1: a batch costs far more than an entry (an append,
an fsync, an AppendEntries and an ack per follower, a commit notice; about 3 ms of leader CPU
against 0.25 ms per entry), and the writer syncs one batch at a time anyway; one batch in
flight made the batches twice as large and cut the CPU per write by about a fifth
(docs/api.md, Performance).

Gathering the proposers of the batch that applied (round 13, docs/performance.md). With one
batch in flight, N closed-loop clients settle into two cohorts of N/2 that alternate: when
batch A applies, the open batch B goes at once, and A's proposers, woken by the apply, come
back a client round trip ``R`` later to wait in the open batch for all of B's commit time
``L``. Most of a write's CPU is paid per batch (an append, an fsync, an AppendEntries and its
acknowledgement per follower, a commit notice, a client frame each way, about ten task
wake-ups per node), so two half batches cost nearly twice one whole one. So when a batch
applies, the open batch *gathers*: it goes once it holds as many proposals as the applied batch
answered plus what it held then (everyone is back), or once ``gather`` has passed (at most the
applied batch's own commit time ``L``, and at most ``max_gather`` seconds), whichever comes
first; and once no proposal arrived for half of that span since the gather began or
the open batch last grew (waiting for stragglers costs every proposal of the batch their
wait: measured, docs/performance.md, Round 13). The proposers waiting meanwhile wait at most
``L``, what a proposer arriving a moment later would wait anyway behind the batch in flight; a
returning proposer saves a whole ``L``.
A lone client is back in its round trip and goes at once (nothing else is expected); proposers
that do not come back (think time, gone) cost one gather of at most ``L``, and the next
batch's count no longer expects them. ``max_gather`` 0 turns gathering off.

Only the driver task uses a ``ProposalBatches`` (it calls the core).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import attrs

from univrs.errors import NotLeader, ProposalDropped
from univrs.raft.node import RaftNode
from univrs.runtime.events import Propose, ProposeBatch
from univrs.runtime.packing import Packing
from univrs.runtime.payload import any_owned, is_owned, without_owner
from univrs.runtime.ports import NO_METRICS, Metrics
from univrs.runtime.proposals import PendingProposals

DEFAULT_PROPOSAL_DEPTH = 1  # proposal batches appended and not yet applied; see the docstring
DEFAULT_MAX_GATHER = 0.05  # seconds an open batch gathers returning proposers at most
# A gather also ends when no proposal arrived for this part of its span (the stragglers of a
# slow client would cost every proposal of the batch their wait).
GATHER_PAUSE_PARTS = 2
MAX_BATCH = 4096  # proposals in one propose_many at most (the rest go in the next batch)


@attrs.define(eq=False)
class ProposalBatches:
    """The open batch and the last index of each batch in flight (module docstring)."""

    depth: int = DEFAULT_PROPOSAL_DEPTH
    # Seconds the open batch may gather the applied batch's proposers (0: it goes at once).
    max_gather: float = DEFAULT_MAX_GATHER
    # How proposals become entries: one each, or batch entries (univrs/runtime/packing.py).
    packing: Packing = attrs.field(factory=Packing)
    metrics: Metrics = NO_METRICS
    # The open batch: proposals not yet handed to the core.
    open: list[Propose] = attrs.field(factory=list, init=False)
    # Last index of each appended batch not yet applied here; invariant: len <= depth while
    # leading, empty otherwise.
    in_flight: collections.deque[int] = attrs.field(factory=collections.deque, init=False)
    # Beside each batch in flight: (its live proposals, the time it was proposed).
    _flights: collections.deque[tuple[int, float]] = attrs.field(
        factory=collections.deque, init=False
    )
    # An Applied report of the current driver step completed a batch in flight.
    released: bool = attrs.field(default=False, init=False)
    # Proposers answered by the batches released in this step, and the longest of their
    # commit times (proposed -> applied here).
    _returning: int = attrs.field(default=0, init=False)
    _released_took: float = attrs.field(default=0.0, init=False)
    # While the open batch gathers: until when at most, how many proposals end it early, the
    # pause between arrivals that ends it, and when it last grew (to how many).
    _gather_until: float | None = attrs.field(default=None, init=False)
    _gather_for: int = attrs.field(default=0, init=False)
    _gather_pause: float = attrs.field(default=0.0, init=False)
    _grew_at: float = attrs.field(default=0.0, init=False)
    _grew_to: int = attrs.field(default=0, init=False)
    proposals: int = attrs.field(default=0, init=False)  # appended to the log so far
    batches: int = attrs.field(default=0, init=False)  # propose_many calls so far

    def applied(self, index: int, now: float = 0.0) -> None:
        """Everything up to ``index`` applied here (at ``now``): the batches it covers leave
        the flight."""
        in_flight, flights = self.in_flight, self._flights
        while in_flight and in_flight[0] <= index:
            in_flight.popleft()  # that batch applied: room for the open one
            self.released = True
            if flights:
                count, proposed = flights.popleft()
                self._returning += count
                self._released_took = max(self._released_took, now - proposed)

    def gather(self, now: float) -> None:
        """The batches released in this step woke their proposers: let the open batch wait for
        them to come back (module docstring), if gathering is on."""
        returning, took = self._returning, self._released_took
        self._returning, self._released_took = 0, 0.0
        if self.max_gather <= 0 or returning <= 0 or self.in_flight:
            return
        span = min(took, self.max_gather)
        self._gather_until = now + span
        self._gather_pause = span / GATHER_PAUSE_PARTS
        self._gather_for = returning + len(self.open)
        self._grew_at, self._grew_to = now, len(self.open)

    @property
    def gather_until(self) -> float | None:
        """When the gather ends unless the open batch grows before (None: not gathering)."""
        if self._gather_until is None:
            return None
        return min(self._gather_until, self._grew_at + self._gather_pause)

    def gathering(self, now: float) -> bool:
        """Does the open batch still gather (not everyone back, time left, proposals still
        arriving)? Ends it if not."""
        if self._gather_until is None:
            return False
        count = len(self.open)
        if count > self._grew_to:
            self._grew_at, self._grew_to = now, count
        until = self.gather_until
        assert until is not None
        if count < self._gather_for and now < until:
            return True
        self._gather_until = None
        return False

    def stop_gathering(self) -> None:
        """No gathering now (a leadership change, an event that must not wait)."""
        self._gather_until = None
        self._returning, self._released_took = 0, 0.0

    def flush(
        self,
        core: RaftNode,
        pending: PendingProposals[Any],
        may_pack: Callable[[int], bool],
        now: float = 0.0,
        may_own: Callable[[], bool] | None = None,
    ) -> None:
        """Propose the open batch if fewer than ``depth`` batches are in flight (at ``now``);
        ``may_pack(n)``: may these ``n`` proposals go in batch entries (every member applies
        them)? ``may_own()``: may commands carry their owner (payload version 3, s14-owner)?
        If not, the proposals that carry one are written without it."""
        while self.open and len(self.in_flight) < self.depth:
            batch = self.open
            if len(batch) <= MAX_BATCH:  # (the usual batch: no copies of it)
                self.open = []
            else:
                batch, self.open = batch[:MAX_BATCH], batch[MAX_BATCH:]
            live = [p for p in batch if not p.waiter.done]
            if not live:
                continue
            # The payloads, read once for the owner check and the packing (each a per-batch
            # pass over every proposal on the leader's propose step).
            payloads = [p.payload for p in live]
            if may_own is not None and any_owned(payloads) and not may_own():
                for p in live:
                    if is_owned(p.payload):
                        p.payload, p.doc = without_owner(p.payload, p.doc)
                payloads = [p.payload for p in live]
            # One entry each, or batch entries if every member applies them.
            entries: list[Propose | ProposeBatch] = (
                self.packing.pack(live, payloads) if may_pack(len(live)) else list(live)
            )
            try:
                term, first = core.propose_many([e.payload for e in entries])
            except (NotLeader, ProposalDropped) as exc:
                for p in live:
                    p.waiter.fail(exc)
                self.metrics.proposals_dropped.inc(len(live))
                continue
            pending.appended(term, first, entries)
            self.in_flight.append(first + len(entries) - 1)
            self._flights.append((len(live), now))
            self.proposals += len(live)
            self.batches += 1
            self.metrics.proposals.inc(len(live))
        if len(self.open) > MAX_BATCH:  # waiting long (no quorum?): forget the abandoned
            self.open = [p for p in self.open if not p.waiter.done]

    def clear_flight(self) -> None:
        """A new leadership starts with nothing in flight and nothing gathering."""
        self.in_flight.clear()
        self._flights.clear()
        self.stop_gathering()

    def fail_open(self, exc: Exception) -> None:
        """Fail every proposal of the open batch (this node stopped leading)."""
        for p in self.open:
            p.waiter.fail(exc)
        self.open.clear()
