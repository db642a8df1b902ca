"""The start counter of a data dir (univrs/storage/starts.py): bumped and durable at every start,
per incarnation; and the peers' starts a node accepted, kept across restarts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from univrs.errors import StorageError
from univrs.storage import LogStore, layout
from univrs.storage.starts import (
    KEY_START,
    KEY_STARTS,
    begin_start,
    load_start_records,
    save_start_records,
    stored_start,
)

Opener = Callable[..., LogStore]


def test_every_start_counts_one_more_and_is_durable_when_it_returns(open_store: Opener) -> None:
    store = open_store()
    assert stored_start(store) is None
    syncs = store.statistics().syncs
    first = begin_start(store)
    assert store.statistics().syncs == syncs + 1  # one committed (fsynced) write
    assert first.counter == 1 and len(first.boots) == 1
    store.close()
    store = open_store()
    assert stored_start(store) == first  # what the first hello named survived the stop
    second = begin_start(store)
    assert second.counter == 2 and second.boots == (first.boot, second.boot)
    assert second.boot != first.boot
    store.close()
    # The chain keeps the newest starts only.
    store = open_store()
    for _ in range(30):
        last = begin_start(store)
    assert last.counter == 32 and len(last.boots) == 16
    assert stored_start(store) == last


def test_a_new_incarnation_counts_its_own_starts(open_store: Opener) -> None:
    # `univrs recover` gives the data dir a new incarnation and leaves this record alone: a
    # record of another incarnation counts as none.
    store = open_store()
    env = store._env  # (setting up what an older incarnation left)
    record = layout.encode_record(KEY_START, ["someoneelse", 7, ["0" * 16]])
    env.write(lambda txn: txn.put(KEY_START, record, db=env.meta))
    assert stored_start(store) is None
    assert begin_start(store).counter == 1


def test_the_peers_starts_survive_a_restart(open_store: Opener) -> None:
    store = open_store()
    assert load_start_records(store) == {}
    records = {("n2", "inc2"): (3, "ab" * 8), ("n3", "inc3"): (1, "cd" * 8)}
    save_start_records(store, records)
    store.close()
    store = open_store()
    assert load_start_records(store) == records
    assert list(load_start_records(store)) == list(records)  # recorded order kept


@pytest.mark.parametrize(
    "value",
    [{"x": 1}, [["n2", "inc", 0, "ab" * 8]], [["n2", "inc", 1, "not hex"]], [["n2", "inc", 1]]],
)
def test_a_malformed_record_is_corrupt(open_store: Opener, value: object) -> None:
    store = open_store()
    env = store._env
    record = layout.encode_record(KEY_STARTS, value)
    env.write(lambda txn: txn.put(KEY_STARTS, record, db=env.meta))
    with pytest.raises(StorageError, match=r"metadata record .starts.: malformed"):
        load_start_records(store)


@pytest.mark.parametrize("key", [KEY_START, KEY_STARTS])
@pytest.mark.parametrize("damage", ["checksum", "shape"])
def test_a_damaged_record_names_the_fix(open_store: Opener, key: bytes, damage: str) -> None:
    # s15-review2: a node whose start records are damaged refuses to start at every attempt;
    # the error must say what to do (replace the member), not only that a record is bad.
    store = open_store()
    begin_start(store)
    save_start_records(store, {("n2", "inc2"): (3, "ab" * 8)})
    env = store._env
    raw = layout.encode_record(key, {"x": 1})
    if damage == "checksum":
        raw = raw[:-1] + bytes([raw[-1] ^ 1])
    env.write(lambda txn: txn.put(key, raw, db=env.meta))
    with pytest.raises(StorageError) as caught:
        (begin_start if key == KEY_START else load_start_records)(store)
    said = str(caught.value)
    assert key.decode() in said and "--replace" in said and "older copy" in said
