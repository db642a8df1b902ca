"""LogStore: round trips across reopen, the append contract, snapshots, compaction, map growth."""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Callable

import pytest

from tests.storage.helpers import make_entries
from univrs.errors import StorageError
from univrs.raft.messages import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    SnapshotMeta,
    encode_membership,
)
from univrs.raft.ready import InitialState
from univrs.storage import LogCompacted, LogStore

Opener = Callable[..., LogStore]

MEMBERS = Membership(
    voters=frozenset({"n1", "n2", "n3"}),
    addresses=(("n1", "127.0.0.1:1"), ("n2", "127.0.0.1:2"), ("n3", "127.0.0.1:3")),
    api_addresses=(("n1", "127.0.0.1:11"),),
)


def test_fresh_store_is_empty(open_store: Opener) -> None:
    store = open_store()
    assert store.initial_state() == InitialState()
    assert (store.first_index(), store.last_index()) == (1, 0)
    assert store.term(0) == 0
    assert store.term(1) is None
    assert store.load_snapshot() is None
    assert store.entries(1, 1) == ()


def test_hard_state_and_entries_survive_close_and_reopen(open_store: Opener) -> None:
    store = open_store()
    config = Entry(term=1, index=1, kind=EntryKind.CONFIG, data=encode_membership(MEMBERS))
    entries = [config, *make_entries(2, 40, term=2)]
    hs = HardState(term=2, vote="n2", commit=17)
    store.append(hard_state=hs, truncate_from=None, entries=entries)
    store.close()

    store = open_store()
    state = store.initial_state()
    assert state.hard_state == hs
    assert state.entries == tuple(entries)
    assert state.membership == MEMBERS
    assert state.snapshot is None and state.applied == 0
    assert (store.first_index(), store.last_index()) == (1, 40)
    assert store.entries(5, 9) == tuple(entries[4:8])
    assert store.term(1) == 1 and store.term(40) == 2 and store.term(41) is None
    assert store.hard_state() == hs


def test_vote_none_and_large_values_round_trip(open_store: Opener) -> None:
    store = open_store()
    big = Entry(term=1, index=1, data=bytes(range(256)) * 4096)  # 1 MiB: LMDB overflow pages
    store.append(hard_state=HardState(term=5), truncate_from=None, entries=[big])
    store.close()
    state = open_store().initial_state()
    assert state.hard_state == HardState(term=5, vote=None, commit=0)
    assert state.entries == (big,)


def test_truncate_and_append_in_one_call(open_store: Opener) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 10, term=1))
    syncs = store.statistics().syncs
    replacement = make_entries(6, 8, term=3, size=30)
    store.append(hard_state=HardState(term=3), truncate_from=6, entries=replacement)
    assert store.statistics().syncs == syncs + 1  # one transaction, one sync
    assert store.last_index() == 8
    assert store.entries(1, 9) == (*make_entries(1, 5, term=1), *replacement)
    assert store.term(9) is None
    store.close()
    assert open_store().initial_state().entries == (*make_entries(1, 5, term=1), *replacement)


def test_merged_readies_may_start_below_truncate_from(open_store: Opener) -> None:
    # The runtime folds Ready A (append 5..10) and Ready B (truncate 8, append 8..9 in term 2)
    # into one call: entries 5..9 with truncate_from 8, while the store ends at 4.
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 4))
    merged = [*make_entries(5, 7), *make_entries(8, 9, term=2)]
    store.append(hard_state=HardState(term=2), truncate_from=8, entries=merged)
    assert store.entries(1, 10) == (*make_entries(1, 4), *merged)
    # And when the stored log does reach the cut, the smaller index wins.
    store.append(hard_state=None, truncate_from=9, entries=make_entries(6, 7, term=3))
    assert store.entries(1, 8) == (*make_entries(1, 5), *make_entries(6, 7, term=3))
    # A truncation point above the entries never hides a gap below them.
    with pytest.raises(AssertionError, match="outside"):
        store.append(hard_state=None, truncate_from=9, entries=make_entries(9, 9, term=3))


def test_truncate_alone_and_hard_state_alone(open_store: Opener) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 5))
    store.append(hard_state=None, truncate_from=3, entries=[])
    assert store.last_index() == 2
    store.append(hard_state=HardState(term=4, vote="n3"), truncate_from=None, entries=[])
    assert store.hard_state() == HardState(term=4, vote="n3")
    store.append(hard_state=None, truncate_from=1, entries=[])
    assert (store.first_index(), store.last_index()) == (1, 0)


def test_the_environment_syncs_every_commit(open_store: Opener) -> None:
    flags = open_store().lmdb_flags()
    assert flags["sync"] and flags["metasync"]
    assert not flags["map_async"] and not flags["writemap"]


def test_an_empty_append_does_not_sync(open_store: Opener) -> None:
    store = open_store()
    before = store.statistics().syncs
    store.append(hard_state=None, truncate_from=None, entries=[])
    assert store.statistics().syncs == before
    store.append(hard_state=HardState(term=1), truncate_from=None, entries=[])
    stats = store.statistics()
    assert stats.syncs == before + 1
    assert stats.sync_seconds >= stats.last_sync_seconds > 0


@pytest.mark.parametrize(
    ("truncate_from", "entries", "match"),
    [
        (None, make_entries(7, 7), "does not follow"),  # a gap
        (None, make_entries(5, 5), "does not follow"),  # overlap without truncation
        (None, [*make_entries(6, 6), *make_entries(8, 8)], "not contiguous"),
        (None, make_entries(6, 6, term=1), "previous term"),  # term goes down
        (7, [], "outside"),  # truncation past the end
        (0, [], "outside"),
    ],
)
def test_append_refuses_a_broken_log(
    open_store: Opener, truncate_from: int | None, entries: list[Entry], match: str
) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 5, term=2))
    with pytest.raises(AssertionError, match=match):
        store.append(hard_state=HardState(term=9), truncate_from=truncate_from, entries=entries)
    # Nothing of the refused call was written.
    assert store.entries(1, 6) == tuple(make_entries(1, 5, term=2))
    assert store.hard_state() == HardState()


def test_entries_bounds_and_max_bytes(open_store: Opener) -> None:
    store = open_store()
    entries = make_entries(1, 10, size=100)
    store.append(hard_state=None, truncate_from=None, entries=entries)
    assert store.entries(3, 3) == ()
    assert store.entries(1, 11, max_bytes=250) == tuple(entries[:2])
    assert store.entries(4, 11, max_bytes=1) == (entries[3],)  # always at least one
    with pytest.raises(IndexError):
        store.entries(1, 12)
    with pytest.raises(IndexError):
        store.entries(5, 4)


def snapshot_at(index: int, term: int) -> SnapshotMeta:
    return SnapshotMeta(index=index, term=term, membership=MEMBERS)


def test_snapshot_round_trip_and_compaction(open_store: Opener) -> None:
    store = open_store()
    store.append(
        hard_state=HardState(term=2, commit=4), truncate_from=None, entries=make_entries(1, 20)
    )
    data = bytes(range(256)) * 20_000  # 5 MB: several chunks
    store.save_snapshot(snapshot_at(12, 1), data)
    assert store.load_snapshot() == (snapshot_at(12, 1), data)
    assert store.first_index() == 1  # kept until compact
    store.compact(12)
    assert (store.first_index(), store.last_index()) == (13, 20)
    assert store.term(12) == 1  # the snapshot's term
    with pytest.raises(LogCompacted):
        store.term(11)
    with pytest.raises(LogCompacted):
        store.entries(12, 14)
    store.close()

    store = open_store()
    assert store.load_snapshot() == (snapshot_at(12, 1), data)
    state = store.initial_state()
    assert state.snapshot == snapshot_at(12, 1)
    assert state.entries == tuple(make_entries(13, 20))
    assert state.applied == 12
    assert state.hard_state == HardState(term=2, commit=12)  # commit covers the snapshot
    assert state.membership == MEMBERS


def test_initial_state_skips_entries_covered_but_not_yet_compacted(open_store: Opener) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 8))
    store.save_snapshot(snapshot_at(5, 1), b"state")
    assert store.initial_state().entries == tuple(make_entries(6, 8))
    assert store.entries(2, 4) == tuple(make_entries(2, 3))


def test_a_snapshot_that_conflicts_with_the_log_discards_it(open_store: Opener) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 8, term=1))
    store.save_snapshot(snapshot_at(6, 2), b"from the leader")  # term 2 != entry 6's term
    assert (store.first_index(), store.last_index()) == (7, 6)
    assert store.initial_state().entries == ()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(7, 9, term=2))
    store.close()
    assert open_store().initial_state().entries == tuple(make_entries(7, 9, term=2))


def test_a_snapshot_beyond_the_log_discards_it(open_store: Opener) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 3))
    store.save_snapshot(snapshot_at(50, 4), b"")
    assert store.load_snapshot() == (snapshot_at(50, 4), b"")
    assert (store.first_index(), store.last_index()) == (51, 50)
    with pytest.raises(AssertionError, match="does not follow"):
        store.append(hard_state=None, truncate_from=None, entries=make_entries(4, 4))
    with pytest.raises(AssertionError, match="outside"):
        store.append(hard_state=None, truncate_from=50, entries=[])


def test_snapshot_and_compaction_refusals(open_store: Opener) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 10))
    with pytest.raises(AssertionError, match="beyond the snapshot"):
        store.compact(3)  # no snapshot yet
    store.save_snapshot(snapshot_at(6, 1), b"six")
    with pytest.raises(AssertionError, match="beyond the snapshot"):
        store.compact(7)
    with pytest.raises(AssertionError, match="older"):
        store.save_snapshot(snapshot_at(5, 1), b"five")
    store.compact(4)
    assert store.first_index() == 5
    store.compact(6)
    store.compact(6)  # idempotent
    assert store.first_index() == 7
    assert store.load_snapshot() == (snapshot_at(6, 1), b"six")


def test_map_grows_instead_of_failing(open_store: Opener) -> None:
    store = open_store(map_size=64 << 10)
    for first in range(1, 801, 100):  # 800 entries of 4 KiB: ~3 MiB through a 64 KiB map
        store.append(
            hard_state=None, truncate_from=None, entries=make_entries(first, first + 99, size=4096)
        )
    store.save_snapshot(snapshot_at(800, 1), b"s" * (3 << 20))
    stats = store.statistics()
    assert stats.map_grows >= 5
    assert stats.map_size >= 4 << 20
    assert store.entries(700, 701) == tuple(make_entries(700, 700, size=4096))
    store.close()
    assert len(open_store().initial_state().entries) == 0  # all covered by the snapshot


def test_map_full_at_the_maximum_is_a_storage_error_and_writes_nothing(open_store: Opener) -> None:
    store = open_store(map_size=256 << 10, max_map_size=512 << 10)
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 1))
    with pytest.raises(StorageError, match="map is full"):
        store.append(
            hard_state=HardState(term=3),
            truncate_from=None,
            entries=make_entries(2, 400, size=4096),
        )
    assert store.last_index() == 1
    assert store.hard_state() == HardState()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(2, 3))  # still usable
    assert store.last_index() == 3


def test_readers_in_threads_while_the_map_grows(open_store: Opener) -> None:
    store = open_store(map_size=64 << 10)
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 10))
    errors: list[BaseException] = []
    reads: list[int] = []
    done = threading.Event()

    def reader() -> None:
        try:
            for _ in range(100_000):  # bounded
                if done.is_set():
                    return
                assert store.entries(1, 11) == tuple(make_entries(1, 10))
                reads.append(1)
                time.sleep(0)  # yield the GIL: pacing only, a tight loop starves the writer
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for first in range(11, 611, 100):
            store.append(
                hard_state=None,
                truncate_from=None,
                entries=make_entries(first, first + 99, size=4096),
            )
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors
    assert reads  # the readers did run
    assert store.statistics().map_grows >= 3
    assert store.last_index() == 610


def test_close_is_idempotent_and_later_calls_fail(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    store = open_store()
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(StorageError, match="closed"):
        store.last_index()
    with pytest.raises(StorageError, match="closed"):
        store.append(hard_state=HardState(term=1), truncate_from=None, entries=[])
    with LogStore.open(data_dir, node_id="n1") as again:  # the lock was released
        assert again.last_index() == 0


def test_a_second_snapshot_at_the_compacted_point_keeps_the_log(tmp_path: pathlib.Path) -> None:
    from univrs.raft.messages import Entry, HardState, Membership, SnapshotMeta
    from univrs.storage import LogStore

    store = LogStore.open(tmp_path / "d", node_id="n1")
    entries = [Entry(term=1, index=i, data=b"x") for i in range(1, 11)]
    store.append(hard_state=HardState(term=1), truncate_from=None, entries=entries)
    meta = SnapshotMeta(index=5, term=1, membership=Membership(voters=frozenset({"n1"})))
    store.save_snapshot(meta, b"state at 5")
    store.compact(5)
    store.save_snapshot(meta, b"state at 5, again")  # e.g. an operator's `cluster snapshot`
    assert store.first_index() == 6 and store.last_index() == 10
    assert [e.index for e in store.entries(6, 11)] == list(range(6, 11))
    store.close()
