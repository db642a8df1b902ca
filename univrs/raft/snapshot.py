"""Snapshot streaming state (dissertation 5.3): the leader's sender and the follower's receiver.

Theory of operation
-------------------
A snapshot travels as InstallSnapshot chunks of at most ``snapshot_chunk_bytes`` bytes, each
naming its byte ``offset``; the last one has ``done``. ``checksum`` (zlib.crc32) and
``total_size`` always cover the whole snapshot, so the follower verifies it only once complete.

Sender (leader, one per follower being streamed to): a pipeline like the log's REPLICATE state,
with at most ``window`` chunks unacknowledged. The follower answers every chunk with
``InstallSnapshotResponse(offset = bytes it holds)``:

- success: ``offset`` bytes are confirmed (``acked``); ``offset == total_size`` means installed;
- failure: the chunk was out of order (or the follower lost its partial data, or the complete
  data failed verification: then ``offset`` is 0). The follower holds ``offset`` bytes, so the
  stream *rewinds* there. Failures caused by chunks sent before the last rewind would rewind
  again to the same place; to keep one loss from multiplying into a storm of resends the
  sender rewinds to a given offset at most once (``_rewound_to``), unless the follower reports
  holding *less* than it confirmed before (it lost data: always rewind).
- silence: if nothing is confirmed for ``resume_ticks`` ticks (a dropped connection, a lost
  chunk or ack), the stream resumes from ``acked``. (So does a verification failure reported
  before any byte was confirmed: "I hold 0" then looks like an out-of-order answer.)

Invariants: ``0 <= acked <= total_size``; the offsets in ``_inflight`` (chunk end offsets sent
since the last rewind) strictly increase and are ``> acked``; ``acked <= next``, except right
after a rewind forward (``next == acked`` then).

Receiver (follower): accepts the chunk whose offset equals the bytes it holds for the same
snapshot (same meta, size and checksum), whatever the leader; anything else is answered with
the bytes it holds. Nothing of the node's state changes until the data is complete and verified.
"""

from __future__ import annotations

import collections
import zlib
from typing import Final, Protocol

import attrs

from univrs.raft.messages import InstallSnapshot, SnapshotMeta


class SnapshotUnreadable(Exception):
    """A ``SnapshotSource`` could not give the bytes asked for: the stored snapshot is damaged
    (a checksum mismatch, a short or missing file) or its read failed. Raised by the source's
    ``__getitem__``; the core then stops offering that snapshot (``snapshot_damaged``) instead
    of failing its step, and the runtime, told by its storage, takes a new one
    (docs/storage.md, "Guarantees")."""


class SnapshotSource(Protocol):
    """Snapshot data the core does not hold in memory: the runtime's stored snapshot, read on
    demand when a chunk is sent (univrs/storage/stored_snapshot.py). Its ``crc32`` is the
    checksum of the whole data, known without reading it. A slice that cannot be read raises
    ``SnapshotUnreadable`` (never anything else for damage or an I/O error)."""

    crc32: int

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> bytes: ...


SnapshotData = bytes | SnapshotSource


@attrs.define(eq=False)
class Snapshot:
    """The newest snapshot this node knows: its meta and data (checksum computed on demand;
    the data may be bytes or a ``SnapshotSource``: only its length and slices are used)."""

    meta: SnapshotMeta
    data: SnapshotData
    _checksum: int | None = None

    @property
    def checksum(self) -> int:
        if self._checksum is None:
            data = self.data
            self._checksum = zlib.crc32(data) if isinstance(data, bytes) else data.crc32
        return self._checksum

    @property
    def size(self) -> int:
        return len(self.data)


@attrs.frozen(kw_only=True, slots=True)
class Chunk:
    """One chunk to send: ``data`` at byte ``offset``; ``done`` marks the last one."""

    offset: int
    data: bytes
    done: bool


class AckOutcome:
    """What a response meant to the sender (plain constants, compared by identity)."""

    IGNORED: Final = "ignored"  # stale or duplicate: nothing changed
    PROGRESS: Final = "progress"  # more bytes confirmed, or a rewind: send what the window allows
    DONE: Final = "done"  # the follower installed the snapshot (or already had its entries)


@attrs.define(eq=False)
class SnapshotSender:
    """The leader's stream of one snapshot to one follower (see the module docstring)."""

    snapshot: Snapshot
    chunk_bytes: int
    window: int
    acked: int = 0  # bytes the follower confirmed holding
    next: int = 0  # offset of the next chunk to send
    final_sent: bool = False  # the ``done`` chunk was sent since the last rewind
    idle: int = 0  # ticks since the last confirmation (or rewind)
    _rewound_to: int = 0  # the offset of the last rewind (the stream starts as one to 0)
    _inflight: collections.deque[int] = attrs.field(factory=collections.deque)

    @property
    def meta(self) -> SnapshotMeta:
        return self.snapshot.meta

    @property
    def inflight(self) -> int:
        """Chunks sent and not yet confirmed."""
        return len(self._inflight)

    def take_chunks(self) -> list[Chunk]:
        """The chunks the window allows now (marked sent)."""
        out: list[Chunk] = []
        data = self.snapshot.data
        total = len(data)
        while not self.final_sent and len(self._inflight) < self.window:
            lo = self.next
            hi = min(lo + self.chunk_bytes, total)
            done = hi == total
            out.append(Chunk(offset=lo, data=data[lo:hi], done=done))
            self.next = hi
            self.final_sent = done
            assert not self._inflight or self._inflight[-1] < hi or total == 0
            self._inflight.append(hi)
        return out

    def on_response(self, offset: int, success: bool) -> str:
        """Handle the follower's answer; returns an ``AckOutcome`` constant."""
        total = self.snapshot.size
        if success and offset >= total:
            return AckOutcome.DONE
        if offset > total:
            return AckOutcome.IGNORED  # not an answer about this snapshot's bytes
        if success:
            if offset <= self.acked:
                return AckOutcome.IGNORED  # a reordered, older confirmation
            self._confirm(offset)
            return AckOutcome.PROGRESS
        # Failure: the follower holds exactly ``offset`` bytes of this snapshot.
        if offset < self.acked:
            self.rewind(offset)  # it lost data (restart, verification failure): start there
            return AckOutcome.PROGRESS
        moved = offset > self.acked
        if moved:
            self._confirm(offset)
        if offset != self.next and offset > self._rewound_to:
            self.rewind(offset)
            return AckOutcome.PROGRESS
        return AckOutcome.PROGRESS if moved else AckOutcome.IGNORED

    def tick(self, resume_ticks: int) -> bool:
        """One tick without news; True if the stream resumed from ``acked`` (send again)."""
        self.idle += 1
        if self.idle < resume_ticks:
            return False
        self.rewind(self.acked)
        return True

    def rewind(self, offset: int) -> None:
        """Send again from ``offset`` (the follower holds exactly that many bytes)."""
        self.acked = offset
        self.next = offset
        self.final_sent = False
        self.idle = 0
        self._rewound_to = offset
        self._inflight.clear()

    def _confirm(self, offset: int) -> None:
        self.acked = offset
        self.idle = 0
        if self.next < offset:
            # Chunks sent before a rewind arrived after all: continue after them.
            self.next = offset
        items = self._inflight
        while items and items[0] <= offset:
            items.popleft()


@attrs.define(eq=False)
class SnapshotReceiver:
    """The follower's partial copy of one snapshot being streamed to it."""

    meta: SnapshotMeta
    total_size: int
    checksum: int
    _chunks: list[bytes] = attrs.field(factory=list)
    received: int = 0  # bytes held, in order from offset 0
    # completed_by's verified result and the last chunk it was joined with: verified() reuses
    # it when exactly that chunk is accepted, so the whole data is never joined twice.
    _joined: tuple[bytes, bytes] | None = None
    # zlib.crc32 of the chunks held, carried as each is accepted (s13-scale): completing the
    # snapshot then hashes only its last chunk, not the whole data (212 MB at 1M objects,
    # about a second of the core's wait for its check: docs/state-at-scale.md).
    _crc: int = 0

    @classmethod
    def for_message(cls, msg: InstallSnapshot) -> SnapshotReceiver:
        return cls(meta=msg.meta, total_size=msg.total_size, checksum=msg.checksum)

    def same_snapshot(self, msg: InstallSnapshot) -> bool:
        return (
            self.meta == msg.meta
            and self.total_size == msg.total_size
            and self.checksum == msg.checksum
        )

    def accept(self, data: bytes) -> bool:
        """Append the next chunk; False if it would exceed the announced size (corrupt)."""
        if self.received + len(data) > self.total_size:
            return False
        if self._joined is not None and data is not self._joined[1]:
            self._joined = None
        if data:
            self._chunks.append(data)
            self.received += len(data)
            self._crc = zlib.crc32(data, self._crc)
        return True

    def completes(self, msg: InstallSnapshot) -> bool:
        """Is ``msg`` the chunk that finishes this snapshot (in order, the announced size
        reached, marked done)? Cheap: nothing is joined or hashed."""
        return (
            msg.done
            and self.same_snapshot(msg)
            and msg.offset == self.received
            and self.received + len(msg.data) == self.total_size
        )

    def completed_by(self, msg: InstallSnapshot) -> bytes | None:
        """The complete, checksum-verified data if ``msg`` is the chunk that finishes this
        snapshot (in order, the announced size reached, marked done); None otherwise. A
        query: what is held does not change; the joined data is kept for ``verified`` once
        exactly ``msg.data`` is accepted (the same bytes object, not a second copy)."""
        if not self.completes(msg) or zlib.crc32(msg.data, self._crc) != self.checksum:
            return None
        data = b"".join([*self._chunks, msg.data])
        self._joined = (data, msg.data)
        return data

    def verified(self) -> bytes | None:
        """The complete data if its size and checksum match what the leader announced."""
        if self.received != self.total_size:
            return None
        if self._joined is not None:  # completed_by joined and checked these very chunks
            data = self._joined[0]
            self._chunks, self._joined = [data], None
            return data
        if self._crc != self.checksum:  # the checksum of every chunk held, in order
            return None
        data = b"".join(self._chunks)
        self._chunks = [data]
        return data
