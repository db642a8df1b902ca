"""A node's own snapshot in a file of its own beside ``data.mdb``: written and synced off the
storage writer's queue, read on demand through an open file descriptor.

Why. Stored as chunks of ``raft.lmdb`` (``save_snapshot``, or in 2 MB parts: the tenth
increment of docs/state-at-scale.md), every byte of a snapshot goes through a write
transaction of the log's environment, one item of the storage writer's queue: a leader's
appends wait behind each part and its fsync. In a file, the snapshot's bytes never go through
that queue: the file is written in a worker thread, ``PART_BLOCKS`` blocks (512 KB) at a time,
each piece written and flushed to the disk while no commit of the log runs (``StoreEnv.turn``:
the log's commits and the pieces alternate on the shared disk, a commit waits for at most one
piece; ``flush_range``: the data only, no journal commit), then the file is fsynced, and only
the ``snapshot`` record that names it is written in the log's
transaction (univrs/storage/snapshot_parts.py, the switch).

Format. The file ``raft.lmdb/snapshot-<index>-<term>-<token>.dat`` (``layout.
snapshot_file_name``) is a sequence of blocks: block ``i`` is ``layout.encode_chunk(i, data)``,
a CRC-32 over the block's number and its data, then ``BLOCK_DATA`` bytes of the snapshot (the
last block fewer). The record holds the data's size, the blocks' count and the whole data's
CRC-32, as for chunks. A file the record does not name is garbage (a save that was interrupted
or given up, a replaced snapshot): ``SnapshotFiles.collect`` deletes it.

Durability. The record naming a file is committed only after the file's data, the file and
its directory entry are synced: a crash at any point leaves the record naming either the old
snapshot (its data untouched) or the new one, whole.

Readers. ``FileSnapshot`` holds the file open: a replaced snapshot's file is unlinked, and a
stream still reading it goes on reading it through its descriptor (the space is freed when the
last one is closed), so no read into memory is needed when a file snapshot is replaced. The
store closes every descriptor its readers still hold when it closes (``SnapshotFiles.
close_all``): a stopped node leaves no file open, whoever still holds a reader object.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pathlib
import threading
import weakref
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from univrs.errors import StorageError
from univrs.raft.messages import SnapshotMeta
from univrs.storage import layout, nospace
from univrs.storage.snapshot_check import DamageHook, SnapshotDamaged, slice_bounds

if TYPE_CHECKING:
    from univrs.storage.env import StoreEnv


def _sync_file_range() -> Any:
    """Linux's ``sync_file_range`` through libc (the os module has none); None elsewhere."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
# SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
_WRITE_AND_WAIT = 1 | 2 | 4


def flush_range(fd: int, offset: int, nbytes: int) -> None:
    """Write a range of a file's data to the disk and wait for it, without its metadata:
    ``sync_file_range``, which commits no file-system journal (an ``fdatasync`` of a growing
    file does, every time: with 512 KB pieces, 416 journal commits for a 212 MB snapshot, each
    a flush of the disk the log shares). Not durable by itself: the file's ``fsync`` at the
    end is (``FileWriter.write_piece``). Where there is no ``sync_file_range``: ``fdatasync``."""
    if _SYNC_FILE_RANGE is not None:
        if _SYNC_FILE_RANGE(fd, offset, nbytes, _WRITE_AND_WAIT) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err))
    os.fdatasync(fd)


BLOCK = 4096  # bytes of a block in the file: its CRC-32 and BLOCK_DATA bytes of data
BLOCK_DATA = BLOCK - 4
# Blocks written per piece (a step of the save, then ``flush_range``): 512 KB. A log commit waits
# for at most one piece's write and sync (``StoreEnv.turn``).
PART_BLOCKS = 128

# (meta, size, blocks, crc, first (0)): the stored record, as ``layout.parse_snapshot`` gives it
Record = tuple[SnapshotMeta, int, int, int, int]


def blocks_for(size: int) -> int:
    return -(-size // BLOCK_DATA)


def fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotFiles:
    """The snapshot files of one store's directory: which are being written (``pending``, not
    yet named by the record) and the lock that orders a record's change with ``collect``."""

    def __init__(self, directory: pathlib.Path, hook: DamageHook | None = None) -> None:
        self.directory = directory
        # Where the readers of these files report damage (the store's: snapshot_check.py).
        self.hook = hook if hook is not None else DamageHook()
        # Held across a change of which file the record names (the switch) and across
        # ``collect``'s read of the record and its deletions: a file being switched to is never
        # seen as garbage.
        self.lock = threading.Lock()
        self.pending: set[str] = set()
        self._readers: weakref.WeakSet[FileSnapshot] = weakref.WeakSet()

    def names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.directory) if layout.is_snapshot_file_name(n))
        except OSError as exc:
            raise StorageError(f"cannot list {self.directory}: {exc.strerror}") from None

    def collect(self, env: StoreEnv) -> int:
        """Delete every snapshot file the stored record does not name and no save is writing;
        returns how many. A replaced snapshot's readers keep reading it (``FileSnapshot``)."""
        removed = 0
        with self.lock:
            named = env.read(lambda txn: named_file(env, txn))
            for name in self.names():
                if name == named or name in self.pending:
                    continue
                try:
                    os.unlink(self.directory / name)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StorageError(f"cannot remove {self.directory / name}: {exc}") from None
                removed += 1
        return removed

    def open(self, name: str, record: Record) -> FileSnapshot:
        reader = FileSnapshot(self.directory / name, record, self.hook)
        self._readers.add(reader)
        return reader

    def close_all(self) -> None:
        """Close every reader's descriptor (the store is closing): a reader still held (a
        stream's, the core's view) raises ``StorageError`` from then on."""
        for reader in list(self._readers):
            reader.close()


def named_file(env: StoreEnv, txn: Any) -> str | None:
    """The file the stored ``snapshot`` record names (None: none, or its data is in chunks)."""
    raw = txn.get(layout.KEY_SNAPSHOT, db=env.meta)
    if raw is None:
        return None
    return layout.snapshot_file(layout.decode_record(layout.KEY_SNAPSHOT, raw))


class FileWriter:
    """Writes one snapshot file in pieces (``write_piece``, any thread but the writer's is
    fine); the last piece syncs the file and its directory."""

    def __init__(
        self,
        files: SnapshotFiles,
        name: str,
        data: bytes,
        part_blocks: int,
        turn: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self.name = name
        self._turn = turn  # held while a piece is written and synced (``StoreEnv.turn``)
        self.path = files.directory / name
        self._data = memoryview(data)
        self._blocks = blocks_for(len(data))
        self._part = part_blocks
        self._written = 0  # blocks written and synced
        self._fd: int | None = None
        self.pieces = 0

    @property
    def blocks(self) -> int:
        return self._blocks

    def write_piece(self) -> bool:
        """Write and sync the next piece; True once the whole file is durable."""
        if self._fd is None:
            try:
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
                )
            except OSError as exc:
                fallback = f"cannot create {self.path}: {exc.strerror}"
                raise nospace.write_failure(self.path, exc, fallback) from None
        lo = self._written
        hi = min(self._blocks, lo + self._part)
        view = self._data
        piece = b"".join(
            layout.encode_chunk(i, view[i * BLOCK_DATA : (i + 1) * BLOCK_DATA])
            for i in range(lo, hi)
        )
        try:
            # The piece is written and synced while no log commit runs, so the two alternate
            # on the disk: a commit waits for at most one piece, not for a queue of them.
            with self._turn():
                written = 0
                while written < len(piece):
                    written += os.write(self._fd, piece[written:])
                flush_range(self._fd, lo * BLOCK, len(piece))
            self._written = hi
            self.pieces += 1
            if self._written < self._blocks:
                return False
            os.fsync(self._fd)  # the file's size and metadata
            self.close()
            fsync_dir(self.path.parent)  # its name: the record may name it from now on
        except OSError as exc:
            fallback = f"cannot write {self.path}: {exc.strerror}"
            raise nospace.write_failure(self.path, exc, fallback) from None
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileSnapshot:
    """A stored snapshot in a file, read on demand (``LogStore.stored_snapshot``): what
    ``StoredSnapshot`` is for chunks. The file is open from the start: once the record names
    another snapshot, this one still reads its (unlinked) file."""

    def __init__(self, path: pathlib.Path, record: Record, hook: DamageHook | None = None) -> None:
        self.meta, self._size, self._blocks, self.crc32, _ = record
        self._record = record
        self.path = path
        self._hook = hook
        if self._blocks != blocks_for(self._size):
            raise layout.Corrupt(
                f"snapshot at index {self.meta.index}: {self._blocks} blocks for {self._size} bytes"
            )
        # A file that is missing or of the wrong size is damage like a flipped bit: found
        # here, told by every read (``SnapshotDamaged``), so that a node that does not need
        # the snapshot's data to start (a persisted state past it) starts, and retakes it.
        self._problem: str | None = None
        self._fd: int | None = None
        self._closer: Any = None
        # Held by a read and by ``close``: a descriptor is never closed (and its number reused
        # by another file) under a read in another thread.
        self._io = threading.Lock()
        self._closed = False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._problem = f"snapshot file {path.name} is missing"
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc.strerror}") from None
        else:
            self._fd = fd
            self._closer = weakref.finalize(self, os.close, fd)
            expected = self._blocks * 4 + self._size
            actual = os.fstat(fd).st_size
            if actual != expected:
                self._problem = f"snapshot file {path.name}: {actual} bytes, not {expected}"
        self.touched = False

    def __len__(self) -> int:
        return self._size

    @property
    def detached(self) -> bool:
        return False

    @property
    def record(self) -> Record:
        return self._record

    def detach_if_readable(self) -> None:
        """Nothing to do: the open file stays readable after it is replaced."""

    def superseded_by(self, record: Record) -> None:
        """Nothing to do (see ``detach_if_readable``)."""

    def close(self) -> None:
        with self._io:
            self._closed = True
            self._fd = None
            if self._closer is not None:
                self._closer()

    @property
    def where(self) -> str:
        """This copy of the snapshot: its file (the name carries a token of its save)."""
        return str(self.path)

    def damaged(self, message: str) -> SnapshotDamaged:
        """The error for damage found in this file, reported to the store's hook first."""
        if self._hook is not None:
            self._hook.report(self.meta, self.where, message)
        return SnapshotDamaged(self.meta, message)

    def __getitem__(self, key: slice) -> bytes:
        """Bytes ``[lo, hi)``, every block's CRC checked: ``SnapshotDamaged`` (reported to
        the hook) on a mismatch, a short read or an I/O error."""
        lo, hi = slice_bounds(key, self._size)
        self.touched = True
        first, last = lo // BLOCK_DATA, (hi - 1) // BLOCK_DATA
        with self._io:
            # Both asked under the lock ``close`` takes (s13-review): a close between a check
            # of ``_closed`` and one of ``_fd`` made the read report damage for a closed store
            # (tests/storage/test_review_snapshot_close.py).
            if self._closed:
                raise StorageError(f"snapshot file {self.path.name} read after its store closed")
            if self._problem is not None or self._fd is None:
                raise self.damaged(f"corrupt snapshot file {self.path}: {self._problem}")
            if hi <= lo:
                return b""
            try:
                raw = os.pread(self._fd, (last - first + 1) * BLOCK, first * BLOCK)
            except OSError as exc:
                raise self.damaged(f"cannot read {self.path}: {exc.strerror}") from None
        parts = []
        for n in range(first, last + 1):
            at = (n - first) * BLOCK
            try:
                parts.append(layout.decode_chunk(n, raw[at : at + BLOCK]))
            except layout.Corrupt as exc:
                raise self.damaged(f"corrupt snapshot file {self.path}: {exc}") from None
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        start = lo - first * BLOCK_DATA
        out = data[start : start + (hi - lo)]
        if len(out) != hi - lo:
            raise self.damaged(f"corrupt snapshot file {self.path}: size mismatch")
        return out

    def read(self) -> bytes:
        """The whole data, its size and checksum verified."""
        data = self[0 : self._size]
        if zlib.crc32(data) != self.crc32:
            raise self.damaged(f"snapshot at index {self.meta.index}: checksum mismatch")
        return data
