"""The stored snapshot, read on demand (``LogStore.stored_snapshot``).

The core keeps the newest snapshot to stream it to followers in chunks
(``univrs.raft.snapshot.SnapshotSender`` slices it). Holding it as one bytes object costs its
size in memory for the node's whole life (212 MB at 1,000,000 workloads + 1,000,000 instances,
docs/state-at-scale.md), and reading it whole at every start costs that much I/O before the
node serves. A ``StoredSnapshot`` is what the core holds instead: its size and checksum (from
the stored record) and slices read from ``raft.lmdb`` when asked for, each in one read
transaction that first checks the record is still this snapshot's, each stored chunk's CRC
checked as it is read.

The stored snapshot is replaced by a newer one (``LogStore.save_snapshot``) while a leader may
still be streaming the older one. Before it is replaced, every ``StoredSnapshot`` of it that
was read from (a stream holds it) and is still alive is *detached*: it reads its bytes whole
into memory and serves slices from them from then on (a stream of a snapshot that is no
longer stored is rare and temporary; its bytes go with the stream). One that was never read
from is left as it is; read after the replacement it finds the record changed and raises
``StorageError`` (a stream started on a snapshot that was not the newest: a bug).

Threads: slices are read on the event loop, detaching happens in the storage writer's thread;
a lock per snapshot orders them.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from typing import TYPE_CHECKING, Any

from univrs.errors import StorageError
from univrs.raft.messages import SnapshotMeta
from univrs.storage import layout
from univrs.storage.snapshot_check import DamageHook, SnapshotDamaged, slice_bounds

if TYPE_CHECKING:
    from univrs.storage.env import StoreEnv

# (meta, size, chunks, crc, key of the first chunk): the stored snapshot record
Record = tuple[SnapshotMeta, int, int, int, int]


class StoredSnapshot:
    """A stored snapshot's bytes, read on demand (see the module docstring). Supports what
    the core needs of its data: ``len``, slices (``data[lo:hi]``) and ``crc32``; ``read``
    gives the whole bytes, verified."""

    def __init__(
        self, env: StoreEnv, record: Record, step: int, hook: DamageHook | None = None
    ) -> None:
        self._env = env
        self._hook = hook
        self._record = record
        self.meta, self._size, self._chunks, self.crc32, self._first = record
        self._step = step  # bytes of data per stored chunk (all but the last)
        self._lock = threading.Lock()
        self._data: bytes | None = None  # set when detached
        self._successor: Record | None = None  # see ``superseded_by``
        self.touched = False  # read from at least once (a stream holds it)

    def __len__(self) -> int:
        return self._size

    @property
    def detached(self) -> bool:
        """Its bytes are held in memory (the stored snapshot was replaced meanwhile)."""
        return self._data is not None

    @property
    def where(self) -> str:
        """This copy of the snapshot: its chunks in ``data.mdb`` (``chunks_where``)."""
        return chunks_where(self._env, self._record)

    def damaged(self, message: str) -> SnapshotDamaged:
        """The error for damage found in these chunks, reported to the store's hook first."""
        if self._hook is not None:
            self._hook.report(self.meta, self.where, message)
        return SnapshotDamaged(self.meta, message)

    def __getitem__(self, key: slice) -> bytes:
        """Bytes ``[lo, hi)``, every chunk's CRC checked: ``SnapshotDamaged`` (reported to
        the hook) on a mismatch or a missing chunk; ``StorageError`` if the snapshot is no
        longer stored (a stream of a replaced snapshot that was never read from: a bug)."""
        lo, hi = slice_bounds(key, self._size)
        self.touched = True
        if hi <= lo:
            return b""
        with self._lock:
            if self._data is not None:
                return self._data[lo:hi]
            return self._env.read(lambda txn: self._read(txn, lo, hi))

    def read(self) -> bytes:
        """The whole data, its size and checksum verified."""
        with self._lock:
            if self._data is not None:
                return self._data
            data = self._env.read(lambda txn: self._read(txn, 0, self._size))
        if zlib.crc32(data) != self.crc32:
            raise self.damaged(f"snapshot at index {self.meta.index}: checksum mismatch")
        return data

    def detach_if_readable(self) -> None:
        """``detach``, unless this snapshot can no longer be read (replaced and its chunks
        gone before it was detached): a save that replaces snapshots must not fail on one
        that is already lost to its readers (they get "no longer stored" as before)."""
        with contextlib.suppress(StorageError):
            self.detach()

    def detach(self) -> None:
        """Read the bytes whole into memory now (before the stored snapshot is replaced)."""
        data = self.read()
        with self._lock:
            self._data = data

    @property
    def record(self) -> Record:
        """The stored record this snapshot was read from."""
        return self._record

    @property
    def successor(self) -> Record | None:
        """The record ``superseded_by`` named last (None: none)."""
        with self._lock:
            return self._successor

    def superseded_by(self, record: Record) -> None:
        """A snapshot saved in parts replaces this one with ``record``
        (univrs/storage/snapshot_parts.py): its chunks lie above this one's, and this one's
        are deleted only after the runtime handed the core the new snapshot. While ``record``
        is the stored one, this snapshot's chunks are intact and it still reads them; once
        anything else is stored, it is no longer stored, as before. A leader's snapshot
        installed in a file (univrs/storage/snapshot_install.py) hands it over the same way,
        again at each install after it: its chunks go only with an own save's prune, which
        detaches it first, off the writer's queue."""
        with self._lock:
            self._successor = record

    def _read(self, txn: Any, lo: int, hi: int) -> bytes:
        raw = txn.get(layout.KEY_SNAPSHOT, db=self._env.meta)
        stored = None if raw is None else layout.decode_record(layout.KEY_SNAPSHOT, raw)
        current = None if stored is None else layout.parse_snapshot(stored)
        if current != self._record and (current is None or current != self._successor):
            raise StorageError(
                f"snapshot at index {self.meta.index}: no longer stored (replaced by a newer one)"
            )
        step, parts = self._step, []
        first, last = lo // step, (hi - 1) // step
        for number in range(first, last + 1):
            key = self._first + number  # the chunk's key (its CRC covers it)
            value = txn.get(layout.index_key(key), db=self._env.snap)
            if value is None and current != self._record:
                raise StorageError(
                    f"snapshot at index {self.meta.index}: no longer stored (its chunks pruned)"
                )
            if value is None:
                raise self.damaged(
                    f"corrupt data in {self._env.path / 'data.mdb'}: snapshot chunk {number} "
                    f"of {self._chunks} is missing"
                )
            try:
                parts.append(layout.decode_chunk(key, value))
            except layout.Corrupt as exc:
                where = self._env.path / "data.mdb"
                raise self.damaged(f"corrupt data in {where}: {exc}") from None
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        start = lo - first * step
        out = data[start : start + (hi - lo)]
        if len(out) != hi - lo:
            raise self.damaged(f"snapshot at index {self.meta.index}: size mismatch")
        return out


def chunks_where(env: StoreEnv, record: Record) -> str:
    """Which copy a chunk snapshot's record names (for damage reports, ``DamageHook``)."""
    _, _, chunks, crc, first = record
    return f"chunks {first}..{first + chunks - 1} of {env.path / 'data.mdb'}, crc {crc:08x}"
