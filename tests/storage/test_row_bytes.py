"""A stored workload's row bytes (univrs/storage/sm_row_bytes.py, round 18):
``workload_bytes(w)`` is always ``cbor2.dumps(_workload_row(w))``, the bytes the state's
table stored before, whether they come from the cache, are spliced from the previous
version's (a scale) or are encoded anew; and a scale's are spliced, not encoded."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sm.strategies import good_specs
from univrs.sm.commands import CreateWorkload, ScaleWorkload, UpdateWorkload
from univrs.sm.model import WorkloadSpec, with_replicas
from univrs.sm.objects import StoredWorkload
from univrs.sm.snapshot import _Shared, _workload_row, _workload_v1
from univrs.sm.state import ClusterStateMachine
from univrs.storage import sm_row_bytes as row_bytes
from univrs.storage.sm_row_bytes import workload_bytes

SPEC = WorkloadSpec(name="web", image="nginx:1.27", replicas=2, labels={"tier": "web"})
# CBOR's integer heads change length at 24, 256, 65536, 2**32: versions and replicas around them
INTS = st.one_of(
    st.integers(0, 30),
    st.sampled_from([23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)


def _expected(w: StoredWorkload) -> bytes:
    return cbor2.dumps(_workload_row(w))


@settings(max_examples=200)
@given(
    good_specs,
    st.text(min_size=1, max_size=30),
    INTS,
    INTS,
    st.lists(st.tuples(INTS, INTS), max_size=6),
)
def test_the_bytes_are_the_rows_cbor_through_any_run_of_scales(
    spec: WorkloadSpec, ident: str, version: int, created: int, scales: list[tuple[int, int]]
) -> None:
    row_bytes.forget()
    w = StoredWorkload(id=ident, spec=spec, version=version, created_index=created)
    assert workload_bytes(w) == _expected(w)
    older = w
    for new_version, replicas in scales:
        new = StoredWorkload(
            id=ident,
            spec=with_replicas(older.spec, replicas),
            version=new_version,
            created_index=older.created_index,
        )
        for asked in (new, older, new, older):  # the table's put, then the capture's two
            assert workload_bytes(asked) == _expected(asked)
        older = new


def test_a_scale_is_spliced_and_anything_else_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    row_bytes.forget()
    built: list[int] = []

    def counting(w: Any) -> list[Any]:
        built.append(w.version)
        return _workload_row(w)

    monkeypatch.setattr(row_bytes, "_workload_row", counting)
    w = StoredWorkload(id="w", spec=SPEC, version=1, created_index=1)
    assert workload_bytes(w) == _expected(w) and built == [1]
    for version in range(2, 40):  # across CBOR's one- and two-byte heads (24)
        new = StoredWorkload(
            id="w", spec=with_replicas(w.spec, version * 7), version=version, created_index=1
        )
        assert workload_bytes(new) == _expected(new)
        assert workload_bytes(w) == _expected(w)  # the older one: a hit
        w = new
    assert built == [1]  # every scale spliced
    # An equal object built apart (another replica's, a decoded one): encoded, right.
    copy = _workload_v1(_workload_row(w), "test", _Shared())
    assert copy == w and copy is not w
    assert workload_bytes(copy) == _expected(w) and built == [1, w.version]
    # An update's new spec (another name): encoded, never spliced from the old bytes.
    other = StoredWorkload(
        id="w",
        spec=WorkloadSpec(name="api", image="nginx:1.27", replicas=2),
        version=50,
        created_index=1,
    )
    assert workload_bytes(other) == _expected(other) and built[-1] == 50
    # A version that is not a plain uint (a bool) is encoded as cbor2 encodes it.
    odd = StoredWorkload(id="w", spec=with_replicas(other.spec, 3), version=True, created_index=1)
    assert workload_bytes(odd) == _expected(odd)


def test_the_state_tables_hold_the_rows_cbor(tmp_path: Any) -> None:
    """Through the LMDB state: creates, scales (spliced), an update, each row as stored is
    the row's CBOR, and the state reads back equal after a reopen."""
    from univrs.storage.sm_tables import StateEnv

    row_bytes.forget()
    env = StateEnv(str(tmp_path / "state"))
    sm = env.load()
    sm.apply(CreateWorkload(id="a", spec=SPEC), index=1, term=1)
    sm.apply(CreateWorkload(id="b", spec=SPEC), index=2, term=1)
    commands: list[Any] = [ScaleWorkload(id="a", replicas=r) for r in range(3, 30)]
    commands += [
        UpdateWorkload(id="b", spec=with_replicas(SPEC, 9)),
        ScaleWorkload(id="b", replicas=1),
    ]
    sm.apply_batch(commands, index=3, term=1)
    stored = {w.id: w for w in sm.stored_workloads()}
    store = env.store
    with store.reading() as txn:
        for ident, w in stored.items():
            assert txn.get(ident.encode(), db=store.db("workloads")) == _expected(w)
    env.close()
    again = StateEnv(str(tmp_path / "state")).load()
    assert {w.id: w for w in again.stored_workloads()} == stored


def test_a_state_machine_in_memory_is_unchanged() -> None:
    sm = ClusterStateMachine()
    sm.apply(CreateWorkload(id="w", spec=SPEC), index=1, term=1)
    sm.apply(ScaleWorkload(id="w", replicas=4), index=2, term=1)
    (w,) = sm.stored_workloads()
    assert workload_bytes(w) == _expected(w)


def test_a_splice_compares_every_field_of_the_row() -> None:
    """``workload_bytes``'s splice test names the fields a scale keeps; a field added to
    ``StoredWorkload`` or ``WorkloadSpec`` (and so to the row) must be compared there too, or
    a splice would keep the previous version's value of it. This fails until it is."""
    import attrs

    compared_spec = {"name", "image", "args", "env", "labels", "resources", "ports", "replicas"}
    compared_stored = {"id", "version", "created_index", "spec"}
    assert {f.name for f in attrs.fields(WorkloadSpec)} == compared_spec
    assert {f.name for f in attrs.fields(StoredWorkload)} == compared_stored
