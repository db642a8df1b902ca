"""The snapshot half of ``LogStore``: storing, loading and streaming the node's snapshot.

``SnapshotStorage`` is a mixin of ``univrs.storage.log_store.LogStore`` (its only user); it
runs in the store's transactions (one per public method) on the ``snap`` database (page-sized
chunks, see ``layout``) and the ``snapshot`` record of ``meta``. The theory of operation is in
``log_store``'s docstring.
"""

from __future__ import annotations

import weakref
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from univrs.raft.messages import SnapshotMeta
from univrs.storage import layout
from univrs.storage.layout import Corrupt
from univrs.storage.snapshot_check import SCRUB_PIECE, DamageHook, Scrub, SnapshotDamaged
from univrs.storage.snapshot_file import PART_BLOCKS, FileSnapshot, SnapshotFiles
from univrs.storage.snapshot_install import InstallFile, Prewritten
from univrs.storage.snapshot_parts import PART_CHUNKS, SnapshotParts
from univrs.storage.stored_snapshot import StoredSnapshot, chunks_where

if TYPE_CHECKING:
    from univrs.storage.env import StoreEnv, Txn


def _require(cond: bool, message: str) -> None:
    # A caller bug (e.g. the core asking for a gap in the log): crash, never persist it.
    # Explicit rather than `assert`, so that `python -O` keeps the check.
    if not cond:
        raise AssertionError(message)


# load_snapshot's two reads: the data is in chunk records; the record named a file by the
# time the chunks were read (a save switched between the two): read again.
_IN_CHUNKS = object()
_RETRY = object()


class SnapshotStorage:
    """Snapshot methods of ``LogStore``, which provides ``_env``, ``_live`` and ``_files``."""

    __slots__ = ()

    _env: StoreEnv
    # The StoredSnapshots handed out and still alive (detached before a replacement).
    _live: weakref.WeakSet[StoredSnapshot]
    # The snapshot files beside data.mdb (univrs/storage/snapshot_file.py).
    _files: SnapshotFiles
    # A leader's snapshot whose file is being written while it is checked.
    _ahead: Prewritten

    @property
    def snapshot_damage(self) -> DamageHook:
        """Where every reader of this store's snapshot reports damage it finds
        (univrs/storage/snapshot_check.py): the runtime listens there."""
        return self._files.hook

    def stored_snapshot(self) -> StoredSnapshot | FileSnapshot | None:
        """The stored snapshot, read on demand (univrs/storage/stored_snapshot.py, or
        snapshot_file.py for one in a file); None if none. Reads its record and first chunk
        now (or opens its file), nothing else."""
        snapshot = self._open_snapshot()
        if isinstance(snapshot, StoredSnapshot):
            self._live.add(snapshot)
        return snapshot

    def snapshot_scrub(self, *, piece: int = SCRUB_PIECE) -> Scrub | None:
        """A scrub of the stored snapshot (``Scrub.step``: ``piece`` bytes read and checked
        per step, in the caller's thread); None if none is stored. Its reader is its own: a
        save that replaces the snapshot meanwhile never reads it into memory (a chunk
        snapshot's scrub then ends with "no longer stored"; a file's reads on)."""
        snapshot = self._open_snapshot()
        return None if snapshot is None else Scrub(snapshot, piece=piece)

    def stored_snapshot_where(self) -> str | None:
        """Which copy is the stored snapshot (``FileSnapshot.where``, ``StoredSnapshot.where``;
        None: none): a damage report about another copy is about a replaced one."""
        snapshot = self._open_snapshot()
        if snapshot is None:
            return None
        where = snapshot.where
        if isinstance(snapshot, FileSnapshot):
            snapshot.close()
        return where

    def _open_snapshot(self) -> StoredSnapshot | FileSnapshot | None:
        def read(txn: Txn) -> StoredSnapshot | FileSnapshot | None:
            record = self._snapshot_record(txn)
            if record is None:
                return None
            name = self._snapshot_file(txn)
            if name is not None:
                return self._files.open(name, record)  # open now: it stays readable
            meta, size, chunks, _, first = record
            step = 1
            if chunks > 0:
                raw = txn.get(layout.index_key(first), db=self._env.snap)
                if raw is None:
                    raise Corrupt(f"snapshot chunk 0 of {chunks} is missing")
                # Every chunk but the last has the same size (one save); its CRC is checked
                # when it is read (a damaged chunk 0 is found then, as any other).
                step = len(raw) - 4
            if chunks != (-(-size // step) if size else 0):
                raise Corrupt(f"snapshot at index {meta.index}: {chunks} chunks for {size} bytes")
            return StoredSnapshot(self._env, record, max(step, 1), self._files.hook)

        # The record read and its file opened under the lock that orders a switch with
        # ``collect``: a save switching meanwhile can never unlink the file between the two
        # (a missing file would be reported as damage). Opening is cheap; reads come after.
        with self._files.lock:
            return self._env.read(read)

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The stored snapshot and its data, verified against its checksums; None if none."""
        while True:
            with self._files.lock:  # as in _open_snapshot: no save unlinks it before it is open
                opened = self._env.read(self._open_file)
            if opened is None:
                return None
            if isinstance(opened, FileSnapshot):
                try:
                    return opened.meta, opened.read()
                finally:
                    opened.close()
            loaded = self._env.read(self._load_chunks)
            if loaded is not _RETRY:  # else a save switched to a file since: read that
                return loaded  # type: ignore[return-value]

    def _open_file(self, txn: Txn) -> FileSnapshot | object | None:
        """The stored snapshot's file, open; ``_IN_CHUNKS`` if its data is in chunks."""
        record = self._snapshot_record(txn)
        if record is None:
            return None
        name = self._snapshot_file(txn)
        return _IN_CHUNKS if name is None else self._files.open(name, record)

    def _load_chunks(self, txn: Txn) -> tuple[SnapshotMeta, bytes] | object | None:
        """The stored snapshot's data from its chunks, checked; ``_RETRY`` if the record
        names a file by now."""
        record = self._snapshot_record(txn)
        if record is None:
            return None
        if self._snapshot_file(txn) is not None:
            return _RETRY
        meta, size, chunks, crc, first = record
        try:
            parts = []
            for number in range(chunks):
                raw = txn.get(layout.index_key(first + number), db=self._env.snap)
                if raw is None:
                    raise Corrupt(f"snapshot chunk {number} of {chunks} is missing")
                parts.append(layout.decode_chunk(first + number, raw))
            data = b"".join(parts)
            if len(data) != size or zlib.crc32(data) != crc:
                raise Corrupt(f"snapshot at index {meta.index}: size or checksum mismatch")
        except Corrupt as exc:
            # Reported like a stream's finding: a running node retakes it (snapshot_check.py).
            message = f"corrupt data in {self._env.path / 'data.mdb'}: {exc}"
            self._files.hook.report(meta, chunks_where(self._env, record), message)
            raise SnapshotDamaged(meta, message) from None
        return meta, data

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a snapshot and its data atomically, replacing the previous one.

        If the log holds the snapshot's last entry (same index and term) the log is kept
        (``compact`` trims it later); otherwise the whole log is discarded, as it conflicts
        with or is older than the snapshot (Raft paper Figure 13, steps 6-7).
        """
        for live in list(self._live):  # a stream may still read the one replaced: keep it
            if live.touched and not live.detached:
                live.detach_if_readable()
        crc = zlib.crc32(data)
        # Page-sized chunks: any free page can take one (see layout.snapshot_chunk_size).
        step = layout.snapshot_chunk_size(self._env.page_size)
        view = memoryview(data)
        chunks = -(-len(data) // step)

        def records() -> Iterator[tuple[bytes, bytes]]:
            # One chunk at a time: a list of them all would be a second copy of the data
            # (212 MB at 1,000,000 + 1,000,000 objects) for the length of the write.
            for number in range(chunks):
                at = number * step
                yield layout.index_key(number), layout.encode_chunk(number, view[at : at + step])

        record = layout.snapshot_record(meta, size=len(data), chunks=chunks, crc=crc)

        _require(meta.index >= 1 and meta.term >= 1, f"snapshot at ({meta.index}, {meta.term})")

        def write(txn: Txn) -> None:
            old = self._snapshot_meta(txn)
            _require(
                old is None or meta.index >= old.index,
                f"snapshot at {meta.index} is older than the stored one at "
                f"{old.index if old else 0}",
            )
            raw = txn.get(layout.index_key(meta.index), db=self._env.log)
            same_point = old is not None and (old.index, old.term) == (meta.index, meta.term)
            if not same_point and (
                raw is None
                or layout.decode_entry(layout.index_key(meta.index), raw).term != meta.term
            ):
                # The log conflicts with or is older than the snapshot. (A snapshot at the point
                # the stored one covers keeps the log: it may be compacted up to exactly there.)
                txn.drop(self._env.log, delete=False)
            txn.drop(self._env.snap, delete=False)
            # MDB_APPEND: the database is empty and the keys increase.
            _, added = txn.cursor(db=self._env.snap).putmulti(records(), append=True)
            _require(added == chunks, f"stored {added} of {chunks} chunks")
            txn.put(
                layout.KEY_SNAPSHOT,
                layout.encode_record(layout.KEY_SNAPSHOT, record),
                db=self._env.meta,
            )

        self._env.write(write)
        self._files.collect(self._env)  # a replaced snapshot's file (readers keep it open)

    def snapshot_parts(
        self,
        meta: SnapshotMeta,
        data: bytes,
        *,
        crc: int | None = None,
        part_chunks: int = PART_CHUNKS,
        part_blocks: int = PART_BLOCKS,
        retake: bool = False,
    ) -> SnapshotParts:
        """The node's own snapshot, to store in steps (``SnapshotParts.step``): its data in a
        file of its own, written off the storage writer's queue, and only its record (and
        bounded deletes of old chunks) in the writer's queue (univrs/storage/snapshot_parts.py).
        ``retake``: it may replace a stored snapshot at the same index and term (a damaged
        one, retaken from the state)."""
        return SnapshotParts(
            self._env,
            self._live,
            self._files,
            meta,
            data,
            crc=crc,
            part_chunks=part_chunks,
            part_blocks=part_blocks,
            retake=retake,
        )

    def install_file(
        self, meta: SnapshotMeta, data: bytes, *, part_blocks: int = PART_BLOCKS
    ) -> InstallFile:
        """A snapshot from the leader, to store as ``save_snapshot`` does but without a
        transaction of its size: its data in a file written off the storage writer's queue
        (``InstallFile.write_file``), then only its record switched in the queue
        (``InstallFile.switch``; univrs/storage/snapshot_install.py)."""
        ahead, self._ahead.file = self._ahead.file, None
        if ahead is not None and ahead.meta == meta and ahead.data is data and ahead.claim():
            return ahead  # begun while the snapshot was checked (``prewrite_install``)
        if ahead is not None:
            ahead.drop()  # another snapshot's: deleted (s14-small)
        return InstallFile(self._env, self._live, self._files, meta, data, part_blocks=part_blocks)

    def prewrite_install(self, meta: SnapshotMeta, data: bytes) -> Callable[[], None]:
        """Begin writing the file of a snapshot from the leader now, in a thread of its own
        (called as its check begins: univrs/runtime/snapshots.py ``SnapshotChecker``), so
        that ``install_file`` of the same ``data`` object finds it written or under way.
        Returns the function that drops it (the check failed): its file is deleted at once,
        unless ``install_file`` took it over (then nothing happens). One at a time: a newer
        one drops the one before."""
        ahead = InstallFile(self._env, self._live, self._files, meta, data)
        slot = self._ahead
        older, slot.file = slot.file, ahead
        if older is not None:
            older.drop()
        ahead.start()

        def drop() -> None:
            if slot.file is ahead:
                slot.file = None
            ahead.drop()  # a no-op once ``install_file`` claimed it

        return drop

    def _stop_prewrite(self) -> None:
        """The store is closing: the file begun ahead stops after its piece in progress."""
        ahead, self._ahead.file = self._ahead.file, None
        if ahead is not None:
            ahead.drop()
            ahead.join()

    def remove_garbage_files(self) -> int:
        """Delete the snapshot files the stored record does not name (left by a save that was
        interrupted); returns how many."""
        return self._files.collect(self._env)

    def _snapshot_record(self, txn: Txn) -> tuple[SnapshotMeta, int, int, int, int] | None:
        raw = txn.get(layout.KEY_SNAPSHOT, db=self._env.meta)
        if raw is None:
            return None
        return layout.parse_snapshot(layout.decode_record(layout.KEY_SNAPSHOT, raw))

    def _snapshot_file(self, txn: Txn) -> str | None:
        raw = txn.get(layout.KEY_SNAPSHOT, db=self._env.meta)
        if raw is None:
            return None
        return layout.snapshot_file(layout.decode_record(layout.KEY_SNAPSHOT, raw))

    def _snapshot_meta(self, txn: Txn) -> SnapshotMeta | None:
        record = self._snapshot_record(txn)
        return record[0] if record is not None else None
