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
from univrs.runtime.ports import NO_METRICS, Metrics
from univrs.runtime.proposals import PendingProposals

DEFAULT_PROPOSAL_DEPTH = 1  # proposal batches appended and not yet applied; see the docstring
MAX_BATCH = 4096  # proposals in one propose_many at most (the rest go in the next batch)


@attrs.define(eq=False)
class ProposalBatches:
    """The open batch and the last index of each batch in flight (module docstring)."""

    depth: int = DEFAULT_PROPOSAL_DEPTH
    # How proposals become entries: one each, or batch entries (univrs/runtime/packing.py).
    packing: Packing = attrs.field(factory=Packing)
    metrics: Metrics = NO_METRICS
    # The open batch: proposals not yet handed to the core.
    open: list[Propose] = attrs.field(factory=list, init=False)
    # Last index of each appended batch not yet applied here; invariant: len <= depth while
    # leading, empty otherwise.
    in_flight: collections.deque[int] = attrs.field(factory=collections.deque, init=False)
    # An Applied report of the current driver step completed a batch in flight.
    released: bool = attrs.field(default=False, init=False)
    proposals: int = attrs.field(default=0, init=False)  # appended to the log so far
    batches: int = attrs.field(default=0, init=False)  # propose_many calls so far

    def applied(self, index: int) -> None:
        """Everything up to ``index`` applied here: the batches it covers leave the flight."""
        in_flight = self.in_flight
        while in_flight and in_flight[0] <= index:
            in_flight.popleft()  # that batch applied: room for the open one
            self.released = True

    def flush(
        self, core: RaftNode, pending: PendingProposals[Any], may_pack: Callable[[int], bool]
    ) -> None:
        """Propose the open batch if fewer than ``depth`` batches are in flight; ``may_pack(n)``:
        may these ``n`` proposals go in batch entries (every member applies them)?"""
        while self.open and len(self.in_flight) < self.depth:
            batch = self.open
            live = [p for p in batch[:MAX_BATCH] if not p.waiter.done]
            self.open = batch[MAX_BATCH:]
            if not live:
                continue
            # One entry each, or batch entries if every member applies them.
            entries: list[Propose | ProposeBatch] = (
                self.packing.pack(live) if may_pack(len(live)) else list(live)
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
            self.proposals += len(live)
            self.batches += 1
            self.metrics.proposals.inc(len(live))
        if len(self.open) > MAX_BATCH:  # waiting long (no quorum?): forget the abandoned
            self.open = [p for p in self.open if not p.waiter.done]

    def fail_open(self, exc: Exception) -> None:
        """Fail every proposal of the open batch (this node stopped leading)."""
        for p in self.open:
            p.waiter.fail(exc)
        self.open.clear()
