"""A simulated disk: a node's durable image.

The storage work of a node runs through the interpreter's write queue
(univrs/raft/interpreter.py ``WriteQueue``, the same the Trio writer uses; the simulated runtime
keeps one per process, storage.py): one item at a time, each durable after a random delay,
consecutive Ready writes merged into one (group commit). When an item completes it changes the
image here: ``store`` (a merged write), ``install`` (a snapshot from the leader) or
``store_taken`` (a snapshot the node took itself). A crash loses the queue and the item in
progress: the image is always the result of a prefix of the issued work. A node whose data dir
is wiped gets a new ``SimDisk`` with a new incarnation id.

Invariant: ``entries[k].index == base + 1 + k``; the stored snapshot (if any) is at an index
``>= base`` (the log may keep entries the snapshot also covers: ``keep``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from univrs.raft.interpreter import MergedWrite
from univrs.raft.messages import Entry, HardState, Membership, SnapshotMeta
from univrs.raft.ready import InitialState
from univrs.raft.starts import Records, Start

if TYPE_CHECKING:
    from univrs.sim.statestore import SimStateEnv

NO_MEMBERS = Membership(voters=frozenset())


@attrs.define(eq=False, slots=True)
class Taken:
    """A snapshot the node took of its own state machine, to store (a queue item in FIFO order
    with the writes). ``epoch`` is the node's install count when it was taken: an install in
    between makes it obsolete for the core (it is still stored if newer)."""

    meta: SnapshotMeta
    data: bytes
    epoch: int


@attrs.define(eq=False)
class SimDisk:
    """Durable state of one node."""

    hard_state: HardState = HardState()
    entries: list[Entry] = attrs.field(factory=list)
    base: int = 0  # index of the last compacted entry: entries[0].index == base + 1
    snapshot: tuple[SnapshotMeta, bytes] | None = None  # the newest stored snapshot
    speed: int = 1  # this disk's writes take `speed` times the profile's delay
    slow_factor: int = 1  # > 1 while a slow-disk fault is active
    # The incarnation of this data dir, chosen when it was created ("n3.2": n3's third disk).
    # A node with a new disk is a new member: configurations bind ids to incarnations.
    incarnation: str = ""
    # The persistent state machine of this data dir (``state_backend = "lmdb"``,
    # statestore.py; None: in memory, or not opened yet).
    state: SimStateEnv | None = None
    # Every pin (``HardState.pins``) a write ever made durable on this data dir: the
    # simulator's own record, not the node's (a core that forgot pins rewrites its hard state
    # without them). The forger forges under these ids (forger.py): a restarted core must
    # still refuse another incarnation under them.
    pins_ever: dict[str, str] = attrs.field(factory=dict)
    # Start counters (univrs/raft/starts.py): this data dir's newest start, bumped at every
    # start before anything is sent, and the newest start of each peer incarnation this data
    # dir accepted a message of (durable before it is delivered, as the transport does).
    start: Start | None = None
    start_records: Records = attrs.field(factory=dict)

    @property
    def last_index(self) -> int:
        return self.base + len(self.entries)

    def term_at(self, index: int) -> int | None:
        if self.base < index <= self.last_index:
            return self.entries[index - self.base - 1].term
        if self.snapshot is not None and index == self.snapshot[0].index:
            return self.snapshot[0].term
        return None

    def store(self, w: MergedWrite) -> None:
        """Make a (merged) Ready write durable: truncate, append, hard state."""
        if w.truncate_from is not None:
            del self.entries[max(0, w.truncate_from - self.base - 1) :]
        if w.entries:
            del self.entries[w.entries[0].index - self.base - 1 :]
            self.entries.extend(w.entries)
        if w.hard_state is not None:
            self.hard_state = w.hard_state
            if w.hard_state.pins:
                self.pins_ever.update(w.hard_state.pins)

    def store_taken(self, t: Taken) -> None:
        self._store(t.meta, t.data)

    def _store(self, meta: SnapshotMeta, data: bytes) -> None:
        if self.snapshot is None or meta.index > self.snapshot[0].index:
            self.snapshot = (meta, data)

    def install(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a snapshot from the leader (the LMDB store's suffix rule)."""
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
