"""A node's own snapshot stored without holding the log's writer (``LogStore.snapshot_parts``,
univrs/storage/snapshot_parts.py and snapshot_file.py): its data in a file of its own written
in steps off the writer's queue, only its record (and bounded deletes) in the log's
transactions; the same stored snapshot as ``save_snapshot``, the log's appends written between
the steps, the old snapshot whole until the switch, a crash at any step leaving one whole
snapshot, and a snapshot installed meanwhile winning."""

from __future__ import annotations

import os
import pathlib
import random

import pytest

from univrs.errors import StorageError
from univrs.storage import LogStore, layout, snapshot_file
from univrs.storage.snapshot_parts import SnapshotParts

from .helpers import (
    Opener,
    at,
    count_written,
    make_entries,
    record_syncs,
    snapshot_files,
    snapshot_keys,
    store_with_snapshot,
)

PART = 7  # blocks per step (and chunk deletes): a few hundred KB take many steps


def _store(open_store: Opener, data: bytes, index: int = 12) -> LogStore:
    return store_with_snapshot(open_store, data, index, entries=40)


def _run(saving: SnapshotParts) -> int:
    steps = 0
    while not saving.step():
        steps += 1
    return steps + 1


def test_stores_what_save_snapshot_stores(open_store: Opener) -> None:
    rng = random.Random(1)
    old, new = rng.randbytes(100_000), rng.randbytes(150_000)
    store = _store(open_store, old)
    saving = store.snapshot_parts(at(30), new, part_chunks=PART, part_blocks=PART)
    steps = _run(saving)
    assert saving.stored is True
    blocks = snapshot_file.blocks_for(len(new))
    assert steps > blocks // PART  # one bounded piece per step
    assert store.load_snapshot() == (at(30), new)
    stored = store.stored_snapshot()
    assert stored is not None and stored.read() == new and stored[1000:90_000] == new[1000:90_000]
    assert stored[0:1] == new[0:1] and stored[149_999:150_000] == new[-1:]
    assert store.first_index() == 1 and store.last_index() == 40  # the log is kept (compact trims)
    assert snapshot_keys(store) == []  # the old chunks are gone
    assert len(snapshot_files(store)) == 1
    # Another one replaces it (the old file removed), and a reopened store reads it.
    again = store.snapshot_parts(at(35), old, part_chunks=PART, part_blocks=PART)
    _run(again)
    assert again.stored is True and store.load_snapshot() == (at(35), old)
    assert len(snapshot_files(store)) == 1
    store.close()
    reopened = open_store()
    assert reopened.load_snapshot() == (at(35), old)
    fresh = reopened.stored_snapshot()
    assert fresh is not None and fresh.read() == old


def test_no_writer_item_holds_snapshot_data(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps the runtime runs in the storage writer's queue (``in_writer``; every step,
    on a save without it) put no snapshot data in the log's environment: the largest put in
    any of their transactions is the record (a few hundred bytes). Counted, not timed. Fails
    on the tenth increment's save in parts, whose steps put 2 MB parts of chunks (here: the
    whole 300 KB in parts of ``PART_CHUNKS``)."""
    rng = random.Random(11)
    old, new = rng.randbytes(200_000), rng.randbytes(300_000)
    store = _store(open_store, old)
    written = count_written(monkeypatch)
    saving = store.snapshot_parts(at(30), new)
    in_writer: list[int] = []
    while True:
        queued = getattr(saving, "in_writer", True)
        before = len(written)
        done = saving.step()
        if queued:
            in_writer.extend(written[before:])
        if done:
            break
    assert saving.stored is True and store.load_snapshot() == (at(30), new)
    assert in_writer and max(in_writer) <= 1024, in_writer


def test_the_file_is_durable_before_the_record_names_it(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order of the syncs: every piece of the file, the file and its directory entry are
    synced before the switch's transaction stores the record naming it. Each piece is written
    and flushed holding the log environment's write lock (``StoreEnv.turn``): the log's
    commits and the pieces alternate on the disk."""
    rng = random.Random(12)
    store = _store(open_store, rng.randbytes(20_000))
    events = record_syncs(monkeypatch, store)  # each piece flushed holding the write lock
    saving = store.snapshot_parts(at(30), rng.randbytes(50_000), part_blocks=PART)
    while not saving.at_switch:
        assert not saving.step()
    assert saving.stored is None and store.snapshot_meta() == at(12)
    pieces = -(-snapshot_file.blocks_for(50_000) // PART)
    # each piece's data flushed, then the file fsynced (data, size) and its directory entry ...
    assert events == ["piece"] * pieces + ["fsync", "dir"], events
    # ... and only then the switch stores the record naming it
    assert not saving.step() and saving.stored is True and store.snapshot_meta() == at(30)


def test_appends_go_on_between_the_steps_and_the_old_snapshot_stays_until_the_switch(
    open_store: Opener,
) -> None:
    rng = random.Random(2)
    old, new = rng.randbytes(60_000), rng.randbytes(60_000)
    store = _store(open_store, old)
    saving = store.snapshot_parts(at(30), new, part_chunks=PART, part_blocks=PART)
    index = 41
    while True:
        done = saving.step()
        if done:
            break
        if saving.stored is None:
            assert store.load_snapshot() == (at(12), old)  # still the stored one, whole
        store.append(hard_state=None, truncate_from=None, entries=make_entries(index, index))
        index += 1
    assert saving.stored is True
    assert store.load_snapshot() == (at(30), new)
    assert store.last_index() == index - 1 and store.term(index - 1) == 1


@pytest.mark.parametrize("first_from_file", [False, True])
@pytest.mark.parametrize("stop_after", range(1, 17))
def test_a_crash_at_any_step_leaves_one_whole_snapshot(
    open_store: Opener, stop_after: int, first_from_file: bool
) -> None:
    """The process dies after ``stop_after`` steps (the store closed with nothing more
    written): the reopened store holds the old snapshot or the new one, whole, and no garbage
    (no file it does not name: the start removes them); the next save leaves none either.
    The old snapshot is in chunks (installed from the leader) or in a file (the node's own)."""
    rng = random.Random(stop_after)
    old, new, later = rng.randbytes(40_000), rng.randbytes(50_000), rng.randbytes(30_000)
    store = _store(open_store, old)
    if first_from_file:
        _run(store.snapshot_parts(at(20), old))
    before = store.snapshot_meta()
    # pieces of 3 blocks and deletes of 3 chunks: 5 file steps, 4 prune steps from chunks
    saving = store.snapshot_parts(at(30), new, part_chunks=3, part_blocks=3)
    for _ in range(stop_after):
        if saving.step():
            break
    switched = saving.stored is True
    store.close()
    store = open_store()
    assert store.load_snapshot() == ((at(30), new) if switched else (before, old))
    stored = store.stored_snapshot()
    assert stored is not None and stored.read() == (new if switched else old)
    named = 1 if switched or first_from_file else 0
    assert len(snapshot_files(store)) == named  # a file the record does not name is gone
    saving = store.snapshot_parts(at(38), later, part_chunks=PART, part_blocks=PART)
    _run(saving)
    assert saving.stored is True and store.load_snapshot() == (at(38), later)
    assert snapshot_keys(store) == [] and len(snapshot_files(store)) == 1  # no garbage left


def test_flush_range_writes_the_data(tmp_path: pathlib.Path) -> None:
    """``flush_range`` (``sync_file_range`` on Linux, else ``fdatasync``) takes a file's range
    and leaves the data in it."""
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 10_000)
        snapshot_file.flush_range(fd, 4096, 5904)
        snapshot_file.flush_range(fd, 0, 10_000)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 10_000


def test_a_file_cut_short_by_a_crash_is_garbage(open_store: Opener) -> None:
    """A crash while a piece is written leaves a file of any length the record never named:
    removed at the next start; the old snapshot is whole."""
    rng = random.Random(5)
    old = rng.randbytes(30_000)
    store = _store(open_store, old)
    torn = store.path / layout.snapshot_file_name(at(30), "0badf00d")
    torn.write_bytes(rng.randbytes(12_345))
    store.close()
    store = open_store()
    assert not torn.exists() and store.load_snapshot() == (at(12), old)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_a_snapshot_installed_meanwhile_wins(open_store: Opener, steps: int) -> None:
    """Installed while the file is written (1, 2 steps) or just before the switch (3)."""
    rng = random.Random(4)
    old, new, leaders = rng.randbytes(40_000), rng.randbytes(50_000), rng.randbytes(20_000)
    store = _store(open_store, old)
    saving = store.snapshot_parts(at(30), new, part_chunks=PART, part_blocks=PART)
    for _ in range(steps):
        assert not saving.step()
    assert saving.at_switch == (steps == 3)
    store.save_snapshot(at(60), leaders)  # the leader's, in one transaction
    _run(saving)
    assert saving.stored is False
    assert store.load_snapshot() == (at(60), leaders)
    assert snapshot_files(store) == []  # its file is removed
    # The next save goes on from the leader's snapshot.
    nxt = store.snapshot_parts(at(61), old, part_chunks=PART, part_blocks=PART)
    _run(nxt)
    assert nxt.stored is True and store.load_snapshot() == (at(61), old)
    assert snapshot_keys(store) == [] and len(snapshot_files(store)) == 1


def test_an_install_replacing_a_file_snapshot_removes_its_file(open_store: Opener) -> None:
    rng = random.Random(6)
    store = _store(open_store, rng.randbytes(10_000))
    own = rng.randbytes(30_000)
    _run(store.snapshot_parts(at(30), own))
    held = store.stored_snapshot()  # a stream of it (the core's)
    assert held is not None and len(snapshot_files(store)) == 1
    store.save_snapshot(at(50), b"leader's")
    assert snapshot_files(store) == [] and store.load_snapshot() == (at(50), b"leader's")
    assert held[0:30_000] == own  # still read, through its open file


def test_the_old_snapshot_stays_readable_until_the_core_holds_the_new_one(
    open_store: Opener,
) -> None:
    """The core holds the old StoredSnapshot (untouched: nothing streamed it yet) from the
    switch until the runtime hands it the new one; a follower may need a snapshot meanwhile.
    The old one here is in chunks (the first save after an install)."""
    rng = random.Random(7)
    old, new = rng.randbytes(40_000), rng.randbytes(50_000)
    store = _store(open_store, old)
    held = store.stored_snapshot()  # what the core holds
    idle = store.stored_snapshot()  # another handed out and never read
    assert held is not None and idle is not None
    saving = store.snapshot_parts(at(30), new, part_chunks=PART, part_blocks=PART)
    while not saving.switched:
        assert not saving.step()
    assert store.load_snapshot() == (at(30), new)
    # A follower needs a snapshot before the core holds the new one: still readable, its
    # chunks are all there (and now touched, it is read into memory before the prune).
    assert held[100:5000] == old[100:5000]
    _run(saving)
    assert saving.stored is True and snapshot_keys(store) == []
    assert held[30_000:40_000] == old[30_000:40_000]  # detached before its chunks went
    with pytest.raises(StorageError, match="no longer stored"):
        idle[100:200]  # untouched and pruned: nothing streams it
    # The old one in a file: read through its open file, before and after it is removed.
    own = store.stored_snapshot()
    assert own is not None
    another = store.snapshot_parts(at(40), old, part_chunks=PART, part_blocks=PART)
    while not another.switched:
        assert not another.step()
    assert own[0:100] == new[0:100]
    _run(another)
    assert own.read() == new and len(snapshot_files(store)) == 1
    fresh = store.stored_snapshot()
    assert fresh is not None and fresh[0:10] == old[0:10]


def test_a_damaged_or_missing_file_is_refused(open_store: Opener) -> None:
    rng = random.Random(8)
    store = _store(open_store, rng.randbytes(10_000))
    data = rng.randbytes(20_000)
    _run(store.snapshot_parts(at(30), data))
    (name,) = snapshot_files(store)
    path = store.path / name
    raw = bytearray(path.read_bytes())
    raw[9000] ^= 1
    path.write_bytes(bytes(raw))
    stored = store.stored_snapshot()
    assert stored is not None and stored[0:100] == data[0:100]  # another block
    with pytest.raises(StorageError, match="checksum mismatch"):
        stored[8000:9000]
    with pytest.raises(StorageError, match="checksum mismatch"):
        store.load_snapshot()
    path.write_bytes(bytes(raw[:-10]))
    short = store.stored_snapshot()  # opens: the damage is told by its reads (a node whose
    assert short is not None  # persisted state is past the snapshot starts, and retakes it)
    with pytest.raises(StorageError, match="bytes, not"):
        short[0:10]
    path.unlink()
    with pytest.raises(StorageError, match="is missing"):
        store.load_snapshot()
    missing = store.stored_snapshot()
    assert missing is not None
    with pytest.raises(StorageError, match="is missing"):
        missing[0:10]


def test_an_older_snapshot_is_not_stored(open_store: Opener) -> None:
    store = _store(open_store, b"x" * 5000, index=20)
    saving = store.snapshot_parts(at(15), b"y" * 5000, part_chunks=PART)
    assert saving.step() is True and saving.stored is False
    assert store.load_snapshot() == (at(20), b"x" * 5000) and snapshot_files(store) == []


def test_a_snapshot_past_the_log_drops_it(open_store: Opener) -> None:
    """As ``save_snapshot``: a log without the snapshot's entry is discarded."""
    store = _store(open_store, b"x" * 5000)
    saving = store.snapshot_parts(at(90), b"y" * 9000, part_chunks=PART)
    _run(saving)
    assert saving.stored is True
    assert store.first_index() == 91 and store.last_index() == 90


def test_an_empty_snapshot(open_store: Opener) -> None:
    store = _store(open_store, b"x" * 5000)
    saving = store.snapshot_parts(at(30), b"", part_chunks=PART)
    _run(saving)
    assert saving.stored is True and store.load_snapshot() == (at(30), b"")
    stored = store.stored_snapshot()
    assert stored is not None and len(stored) == 0 and stored.read() == b""


def test_compaction_in_bounded_steps(open_store: Opener) -> None:
    """``compact_some(up_to, limit=n)`` deletes at most ``n`` entries and says whether any is left
    at or below ``up_to`` (the runtime compacts in such steps, each a writer item)."""
    store = _store(open_store, b"x" * 100, index=30)
    assert store.compact_some(25, limit=10) is False and store.first_index() == 11
    assert store.compact_some(25, limit=10) is False and store.first_index() == 21
    assert store.compact_some(25, limit=10) is True and store.first_index() == 26
    assert store.compact_some(25, limit=10) is True and store.first_index() == 26
    assert store.compact_some(30, limit=None) is True and store.first_index() == 31


def test_records_keep_their_form() -> None:
    """A snapshot stored in one transaction keeps the six-field record every version reads;
    one stored in parts adds where its chunks start; one in a file names it (a text string
    as the seventh field, which the tenth increment's build refuses: not an integer)."""
    one = layout.snapshot_record(at(5), size=10, chunks=1, crc=7)
    assert len(one) == 6 and layout.parse_snapshot(one) == (at(5), 10, 1, 7, 0)
    assert layout.snapshot_file(one) is None
    parts = layout.snapshot_record(at(5), size=10, chunks=1, crc=7, first=300)
    assert len(parts) == 7 and layout.parse_snapshot(parts) == (at(5), 10, 1, 7, 300)
    name = layout.snapshot_file_name(at(5), "0123abcd")
    in_file = layout.snapshot_record(at(5), size=10, chunks=1, crc=7, file=name)
    assert len(in_file) == 7 and layout.parse_snapshot(in_file) == (at(5), 10, 1, 7, 0)
    assert layout.snapshot_file(in_file) == name
    for bad in (
        [*parts[:6], -1],
        [*parts[:6], "x"],
        [*parts[:6], "../" + name],
        [*parts[:6], (1 << 64) - 1],
    ):
        with pytest.raises(layout.Corrupt):
            layout.parse_snapshot(bad)
    with pytest.raises(ValueError):
        layout.snapshot_record(at(5), size=10, chunks=1, crc=7, file="data.mdb")
