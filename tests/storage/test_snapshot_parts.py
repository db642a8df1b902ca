"""A node's own snapshot stored in bounded transactions (``LogStore.snapshot_parts``,
univrs/storage/snapshot_parts.py): the same stored snapshot as ``save_snapshot``, the log's
appends written between the steps, the old snapshot whole until the switch, a crash at any
step leaving one whole snapshot, and a snapshot installed meanwhile winning."""

from __future__ import annotations

import random

import pytest

from univrs.errors import StorageError
from univrs.storage import LogStore, layout
from univrs.storage.snapshot_parts import SnapshotParts

from .helpers import Opener, at, make_entries, store_with_snapshot

PART = 7  # chunks per step: a few hundred KB take many steps


def _store(open_store: Opener, data: bytes, index: int = 12) -> LogStore:
    return store_with_snapshot(open_store, data, index, entries=40)


def _snap_keys(store: LogStore) -> list[int]:
    env = store._env  # the test looks at the database itself: garbage left or not
    return env.read(
        lambda txn: [layout.key_index(k) for k in txn.cursor(db=env.snap).iternext(values=False)]
    )


def _run(saving: SnapshotParts) -> int:
    steps = 0
    while not saving.step():
        steps += 1
    return steps + 1


def test_stores_what_save_snapshot_stores(open_store: Opener) -> None:
    rng = random.Random(1)
    old, new = rng.randbytes(100_000), rng.randbytes(150_000)
    store = _store(open_store, old)
    saving = store.snapshot_parts(at(30), new, part_chunks=PART)
    steps = _run(saving)
    assert saving.stored is True
    chunks = -(-len(new) // layout.snapshot_chunk_size(store._env.page_size))
    assert steps > chunks // PART  # one bounded transaction per step
    assert store.load_snapshot() == (at(30), new)
    stored = store.stored_snapshot()
    assert stored is not None and stored.read() == new and stored[1000:90_000] == new[1000:90_000]
    assert store.first_index() == 1 and store.last_index() == 40  # the log is kept (compact trims)
    keys = _snap_keys(store)
    assert len(keys) == chunks and keys[0] > 0  # after the old chunks, which are gone
    # Another one goes after it again, and a reopened store reads it.
    again = store.snapshot_parts(at(35), old, part_chunks=PART)
    _run(again)
    assert again.stored is True and store.load_snapshot() == (at(35), old)
    store.close()
    reopened = open_store()
    assert reopened.load_snapshot() == (at(35), old)


def test_appends_go_on_between_the_steps_and_the_old_snapshot_stays_until_the_switch(
    open_store: Opener,
) -> None:
    rng = random.Random(2)
    old, new = rng.randbytes(60_000), rng.randbytes(60_000)
    store = _store(open_store, old)
    saving = store.snapshot_parts(at(30), new, part_chunks=PART)
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


@pytest.mark.parametrize("stop_after", [1, 2, 3, 5, 8, 12, 20])
def test_a_crash_at_any_step_leaves_one_whole_snapshot(open_store: Opener, stop_after: int) -> None:
    """The process dies after ``stop_after`` steps (the store closed with nothing more
    written): the reopened store holds the old snapshot or the new one, whole; the next save
    removes what the interrupted one left."""
    rng = random.Random(stop_after)
    old, new, later = rng.randbytes(40_000), rng.randbytes(50_000), rng.randbytes(30_000)
    store = _store(open_store, old)
    saving = store.snapshot_parts(at(30), new, part_chunks=PART)
    for _ in range(stop_after):
        if saving.step():
            break
    switched = saving.stored is True
    store.close()
    store = open_store()
    assert store.load_snapshot() == ((at(30), new) if switched else (at(12), old))
    saving = store.snapshot_parts(at(38), later, part_chunks=PART)
    _run(saving)
    assert saving.stored is True and store.load_snapshot() == (at(38), later)
    chunks = -(-len(later) // layout.snapshot_chunk_size(store._env.page_size))
    assert len(_snap_keys(store)) == chunks  # no garbage left


def test_a_snapshot_installed_meanwhile_wins(open_store: Opener) -> None:
    rng = random.Random(4)
    old, new, leaders = rng.randbytes(40_000), rng.randbytes(50_000), rng.randbytes(20_000)
    store = _store(open_store, old)
    saving = store.snapshot_parts(at(30), new, part_chunks=PART)
    for _ in range(4):
        assert not saving.step()
    store.save_snapshot(at(60), leaders)  # the leader's, in one transaction
    _run(saving)
    assert saving.stored is False
    assert store.load_snapshot() == (at(60), leaders)
    # Given up during its parts, or at the switch: either way nothing of it is used, and the
    # next save removes anything left of it.
    nxt = store.snapshot_parts(at(61), old, part_chunks=PART)
    _run(nxt)
    assert nxt.stored is True and store.load_snapshot() == (at(61), old)


def test_the_old_snapshot_stays_readable_until_the_core_holds_the_new_one(
    open_store: Opener,
) -> None:
    """The core holds the old StoredSnapshot (untouched: nothing streamed it yet) from the
    switch until the runtime hands it the new one; a follower may need a snapshot meanwhile.
    Fails on the code that pruned the old chunks right after the switch, and on the record
    check alone (it raised "no longer stored" at once after the switch): the leader's driver
    died on that StorageError."""
    rng = random.Random(7)
    old, new = rng.randbytes(40_000), rng.randbytes(50_000)
    store = _store(open_store, old)
    held = store.stored_snapshot()  # what the core holds
    idle = store.stored_snapshot()  # another handed out and never read
    assert held is not None and idle is not None
    saving = store.snapshot_parts(at(30), new, part_chunks=PART)
    while not saving.switched:
        assert not saving.step()
    assert store.load_snapshot() == (at(30), new)
    # A follower needs a snapshot before the core holds the new one: still readable, its
    # chunks are all there (and now touched, it is read into memory before the prune).
    assert held[100:5000] == old[100:5000]
    _run(saving)
    assert saving.stored is True
    assert held[30_000:40_000] == old[30_000:40_000]  # detached before its chunks went
    with pytest.raises(StorageError, match="no longer stored"):
        idle[100:200]  # untouched and pruned: nothing streams it
    another = store.snapshot_parts(at(40), old, part_chunks=PART)
    _run(another)
    fresh = store.stored_snapshot()
    assert fresh is not None and fresh[0:10] == old[0:10]


def test_an_older_snapshot_is_not_stored(open_store: Opener) -> None:
    store = _store(open_store, b"x" * 5000, index=20)
    saving = store.snapshot_parts(at(15), b"y" * 5000, part_chunks=PART)
    assert saving.step() is True and saving.stored is False
    assert store.load_snapshot() == (at(20), b"x" * 5000)


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


def test_records_keep_their_form() -> None:
    """A snapshot stored in one transaction keeps the six-field record every version reads;
    one stored in parts adds where its chunks start."""
    one = layout.snapshot_record(at(5), size=10, chunks=1, crc=7)
    assert len(one) == 6 and layout.parse_snapshot(one) == (at(5), 10, 1, 7, 0)
    parts = layout.snapshot_record(at(5), size=10, chunks=1, crc=7, first=300)
    assert len(parts) == 7 and layout.parse_snapshot(parts) == (at(5), 10, 1, 7, 300)
    for bad in ([*parts[:6], -1], [*parts[:6], "x"], [*parts[:6], (1 << 64) - 1]):
        with pytest.raises(layout.Corrupt):
            layout.parse_snapshot(bad)
