"""A simulated disk: a node's durable image plus its queue of not-yet-durable writes.

Each Ready's persist part (``snapshot``, ``truncate_from``, ``entries``, ``hard_state``) becomes
one ``Write`` that completes after a random delay; writes complete in the order they were
issued (one synced transaction after another), so the durable image is always the result of a
prefix of the issued writes. A crash drops every pending write: what was not durable is lost.
A node removed from the cluster and added back later gets a new, empty ``SimDisk`` (it never
rejoins with stale state).

A write may also store a snapshot the node took itself (``taken``); once it is durable the
simulator tells the core (``snapshot_taken``) and compacts the stored log as the core says.
Invariant: ``entries[k].index == base + 1 + k``; the stored snapshot (if any) is at an index
``>= base`` (the log may keep entries the snapshot also covers: ``keep``).
"""

from __future__ import annotations

from collections import deque

import attrs

from univrs.raft.messages import Entry, HardState, Membership, Message, SnapshotMeta
from univrs.raft.ready import InitialState

NO_MEMBERS = Membership(voters=frozenset())


@attrs.define(eq=False, slots=True)
class Write:
    """One storage transaction, plus the messages that must wait until it is durable."""

    truncate_from: int | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None
    after_persist: tuple[Message, ...]
    done_at: int  # simulated time at which the write becomes durable
    # A snapshot received from the leader (Ready.snapshot), stored before the entries.
    install: tuple[SnapshotMeta, bytes] | None = None
    # A snapshot this node took of its own state machine; ``epoch`` is the node's install
    # count when it was taken (an install in between makes it obsolete).
    taken: tuple[SnapshotMeta, bytes] | None = None
    epoch: int = 0


@attrs.define(eq=False)
class SimDisk:
    """Durable state of one node."""

    hard_state: HardState = HardState()
    entries: list[Entry] = attrs.field(factory=list)
    base: int = 0  # index of the last compacted entry: entries[0].index == base + 1
    snapshot: tuple[SnapshotMeta, bytes] | None = None  # the newest stored snapshot
    pending: deque[Write] = attrs.field(factory=deque)
    speed: int = 1  # this disk's writes take `speed` times the profile's delay
    slow_factor: int = 1  # > 1 while a slow-disk fault is active

    def submit(self, w: Write) -> Write:
        """Queue ``w``; it cannot complete before the writes queued ahead of it."""
        if self.pending and self.pending[-1].done_at > w.done_at:
            w.done_at = self.pending[-1].done_at
        self.pending.append(w)
        return w

    @property
    def last_index(self) -> int:
        return self.base + len(self.entries)

    def term_at(self, index: int) -> int | None:
        if self.base < index <= self.last_index:
            return self.entries[index - self.base - 1].term
        if self.snapshot is not None and index == self.snapshot[0].index:
            return self.snapshot[0].term
        return None

    def complete_next(self) -> Write:
        """Make the oldest pending write durable and return it."""
        w = self.pending.popleft()
        if w.install is not None:
            self._install(*w.install)
        if w.truncate_from is not None:
            del self.entries[max(0, w.truncate_from - self.base - 1) :]
        if w.entries:
            del self.entries[w.entries[0].index - self.base - 1 :]
            self.entries.extend(w.entries)
        if w.hard_state is not None:
            self.hard_state = w.hard_state
        if w.taken is not None:
            self._store(*w.taken)
        return w

    def _store(self, meta: SnapshotMeta, data: bytes) -> None:
        if self.snapshot is None or meta.index > self.snapshot[0].index:
            self.snapshot = (meta, data)

    def _install(self, meta: SnapshotMeta, data: bytes) -> None:
        # Paper Figure 13 steps 6-7: keep the log after the snapshot only if it holds the
        # snapshot's last entry, otherwise discard it entirely.
        if meta.index <= self.base:
            pass  # already compacted past it: the log after it is ours
        elif self.term_at(meta.index) == meta.term:
            del self.entries[: meta.index - self.base]
            self.base = meta.index
        else:
            self.entries.clear()
            self.base = meta.index
        self._store(meta, data)

    def compact(self, upto: int) -> None:
        """Drop stored entries up to ``upto`` (the core said they are no longer needed)."""
        if upto > self.base:
            del self.entries[: upto - self.base]
            self.base = upto

    def crash(self) -> int:
        """Lose every write that is not durable yet; returns how many were lost."""
        lost = len(self.pending)
        self.pending.clear()
        return lost

    def initial_state(self, membership: Membership = NO_MEMBERS) -> InitialState:
        """What a restarting node reads back: snapshot, hard state, the log after it.

        ``membership`` is the fallback configuration when neither holds one: empty in the
        simulation (a bootstrapped log starts with a CONFIG entry, and a compacted one has a
        snapshot; a node with an empty disk waits to be joined).
        """
        if self.snapshot is None:
            return InitialState(
                hard_state=self.hard_state,
                entries=tuple(self.entries),
                membership=membership,
                applied=0,
            )
        meta = self.snapshot[0]
        after = self.entries[max(0, meta.index - self.base) :]
        return InitialState(
            hard_state=self.hard_state,
            entries=tuple(after),
            snapshot=meta,
            membership=membership,
            applied=meta.index,
        )
