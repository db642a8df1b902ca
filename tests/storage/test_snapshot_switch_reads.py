"""The switch of a save in parts (univrs/storage/snapshot_parts.py) is an item of the storage
writer's queue, one small transaction: it must not read a whole snapshot.

Found by the session-12 review (s12-review): when the old snapshot is in chunks (one installed
from a leader) and a stream to a follower has read from it, the switch step reads that old
snapshot whole into memory (``_detach_streams(keep=None)``) before it hands it over, in the
writer's thread: 0.9-4 s for 100 MB on the shared test machine (3 runs), every append of the
leader waiting meanwhile. The hand-over (``superseded_by``) already keeps it readable until the
``switched`` step, which detaches it off the writer's queue before the prune; without the
switch's detach the storage and runtime snapshot tests pass and the switch takes 8 ms. In
s12-scrub's files (streams' reads): fixed after its merge (the switch step no longer calls
``_detach_streams(keep=None)``)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from univrs.storage import LogStore
from univrs.storage.stored_snapshot import StoredSnapshot

from .helpers import Opener, at, store_with_snapshot


def test_the_switch_does_not_read_a_streamed_old_snapshot_whole(open_store: Opener) -> None:
    rng = random.Random(9)
    old, new = rng.randbytes(200_000), rng.randbytes(100_000)
    store: LogStore = store_with_snapshot(open_store, old, 12, entries=40)  # in chunks
    held = store.stored_snapshot()
    assert held is not None and held[0:10] == old[:10]  # a stream of it has begun
    saving = store.snapshot_parts(at(30), new, part_chunks=7, part_blocks=7)
    while not saving.at_switch:
        assert not saving.step()
    assert not saving.step() and saving.stored is True  # the switch
    assert held[1000:150_000] == old[1000:150_000]  # still read, from its chunks
    assert not held.detached  # not read whole by the switch (a writer item)
    while not saving.step():
        pass
    assert held.detached and held[0:200_000] == old  # read whole off the queue, before the prune


class _CountedReads:
    """Bytes the store's chunk snapshots (``StoredSnapshot``) read from ``data.mdb``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        read = StoredSnapshot._read

        def counted(snapshot: StoredSnapshot, txn: Any, lo: int, hi: int) -> bytes:
            out = read(snapshot, txn, lo, hi)
            self.bytes += len(out)
            return out

        monkeypatch.setattr(StoredSnapshot, "_read", counted)


def test_an_install_switch_reads_no_old_chunk_snapshot_and_its_streams_read_on(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s13-small: ``InstallFile.switch`` (an item of the writer's queue) read a streamed old
    chunk snapshot whole (a legacy store's leader snapshot; seconds at 100 MB), because the
    next own save's ``prune-before`` deleted its chunks without detaching its streams. Now the
    switch hands the streams over (they read the intact chunks on, through later installs
    too), and the save detaches them off the queue before its first prune."""
    rng = random.Random(13)
    old = rng.randbytes(200_000)
    store: LogStore = store_with_snapshot(open_store, old, 12, entries=40)  # in chunks
    held = store.stored_snapshot()
    assert held is not None and held[0:10] == old[:10]  # a stream of it has begun
    counted = _CountedReads(monkeypatch)
    for index in (20, 25):  # two installs in a row, no own save between
        install = store.install_file(at(index), rng.randbytes(50_000), part_blocks=3)
        install.write_file()
        before = counted.bytes
        install.switch()
        assert counted.bytes == before, "the switch read the old snapshot"
        assert not held.detached
        assert held[1000:150_000] == old[1000:150_000]  # its chunks, still there
    new = rng.randbytes(60_000)
    saving = store.snapshot_parts(at(30), new, part_chunks=7, part_blocks=7)
    phases = []
    while True:
        before, in_writer = counted.bytes, saving.in_writer
        done = saving.step()
        phases.append((in_writer, counted.bytes - before))
        if done:
            break
    assert saving.stored is True
    assert [read for in_writer, read in phases if in_writer] == [0] * sum(w for w, _ in phases)
    assert sum(w for w, _ in phases) > 1  # prune-before's steps ran (the chunks were garbage)
    assert held.detached and held[0:200_000] == old  # read whole off the queue, then pruned
    assert store.load_snapshot() == (at(30), new)
