"""A workload's document rendered from its stored row (``convert.workload_row_doc``: what a
``workload.list`` page on the LMDB backend renders, s14-page) is the document rendered from its
objects (``stored_workload_doc``), key for key and in the same order, whatever the spec; and a
page on LMDB filters rows on name and labels as the objects are filtered."""

from __future__ import annotations

import json
import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sm.strategies import good_specs
from univrs.api import convert as cv
from univrs.api.ops import HANDLERS
from univrs.bench.scale_state import build, workload_spec
from univrs.sm import ClusterStateMachine, CreateWorkload, Port, PortProtocol, WorkloadSpec
from univrs.sm.objects import StoredWorkload
from univrs.sm.snapshot import _workload_row
from univrs.sm.status import workload_status
from univrs.storage.sm_journal import objects_in_lmdb

small = st.integers(0, 3)


def _same(stored: StoredWorkload, counts: tuple[int, ...]) -> None:
    status = workload_status(stored.spec.replicas, *counts)
    from_objects = cv.stored_workload_doc(stored, status)
    from_row = cv.workload_row_doc(_workload_row(stored), status)
    assert from_row == from_objects
    # The same keys in the same order at every level: the same JSON text, the same CBOR.
    assert json.dumps(from_row) == json.dumps(from_objects)


@settings(max_examples=300)
@given(
    good_specs,
    st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(PortProtocol)), max_size=3),
    st.tuples(small, small, small, small, small),
)
def test_a_row_renders_the_objects_document(
    spec: WorkloadSpec, ports: list[tuple[int, PortProtocol]], counts: tuple[int, ...]
) -> None:
    named = tuple(
        Port(container_port=n, protocol=p, name=f"p{k}") for k, (n, p) in enumerate(ports)
    )
    for s in (spec, WorkloadSpec(name=spec.name, image=spec.image, ports=named)):
        _same(StoredWorkload(id="w-1", spec=s, version=7, created_index=3), counts)


def test_the_benchs_specs_render_the_same() -> None:
    for n in range(50):
        stored = StoredWorkload(id=f"w{n}", spec=workload_spec(n), version=n, created_index=1)
        _same(stored, (n % 2, 1, 0, n % 3, 0))


def test_a_filtered_page_on_rows_is_the_filtered_list(tmp_path: pathlib.Path) -> None:
    sm = ClusterStateMachine(objects=objects_in_lmdb(str(tmp_path / "s"), sync=False))
    memory = ClusterStateMachine()
    for n in range(30):
        spec = workload_spec(n % 7)  # names and label sets repeat
        for state in (sm, memory):
            state.apply(CreateWorkload(id=f"w-{n:02}", spec=spec), index=n + 1, term=1)
    assert sm.workload_rows() is not None and memory.workload_rows() is None
    read = HANDLERS["workload.list"].read
    assert read is not None
    for args in (
        {"limit": 2},
        {"limit": 3, "name": "web-3"},
        {"limit": 2, "labels": {"tier": "backend"}},
        {"limit": 1, "labels": {"app": "app-1", "tier": "backend"}},
        {"limit": 5, "labels": {"app": "app-1", "tier": "batch"}},  # matches none
    ):
        pages = []
        for state in (sm, memory):
            walk, at = [], dict(args)
            while True:
                page = read(at, state)
                walk.append(page)
                if page["next"] is None:
                    break
                at = {**args, "after": page["next"]}
            pages.append(walk)
        assert pages[0] == pages[1], args
    assert build(10).workload_rows() is None  # the memory backend renders from objects
