"""A workload's instance counts kept as a row of their own (docs/state-at-scale.md, s14-page):
apply keeps them in the same batch as the instances; a restore (the full reader), a staged
install (the one walk) and an env of the format before (built when opened) all end with the
same rows, byte for byte, as the env that applied the history; the memory backend's counts
are the same numbers; pages render the same documents from them.

Every test here fails on the code before s14-page: it had no ``workload_counts`` table (a
workload's status was a scan of its instance index and a read of each instance)."""

from __future__ import annotations

import pathlib
from typing import Any

import cbor2
import lmdb
import pytest

from tests.runtime.state_envs import old_layout
from tests.sm.helpers import Log, node_info, spec
from univrs.api import convert as cv
from univrs.api.ops import HANDLERS
from univrs.bench.scale_state import build
from univrs.runtime.snapshots import capture
from univrs.sm import (
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    InstanceSpec,
    InstanceStatus,
    NodeStatus,
    RegisterNode,
    ScaleWorkload,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    state_digest,
)
from univrs.storage import sm_tables
from univrs.storage.sm_journal import STATE_FORMAT, _objects_on, objects_in_lmdb
from univrs.storage.sm_store import COUNTS_ROW, LmdbStore
from univrs.storage.sm_tables import StateEnv

STATUSES = list(InstanceStatus)


def _history(log: Log) -> None:
    """Commands that move every count: creates (instance ids not in their workloads' order,
    several per workload), status changes, a delete, a workload delete (its instances go),
    a node deregistered (its instances go), a node down (its instances turn unknown)."""
    for k in (1, 2, 3):
        log(RegisterNode(info=node_info(f"n{k}")))
    for w in range(8):
        log(CreateWorkload(id=f"w-{w}", spec=spec(f"app-{w}", replicas=1 + w % 3)))
    for n in range(40):
        log(
            CreateInstance(
                id=f"i-{n:02}",
                spec=InstanceSpec(workload_id=f"w-{(5 * n) % 8}", node_id=f"n{1 + n % 3}"),
            )
        )
    for n in range(0, 40, 3):
        status = STATUSES[n % len(STATUSES)]
        if status is not InstanceStatus.PENDING:
            log(UpdateInstanceStatus(id=f"i-{n:02}", status=status))
    log(DeleteInstance(id="i-07"))
    log(DeleteWorkload(id="w-2"))
    log(DeregisterNode(id="n3"))
    log(UpdateNodeStatus(id="n2", status=NodeStatus.DOWN))
    log(ScaleWorkload(id="w-4", replicas=5))


def _counts_rows(path: str) -> list[tuple[bytes, tuple[int, ...]]]:
    env = lmdb.open(path, max_dbs=16, readonly=True, lock=False)
    try:
        return _rows_in(env)
    finally:
        env.close()


def _rows_in(env: Any) -> list[tuple[bytes, tuple[int, ...]]]:
    with env.begin() as txn:
        db = env.open_db(b"workload_counts", txn=txn)
        return [(bytes(k), COUNTS_ROW.unpack(bytes(v))) for k, v in txn.cursor(db)]


def _expected(sm: ClusterStateMachine) -> list[tuple[bytes, tuple[int, ...]]]:
    """The counts from the instances themselves (what a scan would give)."""
    found: dict[str, list[int]] = {}
    for i in sm.list_instances():
        found.setdefault(i.workload_id, [0] * 5)[STATUSES.index(i.status)] += 1
    return [(w.encode(), tuple(found[w])) for w in sorted(found)]


def test_apply_restore_staging_and_memory_keep_the_same_counts(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LmdbStore(str(tmp_path / "applied"), sync=False)
    applied = ClusterStateMachine(objects=_objects_on(store))
    memory = ClusterStateMachine()
    _history(Log(applied))
    _history(Log(memory))
    expected = _expected(memory)
    assert expected and any(c[4] for _, c in expected)  # some unknown, some of each kind
    assert _rows_in(store.env) == expected
    assert applied.problems() == memory.problems() == []
    assert state_digest(applied) == state_digest(memory)  # the counts are not in it
    for w in memory.list_workloads():
        assert applied.get_workload(w.id) == w
    data = capture(applied)()
    assert data == capture(memory)()  # nor in the snapshot

    staged = StateEnv(str(tmp_path / "staged" / "state.lmdb"))
    staged.replace(staged.stage(data))  # the one walk
    staged.close()
    with monkeypatch.context() as m:
        m.setattr(sm_tables, "staged_plain", lambda data, store: None)
        full = StateEnv(str(tmp_path / "full" / "state.lmdb"))
        full.replace(full.stage(data))  # the full reader (``Objects.load``)
        full.close()
    assert _counts_rows(str(tmp_path / "staged" / "state.lmdb")) == expected
    assert _counts_rows(str(tmp_path / "full" / "state.lmdb")) == expected


def test_an_env_of_the_format_before_gets_its_counts_when_opened(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "state.lmdb")
    env = StateEnv(path)
    env.replace(build(300))
    before = env.load()
    pages = _all_pages(before, {"limit": 7})
    expected = _expected(before)
    env.close()
    # What an env written by the code before looks like: no counts, format 1 (and its
    # sessions one row each: tests/runtime/test_state_journal.py).
    old_layout(path, 1)

    env = StateEnv(path)
    sm = env.load()
    assert _all_pages(sm, {"limit": 7}) == pages
    assert sm.problems() == []
    with env.store.env.begin() as txn:
        stored = bytes(txn.get(b"state", db=env.store.db("meta")) or b"")
        assert cbor2.loads(stored)[0] == STATE_FORMAT == 3
    env.close()
    assert _counts_rows(path) == expected
    env = StateEnv(path)  # opened again: nothing to do
    assert _all_pages(env.load(), {"limit": 7}) == pages
    env.close()


def _all_pages(sm: ClusterStateMachine, args: dict[str, Any], op: str = "workload.list") -> Any:
    read = HANDLERS[op].read
    assert read is not None
    pages = []
    while True:
        page = read(args, sm)
        pages.append(page)
        if page["next"] is None:
            return pages
        args = {**args, "after": page["next"]}


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
def test_pages_are_the_lists_cut_with_the_same_documents_and_cursors(
    tmp_path: pathlib.Path, backend: str
) -> None:
    """Every page of every list kind, with and without filters, at limits that end a page
    exactly at the last item and one before it: the items are the list's (the documents
    ``workload_doc`` / ``instance_doc`` give), ``next`` is the last item's id exactly when
    something follows (the look-ahead reads ids only when no filter needs the item)."""
    objects = None if backend == "memory" else objects_in_lmdb(str(tmp_path / "s"), sync=False)
    sm = ClusterStateMachine() if objects is None else ClusterStateMachine(objects=objects)
    _history(Log(sm))
    workloads = [cv.workload_doc(w) for w in sm.list_workloads()]
    instances = [cv.instance_doc(i) for i in sm.list_instances()]
    cases: list[tuple[str, dict[str, Any], list[Any]]] = [
        ("workload.list", {}, workloads),
        (
            "workload.list",
            {"name": "app-3"},
            [w for w in workloads if w["spec"]["name"] == "app-3"],
        ),
        ("instance.list", {}, instances),
        ("instance.list", {"node_id": "n1"}, [i for i in instances if i["node_id"] == "n1"]),
        (
            "instance.list",
            {"workload_id": "w-4"},
            [i for i in instances if i["workload_id"] == "w-4"],
        ),
        (
            "instance.list",
            {"workload_id": "w-4", "node_id": "n1"},
            [i for i in instances if i["workload_id"] == "w-4" and i["node_id"] == "n1"],
        ),
        (
            "instance.list",
            {"status": "unknown"},
            [i for i in instances if i["status"] == "unknown"],
        ),
    ]
    for op, filters, everything in cases:
        assert everything, (op, filters)
        for limit in sorted({1, 2, 3, len(everything) - 1, len(everything)} - {0}):
            pages = _all_pages(sm, {**filters, "limit": limit}, op)
            assert [item for page in pages for item in page["items"]] == everything
            for page, start in zip(pages, range(0, len(everything) + 1, limit), strict=False):
                rest = everything[start + limit :]
                assert page["next"] == (page["items"][-1]["id"] if rest else None), (op, limit)
