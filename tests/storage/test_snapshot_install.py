"""A snapshot from the leader stored without a transaction of its size
(``LogStore.install_file``, univrs/storage/snapshot_install.py): its data in a file written
in pieces off the writer's queue, then one small switch of the record; what ``save_snapshot``
stores, the log rule of paper Figure 13, the order of the syncs, a crash at any point leaving
one whole snapshot, and the node's own save in parts running beside it."""

from __future__ import annotations

import contextlib
import random

import pytest

from univrs.storage import LogStore, snapshot_file
from univrs.storage.snapshot_install import InstallCancelled

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

PART = 7  # blocks per piece: a few hundred KB take many pieces


def _store(open_store: Opener, data: bytes, index: int = 12) -> LogStore:
    return store_with_snapshot(open_store, data, index, entries=40)


def test_stores_what_save_snapshot_stores(open_store: Opener) -> None:
    rng = random.Random(1)
    old, new = rng.randbytes(100_000), rng.randbytes(150_000)
    store = _store(open_store, old)
    install = store.install_file(at(30), new, part_blocks=PART)
    install.write_file()
    assert install.pieces == -(-snapshot_file.blocks_for(len(new)) // PART)
    assert store.load_snapshot() == (at(12), old)  # written, not yet named
    install.switch()
    assert store.load_snapshot() == (at(30), new)
    stored = store.stored_snapshot()
    assert stored is not None and stored.read() == new and stored[10:90_000] == new[10:90_000]
    assert store.first_index() == 1 and store.last_index() == 40  # holds entry 30: log kept
    assert snapshot_files(store) == [install.name]
    # The replaced chunks are garbage: the next own save deletes them in bounded steps.
    assert snapshot_keys(store)
    saving = store.snapshot_parts(at(35), old, part_chunks=PART, part_blocks=PART)
    while not saving.step():
        pass
    assert saving.stored is True and snapshot_keys(store) == [] and len(snapshot_files(store)) == 1
    store.close()
    reopened = open_store()
    assert reopened.load_snapshot() == (at(35), old)


def test_a_snapshot_past_the_log_drops_it_and_an_older_one_is_refused(open_store: Opener) -> None:
    rng = random.Random(2)
    store = _store(open_store, rng.randbytes(10_000))
    install = store.install_file(at(60), rng.randbytes(20_000), part_blocks=PART)
    install.write_file()
    install.switch()
    assert store.snapshot_meta() == at(60)
    assert store.first_index() == 61 and store.last_index() == 60  # the log is gone
    older = store.install_file(at(50), b"older", part_blocks=PART)
    older.write_file()
    with pytest.raises(AssertionError, match="older than the stored one"):
        older.switch()
    assert store.snapshot_meta() == at(60)


def test_a_switch_before_the_file_is_written_is_refused(open_store: Opener) -> None:
    store = _store(open_store, b"old")
    install = store.install_file(at(30), b"new" * 3000, part_blocks=PART)
    with pytest.raises(AssertionError, match="before it was written"):
        install.switch()
    assert store.snapshot_meta() == at(12)


def test_no_log_transaction_holds_the_data_and_the_file_is_durable_before_the_record(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted, not timed: no write transaction of ``raft.lmdb`` puts more than a record's
    bytes (``save_snapshot`` puts all 300 KB in one). Every piece is flushed holding the log
    env's write lock (``StoreEnv.turn``); the file and its directory entry are synced; only
    then does the switch store the record naming it."""
    rng = random.Random(3)
    store = _store(open_store, rng.randbytes(20_000))
    data = rng.randbytes(300_000)
    written = count_written(monkeypatch)
    events = record_syncs(monkeypatch, store)  # each piece flushed holding the write lock
    install = store.install_file(at(30), data, part_blocks=PART)
    install.write_file()
    pieces = -(-snapshot_file.blocks_for(len(data)) // PART)
    assert events == ["piece"] * pieces + ["fsync", "dir"], events
    assert store.snapshot_meta() == at(12) and written == []
    install.switch()
    assert store.snapshot_meta() == at(30) and store.load_snapshot() == (at(30), data)
    assert written and max(written) <= 1024, written


@pytest.mark.parametrize("first_from_file", [False, True])
@pytest.mark.parametrize("stop_after", [*range(0, 7), "written", "switched"])
def test_a_crash_at_any_point_leaves_one_whole_snapshot(
    open_store: Opener,
    monkeypatch: pytest.MonkeyPatch,
    stop_after: int | str,
    first_from_file: bool,
) -> None:
    """The process dies after ``stop_after`` pieces of the file (0 to 6 of 6), after the
    whole file was synced, or after the switch: the reopened store holds the old snapshot or
    the new one, whole, and no file it does not name. The old one in chunks (restored or
    installed before) or in a file (the node's own)."""
    rng = random.Random(str(stop_after))
    old, new = rng.randbytes(40_000), rng.randbytes(50_000)
    store = _store(open_store, old)
    if first_from_file:
        saving = store.snapshot_parts(at(20), old)
        while not saving.step():
            pass
    before = store.snapshot_meta()
    install = store.install_file(at(30), new, part_blocks=3)  # 13 blocks: 5 pieces
    if isinstance(stop_after, int):
        pieces = 0
        real = snapshot_file.FileWriter.write_piece

        def counted(self: snapshot_file.FileWriter) -> bool:
            nonlocal pieces
            if pieces >= stop_after:
                install.cancel()  # the crash: nothing more is written
                return False
            pieces += 1
            return real(self)

        monkeypatch.setattr(snapshot_file.FileWriter, "write_piece", counted)
        with contextlib.suppress(InstallCancelled):
            install.write_file()
        monkeypatch.undo()
    else:
        install.write_file()
        if stop_after == "switched":
            install.switch()
    switched = install.switched
    store.close()
    store = open_store()
    assert store.load_snapshot() == ((at(30), new) if switched else (before, old))
    stored = store.stored_snapshot()
    assert stored is not None and stored.read() == (new if switched else old)
    named = 1 if switched or first_from_file else 0
    assert len(snapshot_files(store)) == named  # a file the record does not name is gone
    store.append(hard_state=None, truncate_from=None, entries=make_entries(41, 41))


def test_an_own_save_beside_an_install_neither_removes_its_file_nor_wins(
    open_store: Opener,
) -> None:
    """The node's own save in parts starts (and collects garbage files) while the leader's
    snapshot's file is being written: the install's file is left alone; the install switches
    first, and the own save, older, gives up."""
    rng = random.Random(4)
    old, own, leaders = rng.randbytes(30_000), rng.randbytes(40_000), rng.randbytes(50_000)
    store = _store(open_store, old)
    install = store.install_file(at(60), leaders, part_blocks=PART)
    real = snapshot_file.FileWriter.write_piece
    saving = store.snapshot_parts(at(30), own, part_chunks=PART, part_blocks=PART)
    first = True

    def beside(self: snapshot_file.FileWriter) -> bool:
        nonlocal first
        done = real(self)
        if first and self.name == install.name:
            first = False
            for _ in range(2):  # start (collects files), then a piece of its own (of 2)
                assert not saving.step()
            assert not saving.at_switch
        return done

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshot_file.FileWriter, "write_piece", beside)
        install.write_file()
    assert not first and install.name in snapshot_files(store)
    install.switch()
    while not saving.step():
        pass
    assert saving.stored is False
    assert store.load_snapshot() == (at(60), leaders)
    assert snapshot_files(store) == [install.name]


def test_a_file_written_ahead_is_the_one_installed(open_store: Opener) -> None:
    """``prewrite_install`` (as the check of a received snapshot begins) writes its file in a
    thread of its own; ``install_file`` of the very same data object takes it (written or
    under way); of other data, it drops it (garbage) and writes anew."""
    rng = random.Random(5)
    old, new, other = rng.randbytes(30_000), rng.randbytes(200_000), rng.randbytes(20_000)
    store = _store(open_store, old)
    store.prewrite_install(at(30), new)
    install = store.install_file(at(30), new)
    install.write_file()  # waits for the thread
    assert install.written and store.snapshot_meta() == at(12)
    install.switch()
    assert store.load_snapshot() == (at(30), new) and snapshot_files(store) == [install.name]
    # Ahead for one snapshot, installed another (or an equal copy): a new file; the first
    # is garbage once its thread stops.
    store.prewrite_install(at(40), other)
    fresh = store.install_file(at(40), bytes(other))
    fresh.write_file()
    fresh.switch()
    assert store.load_snapshot() == (at(40), other)
    store.close()
    store = open_store()
    assert store.load_snapshot() == (at(40), other) and len(snapshot_files(store)) == 1


def test_a_file_written_ahead_and_dropped_is_garbage(open_store: Opener) -> None:
    """The check failed (``drop``) or the store closed while it was written: never named,
    removed by the next collect or open; the old snapshot stays."""
    rng = random.Random(6)
    old = rng.randbytes(30_000)
    store = _store(open_store, old)
    drop = store.prewrite_install(at(30), rng.randbytes(300_000))
    drop()
    assert store._ahead.file is None
    store.close()  # joins a thread still writing
    store = open_store()
    assert snapshot_files(store) == [] and store.load_snapshot() == (at(12), old)
    store.prewrite_install(at(30), rng.randbytes(3_000_000))
    store.close()  # stops it after its piece in progress
    store = open_store()
    assert snapshot_files(store) == [] and store.load_snapshot() == (at(12), old)
