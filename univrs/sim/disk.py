"""A simulated disk: a node's durable image plus its queue of not-yet-durable writes.

Each Ready's persist part (``truncate_from``, ``entries``, ``hard_state``) becomes one ``Write``
that completes after a random delay; writes complete in the order they were issued (one synced
transaction after another), so the durable image is always the result of a prefix of the
issued writes. A crash drops every pending write: what was not durable is lost.
"""

from __future__ import annotations

from collections import deque

import attrs

from univrs.raft.messages import Entry, HardState, Membership, Message
from univrs.raft.ready import InitialState


@attrs.define(eq=False, slots=True)
class Write:
    """One storage transaction, plus the messages that must wait until it is durable."""

    truncate_from: int | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None
    after_persist: tuple[Message, ...]
    done_at: int  # simulated time at which the write becomes durable


@attrs.define(eq=False)
class SimDisk:
    """Durable state of one node. Invariant: ``entries[k].index == k + 1`` (no compaction)."""

    hard_state: HardState = HardState()
    entries: list[Entry] = attrs.field(factory=list)
    pending: deque[Write] = attrs.field(factory=deque)
    speed: int = 1  # this disk's writes take `speed` times the profile's delay
    slow_factor: int = 1  # > 1 while a slow-disk fault is active

    def submit(self, w: Write) -> Write:
        """Queue ``w``; it cannot complete before the writes queued ahead of it."""
        if self.pending and self.pending[-1].done_at > w.done_at:
            w.done_at = self.pending[-1].done_at
        self.pending.append(w)
        return w

    def complete_next(self) -> Write:
        """Make the oldest pending write durable and return it."""
        w = self.pending.popleft()
        if w.truncate_from is not None:
            del self.entries[w.truncate_from - 1 :]
        if w.entries:
            del self.entries[w.entries[0].index - 1 :]
            self.entries.extend(w.entries)
        if w.hard_state is not None:
            self.hard_state = w.hard_state
        return w

    def crash(self) -> int:
        """Lose every write that is not durable yet; returns how many were lost."""
        lost = len(self.pending)
        self.pending.clear()
        return lost

    def initial_state(self, membership: Membership) -> InitialState:
        """What a restarting node reads back: durable hard state and log, nothing applied."""
        return InitialState(
            hard_state=self.hard_state,
            entries=tuple(self.entries),
            membership=membership,
            applied=0,
        )
