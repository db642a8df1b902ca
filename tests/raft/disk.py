"""The harness's disks: what a node of ``harness.Cluster`` has made durable, and the snapshot
encoding of the harness state machine (the list of entries a node applied).

``Disk`` follows the LMDB store's rules (univrs.storage.LogStore): a contiguous log, a snapshot
that keeps the log only if the log holds its last entry, compaction only up to the snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs

from univrs.raft import Entry, EntryKind, HardState, SnapshotMeta


def encode_state(entries: Sequence[Entry]) -> bytes:
    """The harness state machine's snapshot: every applied entry, as JSON."""
    return json.dumps([[e.index, e.term, int(e.kind), e.data.hex()] for e in entries]).encode()


def decode_state(data: bytes) -> list[Entry]:
    return [
        Entry(index=i, term=t, kind=EntryKind(k), data=bytes.fromhex(d))
        for i, t, k, d in json.loads(data)
    ]


@attrs.define
class Disk:
    """What a node has made durable: hard state, snapshot, and the log (contiguous) after some
    index at or below the snapshot's."""

    hard_state: HardState = HardState()
    entries: list[Entry] = attrs.field(factory=list)
    snapshot: tuple[SnapshotMeta, bytes] | None = None

    @property
    def last_index(self) -> int:
        if self.entries:
            return self.entries[-1].index
        return self.snapshot[0].index if self.snapshot else 0

    def truncate_from(self, index: int) -> None:
        self.entries = [e for e in self.entries if e.index < index]

    def append(self, entries: Sequence[Entry]) -> None:
        assert entries[0].index == self.last_index + 1, f"gap: {entries[0]} after {self}"
        self.entries.extend(entries)

    def store_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Paper Figure 13 steps 6-7, as univrs.storage.LogStore.save_snapshot does it."""
        assert self.snapshot is None or meta.index >= self.snapshot[0].index
        matches = any(e.index == meta.index and e.term == meta.term for e in self.entries) or (
            self.snapshot is not None
            and (self.snapshot[0].index, self.snapshot[0].term) == (meta.index, meta.term)
        )
        if not matches:
            self.entries = []
        self.snapshot = (meta, data)

    def compact(self, upto: int) -> None:
        assert self.snapshot is not None and upto <= self.snapshot[0].index
        self.entries = [e for e in self.entries if e.index > upto]
