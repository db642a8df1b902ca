"""Damage to the stored snapshot: how a read reports it, and the scrub that looks for it.

Why. On the LMDB state backend a node resumes from ``state.lmdb`` without reading its stored
snapshot, so a snapshot file (or chunk) damaged at rest was found only when the node first
streamed it to a follower, and that read's ``StorageError`` stopped the node (red team,
session 11). Now:

* a read of the stored snapshot that finds damage (a CRC mismatch, a short file, a missing
  chunk, an I/O error) raises ``SnapshotDamaged``: a ``StorageError`` for every caller that
  treats it as one (a start-up restore, a backup), and a ``SnapshotUnreadable`` for the core,
  which stops offering that snapshot instead of failing its step (univrs/raft/
  snapshot_stream.py). Before it raises, the reader tells the store's ``DamageHook``: the
  runtime's snapshotter listens there, logs the damage once at ERROR and stores a new
  snapshot taken from its state (univrs/runtime/snapshotter.py);
* ``Scrub`` reads a stored snapshot whole, a piece per ``step`` (the runtime runs each step in a
  worker thread and paces them), checking every block's CRC and the whole data's CRC-32: the
  damage is found after start, before a follower needs the snapshot.

``slice_bounds`` is the slice rule both readers (``FileSnapshot``, ``StoredSnapshot``) share.

Counted (s13-small). The hook counts every report by what the read was for (``FOUND_BY``:
``stream``, a read for a follower's stream, the default; ``scrub``; ``start``, the restore of
a node that starts from its snapshot; ``backup``), whether or not anyone listens: the node
exports the counts as ``univrs_snapshot_damage_total{found_by}`` (univrs/runtime/metrics.py,
docs/operations.md "Metrics"). A reader that is not a stream says what it is for with
``reading_for``, around its reads in the thread that makes them.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Protocol

from univrs.errors import StorageError
from univrs.raft.messages import SnapshotMeta
from univrs.raft.snapshot import SnapshotUnreadable

# Bytes a scrub reads per step (one read in a worker thread): 1 MiB.
SCRUB_PIECE = 1 << 20


class SnapshotDamaged(StorageError, SnapshotUnreadable):
    """The stored snapshot at ``meta`` could not be read back intact (``str``: what was found,
    and where)."""

    def __init__(self, meta: SnapshotMeta, message: str) -> None:
        super().__init__(message)
        self.meta = meta


def slice_bounds(key: object, size: int) -> tuple[int, int]:
    """``(lo, hi)`` of a contiguous slice of data of ``size`` bytes (``hi <= lo``: empty);
    TypeError for anything but a slice with no step (or step 1)."""
    if not isinstance(key, slice) or key.step not in (None, 1):
        raise TypeError("a stored snapshot is read by contiguous slices")
    lo, hi, _ = key.indices(size)
    return lo, hi


Listener = Callable[[SnapshotMeta, str, str], None]

# What a read of the stored snapshot is for: the label of the damage it finds (see the module
# docstring). Every value is a label set of the metric from the start (rate() sees 0).
FOUND_BY = ("stream", "scrub", "start", "backup")
_reading_for: contextvars.ContextVar[str] = contextvars.ContextVar(
    "univrs_snapshot_reading_for", default="stream"
)


@contextlib.contextmanager
def reading_for(what: str) -> Iterator[None]:
    """The reads of the stored snapshot inside are for ``what`` (one of ``FOUND_BY``): damage
    they find is counted under it. Set in the thread that reads (a context variable)."""
    if what not in FOUND_BY:
        raise ValueError(f"unknown snapshot reader {what!r}")
    token = _reading_for.set(what)
    try:
        yield
    finally:
        _reading_for.reset(token)


class DamageHook:
    """Where the readers of one store report damage: ``report(meta, where, message)`` counts
    it (``counts``, by what the read was for) and calls the listener (the runtime's
    snapshotter; none: nothing but the exception and the count). ``where`` names the stored
    snapshot's copy (its file, or its chunks' record), so one damaged copy is told apart from
    a new snapshot at the same index. Called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listener: Listener | None = None
        self._counts = dict.fromkeys(FOUND_BY, 0)

    def counts(self) -> dict[str, int]:
        """Reports so far, by what the read that found the damage was for (``FOUND_BY``)."""
        with self._lock:
            return dict(self._counts)

    def listen(self, listener: Listener | None) -> None:
        with self._lock:
            self._listener = listener

    def report(self, meta: SnapshotMeta, where: str, message: str) -> None:
        with self._lock:
            self._counts[_reading_for.get()] += 1
            listener = self._listener
        if listener is not None:
            listener(meta, where, message)


class Readable(Protocol):
    """What a scrub reads: ``FileSnapshot`` or ``StoredSnapshot``."""

    meta: SnapshotMeta
    crc32: int

    @property
    def where(self) -> str: ...

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> bytes: ...

    def damaged(self, message: str) -> SnapshotDamaged: ...


class Scrub:
    """One read of a stored snapshot, whole, in steps of ``piece`` bytes: every block's (or
    chunk's) CRC checked by the reader, and the whole data's CRC-32 against the record's at
    the end. ``step`` raises ``SnapshotDamaged`` (reported to the hook by the reader) or
    returns True once the whole snapshot was read intact. Each step is one ``pread`` (or one
    read transaction) of ``piece`` bytes: run it in a worker thread."""

    def __init__(self, source: Readable, *, piece: int = SCRUB_PIECE) -> None:
        if piece < 1:
            raise ValueError(f"piece must be >= 1, got {piece}")
        self.source = source
        self.meta = source.meta
        self._piece = piece
        self._size = len(source)
        self._crc = 0
        self.read = 0  # bytes read and checked so far

    @property
    def done(self) -> bool:
        return self.read >= self._size

    def step(self) -> bool:
        """Read and check the next piece; True when the whole snapshot was checked."""
        with reading_for("scrub"):
            if self.read < self._size:
                hi = min(self._size, self.read + self._piece)
                data = self.source[self.read : hi]
                self._crc = zlib.crc32(data, self._crc)
                self.read = hi
            if self.read < self._size:
                return False
            if self._crc != self.source.crc32:
                raise self.source.damaged(
                    f"snapshot at index {self.meta.index} ({self.source.where}): the data's "
                    f"checksum is {self._crc:08x}, its record says {self.source.crc32:08x}"
                )
            return True

    def run(self) -> None:
        """All the steps at once (offline tools and tests)."""
        while not self.step():
            pass
