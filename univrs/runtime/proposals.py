"""Proposal outcomes: what a proposer may conclude about a write, and what it may retry.

Pure (no trio, no I/O): the simulator runs this very code for its simulated API, so the rules
below are exercised under the simulator's faults (docs/simulator.md, "The write path").

A proposal appended to the leader's log at ``(term, index)`` waits in ``PendingProposals``
until one of these settles it:

* the entry at ``index`` is applied with the same term: it is ours, the response is the
  outcome (``APPLIED``);
* the entry at ``index`` is applied with another term: ours was replaced by a different entry
  and can never commit (State Machine Safety): ``NOT_APPLIED``, retrying is safe;
* a snapshot from the leader covers ``index``: the snapshot does not say which entry sat
  there, so ours may have applied: ``UNKNOWN`` (issue 10, bug 5: treating it as not applied
  and retrying applied writes twice).

A proposal this node loses leadership over stays pending: the next leader may still commit its
entry, and the apply (or a snapshot) decides; the caller's deadline bounds the wait. Proposals
refused before they reach the log (``NotLeader``, ``ProposalDropped`` from the core, or a
leadership change while they waited for the next batch) are ``NOT_APPLIED``.

``WriteAttempts`` is the API's side: the attempts of one client write, each ending
``NOT_APPLIED`` (retry) or ``UNKNOWN`` (it may have applied). After an unknown attempt a write
without an idempotency key is never retried (its answer is "outcome unknown"); one with a key
is (the state machine's session answers the duplicate with the first response, dissertation
6.3). Once an attempt may have applied, a later refusal only says that *that* attempt did not
apply, so the answer stays "outcome unknown", never a refusal a caller could retry blindly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

import attrs

T = TypeVar("T")


class Outcome(enum.Enum):
    """What a proposer knows about one attempt of a write."""

    APPLIED = "applied"  # its own entry applied: the response is the answer
    NOT_APPLIED = "not-applied"  # certainly not applied and never will be: retry is safe
    UNKNOWN = "unknown"  # may have applied: retry only with an idempotency key


@attrs.define(eq=False)
class PendingProposals(Generic[T]):
    """Proposals appended to the log, by index (with the term they were appended in).

    ``T`` is the runtime's token for a waiting proposer (the driver's waiter, the simulator's
    request). Invariant: at most one proposal per index; indexes are those ``propose_many``
    returned.
    """

    _by_index: dict[int, tuple[int, T]] = attrs.field(factory=dict)

    def appended(self, term: int, first: int, tokens: Sequence[T]) -> None:
        """``propose_many`` put ``tokens`` at ``first``, ``first + 1`` ... in ``term``."""
        by_index = self._by_index
        for offset, token in enumerate(tokens):
            by_index[first + offset] = (term, token)

    def own(self, index: int, term: int) -> T | None:
        """The proposer whose own entry is ``(index, term)`` (it was appended here at that index
        in that term: by Log Matching the entry is that proposal's), if one waits; nothing is
        settled."""
        pending = self._by_index.get(index)
        if pending is None or pending[0] != term:
            return None
        return pending[1]

    def applied(self, index: int, term: int) -> tuple[T, Outcome] | None:
        """The entry ``(index, term)`` was applied: the proposer waiting there, if any, and
        its outcome (``APPLIED`` if the entry is its own, ``NOT_APPLIED`` if it was replaced)."""
        pending = self._by_index.pop(index, None)
        if pending is None:
            return None
        return pending[1], (Outcome.APPLIED if pending[0] == term else Outcome.NOT_APPLIED)

    def covered(self, snapshot_index: int) -> list[T]:
        """A snapshot from the leader up to ``snapshot_index`` was installed: the proposers
        waiting at or below it, whose outcome is now ``covered_outcome()``."""
        by_index = self._by_index
        if not by_index:
            return []
        gone = [i for i in by_index if i <= snapshot_index]
        return [by_index.pop(i)[1] for i in sorted(gone)]

    def covered_outcome(self) -> Outcome:
        """What a proposer covered by a snapshot may conclude: it may have applied."""
        return Outcome.UNKNOWN

    def __len__(self) -> int:
        return len(self._by_index)

    def __iter__(self) -> Iterator[T]:
        return (token for _term, token in self._by_index.values())


@attrs.define(eq=False)
class WriteAttempts:
    """The attempts of one client write on the serving node (see the module docstring)."""

    keyed: bool  # the write carries an idempotency key (client id, sequence number)
    # Sticky: some attempt may have applied the command.
    maybe_applied: bool = False

    def failed(self, outcome: Outcome) -> bool:
        """An attempt ended without a response: may the write be tried again (now)?"""
        if outcome is Outcome.UNKNOWN:
            self.maybe_applied = True
            return self.keyed
        return True

    def refusal_is_unknown(self) -> bool:
        """Must a refusal (no leader, not the leader, the deadline, the session gone) be
        answered as "outcome unknown"? True once an attempt may have applied."""
        return self.maybe_applied
