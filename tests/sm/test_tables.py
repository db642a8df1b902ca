"""The ordered tables (univrs.sm.tables) and what they give the state machine: key order,
whatever the history, and lists that cost a page, not the table.

The table checks are run against every backend in ``BACKENDS`` with a dict (or set) as the
model: a backend must answer like it, in key order."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from tests.sm import test_sm_properties as props
from tests.sm.conftest import BACKEND
from tests.sm.helpers import Log, node_info, spec
from tests.sm.strategies import Client, steps
from univrs.api import ops
from univrs.sm import (
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    Instance,
    InstanceSpec,
    InstanceStatus,
    RegisterNode,
    restore_plain,
    snapshot_plain,
    state_digest,
)
from univrs.sm import objects as objects_module
from univrs.sm.objects import Objects, StoredWorkload
from univrs.sm.tables import MemoryPairIndex, MemoryTable, PairIndex, Table
from univrs.storage.sm_tables import LmdbPairIndex, LmdbStore, LmdbTable, objects_in_lmdb

_ROOT = tempfile.TemporaryDirectory(prefix="univrs-tables.")  # removed at exit


def _store() -> LmdbStore:
    return LmdbStore(tempfile.mkdtemp(dir=_ROOT.name), sync=False, map_size=1 << 24)


def _lmdb_table() -> Table[int]:
    return LmdbTable(_store(), "t", lambda v: str(v).encode(), lambda raw: int(raw))


def _lmdb_index() -> PairIndex:
    return LmdbPairIndex(_store(), "p")


TABLES: list[Callable[[], Table[int]]] = [MemoryTable, _lmdb_table]
INDEXES: list[Callable[[], PairIndex]] = [MemoryPairIndex, _lmdb_index]

keys = st.text(alphabet="abcAB09._-:", min_size=1, max_size=4)
table_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 9)),
        st.tuples(st.just("pop"), keys, st.just(0)),
    ),
    max_size=60,
)


@pytest.mark.parametrize("make", TABLES)
@given(script=table_ops, after=st.none() | keys)
@settings(max_examples=150, deadline=None)
def test_a_table_answers_like_a_dict_in_key_order(
    make: Callable[[], Table[int]], script: list[tuple[str, str, int]], after: str | None
) -> None:
    table, model = make(), dict[str, int]()
    for op, key, value in script:
        if op == "put":
            assert table.put(key, value) == model.get(key)
            model[key] = value
        elif key in model:
            assert table.pop(key) == model.pop(key)
        else:
            with pytest.raises(KeyError):
                table.pop(key)
    assert len(table) == len(model)
    assert all(k in table and table.get(k) == v for k, v in model.items())
    assert list(table.keys()) == sorted(model)
    expected = sorted(k for k in model if after is None or k > after)
    assert list(table.keys(after)) == expected
    assert list(table.values(after)) == [model[k] for k in expected]
    loaded = make()
    assert loaded.load(reversed(list(model.items()))) == []
    assert list(loaded.keys()) == sorted(model)


@pytest.mark.parametrize("make", TABLES)
def test_a_table_load_reports_repeated_keys(make: Callable[[], Table[int]]) -> None:
    table = make()
    assert table.load([("b", 1), ("a", 2), ("b", 3)]) == ["b"]
    assert list(table.values()) == [2, 3]


pairs = st.lists(st.tuples(st.sampled_from(["w", "w.", "w0", "x"]), keys), max_size=40)


@pytest.mark.parametrize("make", INDEXES)
@given(added=pairs, removed=pairs, after=st.none() | keys)
@settings(max_examples=150, deadline=None)
def test_a_pair_index_scans_one_first_in_order(
    make: Callable[[], PairIndex],
    added: list[tuple[str, str]],
    removed: list[tuple[str, str]],
    after: str | None,
) -> None:
    index, model = make(), set[tuple[str, str]]()
    for first, second in added:
        index.add(first, second)
        model.add((first, second))
    for pair in removed:
        if pair in model:
            index.remove(*pair)
            model.discard(pair)
        else:
            with pytest.raises(ValueError):
                index.remove(*pair)
    assert list(index) == sorted(model) and len(index) == len(model)
    for first in ("w", "w.", "w0", "x", "v"):  # "w" must not see "w." or "w0" (prefixes)
        expected = sorted(s for f, s in model if f == first and (after is None or s > after))
        assert list(index.seconds(first, after)) == expected
    loaded = make()
    loaded.load(added + added)
    assert list(loaded) == sorted(set(added))


def _build(order: list[int]) -> ClusterStateMachine:
    log = Log()
    log(RegisterNode(info=node_info("n1")))
    for k in order:
        log(CreateWorkload(id=f"w{k}", spec=spec()))
    for k in order:
        log(CreateInstance(id=f"i{k}", spec=InstanceSpec(workload_id=f"w{k % 3}", node_id="n1")))
    return log.sm


def test_iteration_is_in_id_order_whatever_the_order_of_creation() -> None:
    """Two state machines that hold the same objects (created in different orders) iterate and
    snapshot in the same order: id order. (Before the tables, iteration followed creation
    order.)"""
    forward, backward = _build(list(range(12))), _build(list(reversed(range(12))))
    ids = sorted(f"w{k}" for k in range(12))
    assert [w.id for w in forward.stored_workloads()] == ids
    assert [w.id for w in backward.stored_workloads()] == ids
    assert [i.id for i in backward.stored_instances()] == sorted(f"i{k}" for k in range(12))
    a, b = snapshot_plain(forward), snapshot_plain(backward)
    for table in ("workloads", "instances"):  # versions differ (other log), the order does not
        assert [row[0] for row in a[table]] == [row[0] for row in b[table]]
    assert state_digest(forward) == state_digest(restore_plain(snapshot_plain(forward)))


def test_lists_page_by_id() -> None:
    sm = _build(list(reversed(range(12))))
    ids = sorted(f"w{k}" for k in range(12))
    assert [w.id for w in sm.list_workloads()] == ids
    assert [w.id for w in sm.list_workloads(after="w10", limit=3)] == ids[3:6]
    assert [w.id for w in sm.list_workloads(after="w9")] == []
    on_w0 = sorted(f"i{k}" for k in range(12) if k % 3 == 0)
    assert [i.id for i in sm.list_instances(workload_id="w0")] == on_w0
    assert [i.id for i in sm.list_instances(workload_id="w0", after=on_w0[0], limit=2)] == (
        on_w0[1:3]
    )
    assert [i.id for i in sm.list_instances(node_id="n1", after="i5")] == ["i6", "i7", "i8", "i9"]
    assert [i.id for i in sm.list_instances(workload_id="w1", node_id="n2")] == []
    assert [n.id for n in sm.list_nodes(after="n0", limit=1)] == ["n1"]


def _count_views(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    view = Objects.workload_view

    def counting(self: Objects, stored: Any) -> Any:
        seen.append(stored.id)
        return view(self, stored)

    monkeypatch.setattr(Objects, "workload_view", counting)
    return seen


def test_a_page_of_a_list_reads_a_page_not_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """``workload.list`` with ``limit`` builds the views of one page (plus one, to know if
    there is more), not of every workload: O(page). Fails on the code before the tables, which
    built and sorted every workload per page."""
    log = Log()
    for k in range(500):
        log(CreateWorkload(id=f"w{k:04d}", spec=spec()))
    seen = _count_views(monkeypatch)
    read = ops.handler("workload.list").read
    assert read is not None
    page = read({"limit": 10, "after": "w0100"}, log.sm)
    assert [w["id"] for w in page["items"]] == [f"w{k:04d}" for k in range(101, 111)]
    assert page["next"] == "w0110"
    assert len(seen) <= 11
    last = read({"limit": 10, "after": "w0495"}, log.sm)
    assert [w["id"] for w in last["items"]] == [f"w{k:04d}" for k in range(496, 500)]
    assert last["next"] is None


def test_an_instance_page_of_a_workload_scans_its_index() -> None:
    log = Log()
    log(RegisterNode(info=node_info("n1")))
    log(CreateWorkload(id="w", spec=spec()))
    log(CreateWorkload(id="x", spec=spec()))
    for k in range(30):
        log(CreateInstance(id=f"i{k:02d}", spec=InstanceSpec(workload_id="wx"[k % 2])))
    read = ops.handler("instance.list").read
    assert read is not None
    page = read({"workload_id": "w", "limit": 4, "after": "i04"}, log.sm)
    assert [i["id"] for i in page["items"]] == ["i06", "i08", "i10", "i12"]
    assert page["next"] == "i12"
    assert read({"workload_id": "w", "node_id": "n1"}, log.sm)["items"] == []


def test_the_selected_backend_is_the_one_state_machines_get(sm_backend: str) -> None:
    """``UNIVRS_SM_BACKEND=lmdb`` (tests/sm/conftest.py) really puts the tables in LMDB, for
    new and for restored state machines alike."""
    expected = LmdbTable if sm_backend == "lmdb" else MemoryTable
    sm = _build([2, 0, 1])
    restored = restore_plain(snapshot_plain(sm))
    for machine in (sm, restored):
        assert isinstance(machine._objects._workloads, expected)
    assert state_digest(restored) == state_digest(sm)


def test_a_batch_that_fails_leaves_the_lmdb_tables_as_they_were(tmp_path: Any) -> None:
    """One write transaction per command: an exception inside the batch aborts every change
    made in it (a command is applied whole or not at all, on disk too)."""
    objects = objects_in_lmdb(str(tmp_path / "env"), sync=False, map_size=1 << 24)
    with objects.batch():
        objects.put_workload(StoredWorkload(id="w1", spec=spec(), version=1, created_index=1))
    with pytest.raises(RuntimeError), objects.batch():
        objects.put_workload(StoredWorkload(id="w2", spec=spec(), version=2, created_index=2))
        objects.put_instance(_instance("i1", "w2"))
        assert objects.instance("i1") is not None  # the batch sees its own writes
        raise RuntimeError("crash in the middle of a command")
    assert objects.workload("w2") is None and objects.instance("i1") is None
    assert [w.id for w in objects.stored_workloads()] == ["w1"]
    assert objects.problems() == []


def _instance(ident: str, workload_id: str) -> Instance:
    return Instance(
        id=ident,
        workload_id=workload_id,
        node_id=None,
        status=InstanceStatus.PENDING,
        message="",
        version=1,
        created_index=1,
    )


@contextlib.contextmanager
def _lmdb_state_machines() -> Iterator[None]:
    """New state machines get their object tables in LMDB (like UNIVRS_SM_BACKEND=lmdb)."""
    real = objects_module.new_objects
    with tempfile.TemporaryDirectory(dir=_ROOT.name) as folder:
        count = itertools.count()

        def new_objects() -> Objects:
            path = os.path.join(folder, str(next(count)))
            return objects_in_lmdb(path, sync=False, map_size=1 << 24)

        objects_module.new_objects = new_objects
        try:
            yield
        finally:
            objects_module.new_objects = real


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_a_replica_on_lmdb_and_one_in_memory_agree_byte_for_byte(script: list[Any]) -> None:
    """The same commands applied to a state machine with its tables in memory and one with
    them in LMDB: the same responses, the same snapshot bytes (row order included) and the
    same digest after every command. (In every run, whatever UNIVRS_SM_BACKEND says.)"""
    memory = ClusterStateMachine(props.policy())
    assert isinstance(memory._objects._workloads, MemoryTable) or BACKEND == "lmdb"
    with _lmdb_state_machines():
        on_disk = ClusterStateMachine(props.policy())
        assert isinstance(on_disk._objects._workloads, LmdbTable)
        client = Client()
        for index, (command, wrap, delta) in enumerate(script, start=1):
            time_ms = client.time(delta)
            sent = client.envelope(command, wrap, memory)
            response = memory.apply(sent, index=index, term=1, time_ms=time_ms)
            assert on_disk.apply(sent, index=index, term=1, time_ms=time_ms) == response
            assert memory.last_events() == on_disk.last_events()
            client.learn(sent, response)
            assert cbor2.dumps(snapshot_plain(memory)) == cbor2.dumps(snapshot_plain(on_disk))
        assert on_disk.problems() == []
        assert state_digest(memory) == state_digest(on_disk)
        props.check_deleting_a_workload_or_node_leaves_no_orphan_instances(script)


@pytest.mark.parametrize("make", TABLES)
def test_a_view_keeps_the_values_of_its_time_in_key_order(make: Callable[[], Table[int]]) -> None:
    """``view`` (what a snapshot's capture takes on the event loop) is a point-in-time copy:
    later puts and pops do not show in it, and it yields in key order."""
    table = make()
    for key, value in (("b", 2), ("c", 3), ("a", 1)):
        table.put(key, value)
    view = table.view()
    table.put("0", 0)
    table.put("b", 20)
    table.pop("c")
    assert list(view()) == [1, 2, 3]
    assert list(view()) == [1, 2, 3]  # callable again
    assert list(table.values()) == [0, 1, 20]


def test_keys_lmdb_cannot_store_are_absent_not_errors(tmp_path: Any) -> None:
    """An invalid id a command carries (empty, or longer than LMDB's 511-byte keys) is looked
    up before the command is refused: it must be absent, not an LMDB error (found by
    tests/sm/test_sm_fuzz.py under UNIVRS_SM_BACKEND=lmdb)."""
    from univrs.storage.sm_tables import LmdbPairIndex, LmdbStore, LmdbTable

    store = LmdbStore(str(tmp_path / "env"), sync=False, map_size=1 << 24)
    table: LmdbTable[int] = LmdbTable(store, "t", lambda v: str(v).encode(), lambda b: int(b))
    index = LmdbPairIndex(store, "p")
    table.put("a", 1)
    index.add("a", "b")
    for bad in ("", "x" * 600):
        assert table.get(bad) is None and bad not in table
        assert (bad, "b") not in index
        with pytest.raises(KeyError):
            table.pop(bad)
    assert list(table.keys(after="x" * 600)) == []
    assert list(table.keys(after="")) == ["a"]
    store.close()


def test_an_lmdb_scan_takes_its_transaction_when_iterated_not_when_made(tmp_path: Any) -> None:
    """A scan (a table's keys, an index's seconds or pairs) made in a batch and first iterated
    after it reads a transaction of its own, which holds the batch's writes; on the code
    before it was bound to the batch's transaction when made, and that was committed by then
    (lmdb.Error). A scan iterated on after the batch it began in ended raises clearly."""
    store = LmdbStore(str(tmp_path / "env"), sync=False, map_size=1 << 24)
    table: LmdbTable[int] = LmdbTable(store, "t", lambda v: str(v).encode(), lambda b: int(b))
    index = LmdbPairIndex(store, "p")
    with store.batch():
        table.put("a", 1)
        keys, seconds, pairs = table.keys(), index.seconds("w"), iter(index)
        table.put("b", 2)
        index.add("w", "i1")
    assert list(keys) == ["a", "b"]
    assert list(seconds) == ["i1"]
    assert list(pairs) == [("w", "i1")]
    made_outside = table.values()
    with store.batch():
        table.put("c", 3)
        assert list(made_outside) == [1, 2, 3]  # the batch's transaction: its write seen
        begun = table.keys()
        assert next(begun) == "a"
    with pytest.raises(RuntimeError, match="after the batch ended"):
        next(begun)
    store.close()
