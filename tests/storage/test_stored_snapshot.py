"""The stored snapshot read on demand (``LogStore.stored_snapshot``,
univrs/storage/stored_snapshot.py): what the core streams to followers without holding the
snapshot's bytes whole."""

from __future__ import annotations

import random
import zlib

import pytest

from univrs.errors import StorageError
from univrs.raft.snapshot import Snapshot, SnapshotSender
from univrs.storage import layout
from univrs.storage.stored_snapshot import StoredSnapshot

from .helpers import Opener, at, store_with_snapshot


def test_slices_are_the_datas(open_store: Opener) -> None:
    data = random.Random(1).randbytes(300_000)  # many page-sized chunks
    store = store_with_snapshot(open_store, data)
    stored = store.stored_snapshot()
    assert isinstance(stored, StoredSnapshot)
    assert stored.meta == at(12) and len(stored) == len(data)
    assert stored.crc32 == zlib.crc32(data)
    rng = random.Random(2)
    for _ in range(200):
        lo = rng.randrange(0, len(data))
        hi = rng.randrange(lo, min(len(data), lo + 70_000) + 1)
        assert stored[lo:hi] == data[lo:hi]
    assert stored[0 : len(data) + 10] == data and stored[5:5] == b""
    assert stored.read() == data


def test_the_core_streams_it_like_the_bytes(open_store: Opener) -> None:
    """A sender of the stored snapshot sends the same chunks, size and checksum as a sender
    of its bytes."""
    data = random.Random(3).randbytes(100_000)
    store = store_with_snapshot(open_store, data)
    stored = store.stored_snapshot()
    assert stored is not None
    chunks = []
    for snapshot in (Snapshot(meta=at(12), data=data), Snapshot(meta=at(12), data=stored)):
        sender = SnapshotSender(snapshot=snapshot, chunk_bytes=7_000, window=100)
        chunks.append([(c.offset, c.data, c.done) for c in sender.take_chunks()])
        assert snapshot.checksum == zlib.crc32(data) and snapshot.size == len(data)
    assert chunks[0] == chunks[1] and chunks[0][-1][2]


def test_an_empty_snapshot(open_store: Opener) -> None:
    store = store_with_snapshot(open_store, b"")
    stored = store.stored_snapshot()
    assert stored is not None and len(stored) == 0 and stored.read() == b""
    assert stored[0:10] == b""


def test_a_stream_of_a_replaced_snapshot_goes_on_from_memory(open_store: Opener) -> None:
    """Replaced by a newer snapshot while a stream reads it: detached (its bytes read into
    memory before the replacement), the stream sends the old bytes to its end. One that was
    never read from is not detached and refuses to read (no stream holds it)."""
    old, new = random.Random(4).randbytes(50_000), random.Random(5).randbytes(40_000)
    store = store_with_snapshot(open_store, old)
    streamed, idle = store.stored_snapshot(), store.stored_snapshot()
    assert streamed is not None and idle is not None
    assert streamed[0:1000] == old[0:1000]
    store.save_snapshot(at(15), new)
    assert streamed.detached and not idle.detached
    assert streamed[1000:50_000] == old[1000:]
    with pytest.raises(StorageError, match="no longer stored"):
        idle[0:10]
    newer = store.stored_snapshot()
    assert newer is not None and newer.read() == new


def test_a_corrupt_chunk_is_an_error(open_store: Opener) -> None:
    data = bytes(range(256)) * 200
    store = store_with_snapshot(open_store, data)
    stored = store.stored_snapshot()
    assert stored is not None

    def flip(txn: object) -> None:
        key = layout.index_key(1)
        raw = bytearray(txn.get(key, db=store._env.snap))  # type: ignore[attr-defined]
        raw[10] ^= 0xFF
        txn.put(key, bytes(raw), db=store._env.snap)  # type: ignore[attr-defined]

    store._env.write(flip)
    assert stored[0:10] == data[0:10]  # chunk 0 is intact
    with pytest.raises(StorageError):
        stored[0 : len(data)]
    with pytest.raises(StorageError):
        stored.read()
