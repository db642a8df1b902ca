"""A leader's snapshot staged while its chunks arrive (s13-scale; docs/state-at-scale.md).

A follower's check of the leader's snapshot (univrs/runtime/checking.py) stages it into a new
state environment in one walk (``sm_ingest``), which at 1,000,000 + 1,000,000 objects is
about 12 s of one core, and began only once the last chunk had arrived: the stream (4 to 10 s
at 1M) and the staging ran one after the other. A ``ChunkFeed`` lets the same walk run while
the chunks arrive: the runtime puts each chunk the core took (in order, the same bytes
objects the core holds) and a thread reads them as a file (``StateEnv.stage_feed``).

Nothing about what is accepted changes. The result is used only by the check of the last
chunk, only if the feed's bytes are exactly the data the core completed and verified
(``same_bytes``: every chunk compared with its place in the joined data), and it is the one
walk's result on those bytes: what ``StateEnv.stage`` would give for them (a snapshot the
one walk does not take, or any failure, leaves no result: the check then stages the joined
data as before, and that decides). The feed is one thread's reader; ``put``, ``end`` and
``stop`` come from another (the event loop's).
"""

from __future__ import annotations

import io
import queue
from collections.abc import Callable

from univrs.sm.snapshot_format import CheckStopped

__all__ = ["ChunkFeed"]

_END = b""  # put by ``end``: no more chunks
_STOP = object()  # put by ``stop``: the reader raises ``CheckStopped``
READ_BUFFER = 1 << 20  # the buffered reader's size (``reader``)


class ChunkFeed(io.RawIOBase):
    """Chunks of one snapshot, put in order by one thread, read as a stream by another."""

    def __init__(self, total_size: int) -> None:
        super().__init__()
        self.total_size = total_size
        self.fed = 0  # bytes put so far (the offset the next chunk must have)
        self.chunks: list[bytes] = []  # what was put, for ``same_bytes`` (the core's objects)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._view = memoryview(b"")
        self._ended = False
        self.stopped = False

    # ---- the putting side (the event loop) ----------------------------------------------

    def put(self, data: bytes) -> bool:
        """The next chunk; False (nothing put) past the announced size or after ``end``."""
        if self._ended or self.fed + len(data) > self.total_size:
            return False
        if data:
            self.chunks.append(data)
            self.fed += len(data)
            self._queue.put(data)
        return True

    def end(self) -> None:
        """No more chunks: the reader sees the end of the data."""
        if not self._ended:
            self._ended = True
            self._queue.put(_END)

    def stop(self) -> None:
        """The reader raises ``CheckStopped`` at its next read (or poll: ``should_stop``)."""
        self.stopped = True
        self._queue.put(_STOP)

    def should_stop(self) -> bool:
        return self.stopped

    # ---- the reading side (the staging's thread) ----------------------------------------

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        out = memoryview(buffer)  # type: ignore[arg-type]
        while not self._view:
            item = self._queue.get()
            if item is _STOP:
                self._queue.put(_STOP)  # and at every later read
                raise CheckStopped
            assert isinstance(item, bytes)
            if not item:
                self._queue.put(_END)  # the end, again for any later read
                return 0
            self._view = memoryview(item)
        n = min(len(out), len(self._view))
        out[:n] = self._view[:n]
        self._view = self._view[n:]
        return n

    def reader(self) -> io.BufferedReader:
        """The stream to decode (a buffered reader: the decoder's small reads stay in C)."""
        return io.BufferedReader(self, READ_BUFFER)

    def complete(self) -> bool:
        """Were all the announced bytes put, and the end?"""
        return self._ended and self.fed == self.total_size

    def same_bytes(self, data: bytes) -> bool:
        """Are the bytes put exactly ``data`` (compared in place, no copy)?"""
        if not self.complete() or len(data) != self.fed:
            return False
        view, at = memoryview(data), 0
        for chunk in self.chunks:
            if view[at : at + len(chunk)] != chunk:
                return False
            at += len(chunk)
        return True


def at_end(stream: io.BufferedReader, feed: ChunkFeed) -> Callable[[], bool]:
    """``sm_stream.walk_stream``'s end check for a feed: nothing left to read, all of it put."""
    return lambda: stream.read(1) == b"" and feed.complete()
