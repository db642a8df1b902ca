"""The canonical-row checks a staged install relies on (``univrs.sm.snapshot_canon``): a row
they pass is one the row reader reads and the writer writes back byte for byte, so storing it
as it came stores what the reader-then-writer path would; and every row the writer writes
passes them."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sm.strategies import any_specs, good_specs
from univrs.sm import Instance, InstanceStatus, snapshot_canon
from univrs.sm.objects import StoredWorkload
from univrs.sm.snapshot import _instance_row, _instance_v1, _workload_row, _workload_v1
from univrs.sm.snapshot_canon import canonical_instance_row, canonical_workload_row

# Ids hold no NUL: the readers refuse such rows (s14-review2: the LMDB keys join ids with NUL;
# tests/storage/test_review14b_snapshot_ids.py).
_ID_CHARS = st.characters(codec="utf-8", blacklist_characters="\x00")
workloads = st.builds(
    StoredWorkload,
    id=st.text(_ID_CHARS, min_size=1, max_size=4),
    spec=st.one_of(good_specs, any_specs),
    version=st.integers(0, 2**40),
    created_index=st.integers(0, 2**40),
)
instances = st.builds(
    Instance,
    id=st.text(_ID_CHARS, min_size=1, max_size=4),
    workload_id=st.text(_ID_CHARS, max_size=4),
    node_id=st.one_of(st.none(), st.text(_ID_CHARS, max_size=4)),
    status=st.sampled_from(InstanceStatus),
    message=st.text(max_size=4),
    version=st.integers(0, 2**40),
    created_index=st.integers(0, 2**40),
)
# What a hostile row may hold instead of a field: every CBOR type the strict decoder gives.
items = st.one_of(
    st.integers(-3, 3),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.sampled_from(["tcp", "udp", "running", "pending", "a", "z"]),
    st.binary(max_size=2),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.text(max_size=1), st.integers(0, 1), max_size=1),
)


@st.composite
def mutated(draw: st.DrawFn, rows: st.SearchStrategy[list[Any]]) -> list[Any]:
    row = list(draw(rows))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "swap"]))
        at = draw(st.integers(0, max(0, len(row) - 1)))
        if kind == "set" and row:
            row[at] = draw(items)
        elif kind == "insert":
            row.insert(at, draw(items))
        elif kind == "delete" and row:
            del row[at]
        elif kind == "swap" and len(row) > 1:
            other = draw(st.integers(0, len(row) - 1))
            row[at], row[other] = row[other], row[at]
    return row


def _same(a: list[Any], b: list[Any]) -> bool:
    return cbor2.dumps(a) == cbor2.dumps(b)  # types too (1 == True == 1.0 for ==)


@settings(max_examples=400, deadline=None)
@given(mutated(workloads.map(_workload_row)))
def test_a_canonical_workload_row_is_what_the_reader_and_writer_give(row: list[Any]) -> None:
    if canonical_workload_row(row):
        assert _same(_workload_row(_workload_v1(row, "w")), row)


@settings(max_examples=400, deadline=None)
@given(mutated(instances.map(_instance_row)))
def test_a_canonical_instance_row_is_what_the_reader_and_writer_give(row: list[Any]) -> None:
    if canonical_instance_row(row):
        assert _same(_instance_row(_instance_v1(row, "i")), row)


@settings(max_examples=200, deadline=None)
@given(workloads, instances)
def test_every_row_the_writer_writes_is_canonical(w: StoredWorkload, i: Instance) -> None:
    assert canonical_workload_row(_workload_row(w))
    assert canonical_instance_row(_instance_row(i))


def _row() -> list[Any]:
    return ["w", 1, 1, "n", "img", 1, 0, 0, 0, 2, "A", "1", "B", "2", 0, 1, 80, "tcp", "http"]


@pytest.mark.parametrize(
    ("at", "value"),
    [
        (10, "C"),  # env keys out of order: the reader sorts them, so not as written
        (1, -1),  # negative version
        (1, True),  # a bool is not an int
        (5, 1.0),  # a float is not an int
        (17, "icmp"),  # no such protocol
        (16, "80"),  # port number as text
        (14, 1),  # a label count the row does not hold
    ],
)
def test_rows_the_checks_refuse(at: int, value: Any) -> None:
    assert canonical_workload_row(_row())
    bad = _row()
    bad[at] = value
    assert not canonical_workload_row(bad)


@st.composite
def revalued(draw: st.DrawFn, rows: st.SearchStrategy[list[Any]]) -> tuple[list[Any], list[Any]]:
    """A row the writer writes, and a copy with values changed but every item's type kept
    (an int for an int, a text for a text; pairs swapped): a row of the same item types."""
    row = list(draw(rows))
    other = list(row)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(other) - 1))
        kind = draw(st.sampled_from(["value", "swap"]))
        if kind == "swap":
            there = draw(st.integers(0, len(other) - 1))
            if type(other[there]) is type(other[at]):
                other[at], other[there] = other[there], other[at]
        elif type(other[at]) is int:
            other[at] = draw(st.one_of(st.integers(-3, 5), st.integers()))
        else:
            other[at] = draw(st.sampled_from(["", "a", "z", "tcp", "udp", "sctp", "TCP"]))
    return row, other


@settings(max_examples=600, deadline=None)
@given(revalued(workloads.map(_workload_row)))
def test_a_row_of_a_remembered_shape_gets_the_full_checks_answer(
    rows: tuple[list[Any], list[Any]],
) -> None:
    """s14-join: once a row's shape is remembered (by its item types), a row of the same types
    is checked against the shape (counts, then its values only). Its answer is the full
    check's (``_workload_shape``), for rows whose counts, versions, protocols and pair order
    were changed."""
    row, other = rows
    assert canonical_workload_row(row)  # its shape is remembered now (if there is room)
    assert tuple(map(type, row)) in snapshot_canon._SHAPES or len(snapshot_canon._SHAPES) >= 256
    assert canonical_workload_row(other) == (snapshot_canon._workload_shape(other) is not None)
    if canonical_workload_row(other):
        assert _same(_workload_row(_workload_v1(other, "w")), other)
