"""A page of a list on the LMDB state backend costs O(limit), not O(n) (docs/state-at-scale.md,
"Eleventh increment"): counted in rows the page's scans visit and LMDB lookups it makes, not
timed.

* ``workload.list`` and ``instance.list`` pages (from a cursor in the middle, and a node's
  instances) over 2,000 + 2,000 objects visit a bounded number of rows; a page built the O(n)
  way (scanning from the table's start to the cursor) is shown to break the same bound;
* a page's scan and lookups share one read transaction (``ClusterStateMachine.reading``,
  ``LmdbStore.pinned_read``), and nothing can be written while it is pinned.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import pytest

import univrs.storage.sm_store as sm_store
from univrs.api import convert as cv
from univrs.api.ops import HANDLERS
from univrs.bench.scale_state import build
from univrs.sm import ClusterStateMachine, Workload
from univrs.sm.commands import ScaleWorkload
from univrs.storage.sm_store import LmdbStore, LmdbTable
from univrs.storage.sm_tables import StateEnv

N = 2_000
LIMIT = 10
# Rows a page may visit: the page and its look-ahead, each workload's instance index and
# instance (one per workload here), with room to spare; an O(n) page visits about N / 2.
BOUND = 4 * (LIMIT + 1) + 8


@attrs.define
class Counts:
    rows: int = 0  # rows yielded by every cursor scan
    begins: int = 0  # read transactions begun


class CountingEnv:
    """``lmdb.Environment`` that counts the read transactions begun."""

    def __init__(self, env: Any, counts: Counts) -> None:
        self._env, self._counts = env, counts

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("write", False):
            self._counts.begins += 1
        return self._env.begin(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


@pytest.fixture
def state(tmp_path: pathlib.Path) -> Iterator[tuple[ClusterStateMachine, LmdbStore]]:
    path = str(tmp_path / "state.lmdb")
    env = StateEnv(path)
    env.replace(build(N))
    env.close()
    env = StateEnv(path)  # reopened: nothing cached, every row is read from the env
    yield env.load(), env.store
    env.close()


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch, state: tuple[ClusterStateMachine, LmdbStore]) -> Counts:
    c = Counts()
    scan_in = sm_store._scan_in

    def counted(*args: Any) -> Iterator[tuple[bytes, bytes]]:
        for row in scan_in(*args):
            c.rows += 1
            yield row

    monkeypatch.setattr(sm_store, "_scan_in", counted)
    monkeypatch.setattr(state[1], "env", CountingEnv(state[1].env, c))
    return c


def _page(op: str, args: dict[str, Any], sm: ClusterStateMachine) -> dict[str, Any]:
    read = HANDLERS[op].read
    assert read is not None
    return read(args, sm)  # type: ignore[no-any-return]


def _middle(ids: Iterable[str]) -> str:
    listed = sorted(ids)
    return listed[len(listed) // 2]


def test_a_workload_page_from_a_cursor_visits_o_limit_rows_in_one_transaction(
    state: tuple[ClusterStateMachine, LmdbStore], counts: Counts
) -> None:
    sm, _ = state
    after = _middle(w.id for w in sm.stored_workloads())  # (no views: no counts remembered)
    counts.rows = counts.begins = 0
    page = _page("workload.list", {"limit": LIMIT, "after": after}, sm)
    assert len(page["items"]) == LIMIT and page["items"][0]["id"] > after
    assert page["next"] == page["items"][-1]["id"]
    assert counts.rows <= BOUND, counts
    assert counts.begins == 1, counts  # the page's scan and its lookups: one transaction


def test_instance_pages_visit_o_limit_rows(
    state: tuple[ClusterStateMachine, LmdbStore], counts: Counts
) -> None:
    sm, _ = state
    instances = sm.list_instances()
    after = _middle(i.id for i in instances)
    node = instances[len(instances) // 2].node_id
    assert node is not None
    for args in ({"limit": LIMIT, "after": after}, {"limit": LIMIT, "node_id": node}):
        counts.rows = counts.begins = 0
        page = _page("instance.list", args, sm)
        assert len(page["items"]) == LIMIT, args
        assert counts.rows <= BOUND and counts.begins == 1, (args, counts)


def test_an_o_n_page_breaks_the_bound(
    state: tuple[ClusterStateMachine, LmdbStore], counts: Counts
) -> None:
    """The check catches the regression: the same page taken by scanning from the table's
    start to the cursor visits about N / 2 rows."""
    sm, _ = state
    after = _middle(w.id for w in sm.list_workloads())
    counts.rows = 0
    scanned: Callable[[], Iterator[Workload]] = lambda: (  # noqa: E731
        w for w in sm.iter_workloads() if w.id > after
    )
    with sm.reading():
        items = [w for _, w in zip(range(LIMIT + 1), scanned(), strict=False)]
    assert len(items) == LIMIT + 1
    assert counts.rows > N // 2 > BOUND


def test_nothing_is_written_while_a_read_is_pinned(
    state: tuple[ClusterStateMachine, LmdbStore],
) -> None:
    sm, _ = state
    wid = sm.list_workloads(limit=1)[0].id
    index, term = sm.last_applied_index, sm.last_applied_term or 1
    with sm.reading():
        assert sm.get_workload(wid) is not None
        with pytest.raises(RuntimeError, match="pinned read"), sm.batch():
            pass
        with pytest.raises(RuntimeError, match="pinned read"):
            sm.apply(ScaleWorkload(id=wid, replicas=3), index=index + 1, term=term)
    # After it, writes go on as before (and the rejected one left nothing behind).
    with sm.batch():
        sm.apply(ScaleWorkload(id=wid, replicas=4), index=index + 1, term=term)
    found = sm.get_workload(wid)
    assert found is not None and found.spec.replicas == 4


def test_a_pinned_read_inside_a_batch_is_the_batch(tmp_path: pathlib.Path) -> None:
    store = LmdbStore(str(tmp_path / "env"), sync=False, map_size=1 << 24)
    try:
        table: LmdbTable[int] = LmdbTable(
            store, "t", lambda v: str(v).encode(), lambda raw: int(raw), cache_size=0
        )
        with store.batch():
            table.put("a", 1)
            with store.pinned_read():
                assert table.get("a") == 1  # the batch's own write, seen
            table.put("b", 2)  # still in the batch: nothing was pinned
        assert list(table.values()) == [1, 2]
    finally:
        store.close()


def test_the_page_benchmark_runs_both_ways() -> None:
    """``scripts/bench_pages.py`` (the figures of the eleventh increment) runs, pinned or not."""
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_pages.py"
    for extra in ([], ["--unpinned"]):
        done = subprocess.run(
            [sys.executable, str(script), "--objects", "300", "--pages", "3", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        out = json.loads(done.stdout.splitlines()[0])
        assert out["pinned"] is (not extra) and out["workloads_median_ms"] > 0, out


def test_a_workload_page_reads_its_rows_counts_and_one_id_ahead_only(
    state: tuple[ClusterStateMachine, LmdbStore],
    counts: Counts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """s14-page: a workload's status is one lookup of its counts row (no scan of its
    instance index, no instance read), the look-ahead reads the next id only (no workload
    decoded, no status), and the documents are rendered from the stored rows (no objects).
    The page visits ``LIMIT`` workload rows and one key: 11 rows (22 before: each workload's
    index row, and the look-ahead workload), reads no instance, builds no workload object,
    and decodes ``LIMIT`` rows (``LIMIT`` + 1 workloads before)."""
    sm, _ = state
    after = _middle(w.id for w in sm.stored_workloads())
    decoded: list[str] = []
    looked_up: list[str] = []
    values, rows, get = LmdbTable.values, LmdbTable.rows, LmdbTable.get

    def counted_values(self: LmdbTable[Any], after: str | None = None) -> Iterator[Any]:
        for value in values(self, after):
            decoded.append(type(value).__name__)
            yield value

    def counted_rows(self: LmdbTable[Any], after: str | None = None) -> Any:
        found = rows(self, after)
        return None if found is None else counting(found)

    def counting(found: Iterator[Any]) -> Iterator[Any]:
        for row in found:
            decoded.append("row")
            yield row

    def counted_get(self: LmdbTable[Any], key: str) -> Any:
        value = get(self, key)
        looked_up.append(type(value).__name__)
        return value

    monkeypatch.setattr(LmdbTable, "values", counted_values)
    monkeypatch.setattr(LmdbTable, "rows", counted_rows)
    monkeypatch.setattr(LmdbTable, "get", counted_get)
    counts.rows = counts.begins = 0
    page = _page("workload.list", {"limit": LIMIT, "after": after}, sm)
    assert len(page["items"]) == LIMIT and page["next"] == page["items"][-1]["id"]
    assert counts.rows == LIMIT + 1, counts
    assert counts.begins == 1, counts
    assert decoded == ["row"] * LIMIT
    assert looked_up == ["tuple"] * LIMIT  # the counts rows; no instance
    assert page["items"] == [
        cv.workload_doc(w) for w in sm.list_workloads(after=after, limit=LIMIT)
    ]
