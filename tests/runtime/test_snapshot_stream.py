"""Snapshots of an LMDB state copy the stored rows instead of encoding objects
(``univrs.runtime.snapshots.capture`` with ``Table.raw_view``; docs/state-at-scale.md)."""

from __future__ import annotations

import io
import pathlib
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest

from tests.sm.helpers import spec
from tests.sm.test_sm_snapshot import populated
from univrs import codec
from univrs.runtime import snapshots as snapshots_module
from univrs.runtime.snapshots import capture, restore
from univrs.sm import (
    BootstrapToken,
    CreateInstance,
    CreateWorkload,
    InstanceSpec,
    snapshot_plain,
    state_digest,
)
from univrs.sm import objects as objects_module
from univrs.storage import sm_tables
from univrs.storage.sm_tables import LmdbTable, objects_in_lmdb


@pytest.fixture
def lmdb_objects(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """State machines made in the test keep their object tables in LMDB (as tests/sm's
    ``UNIVRS_SM_BACKEND=lmdb`` does)."""
    made: list[objects_module.Objects] = []

    def new_objects() -> objects_module.Objects:
        made.append(objects_in_lmdb(str(tmp_path / str(len(made))), sync=False, map_size=1 << 26))
        return made[-1]

    monkeypatch.setattr(objects_module, "new_objects", new_objects)
    yield
    made.clear()


@pytest.mark.usefixtures("lmdb_objects")
def test_an_lmdb_snapshot_is_the_encodings_bytes_without_decoding_a_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fails on the code before (commit d00a011): its encoder read every object back through
    the table (one decode per row) and encoded it again."""
    monkeypatch.setattr(sm_tables, "RAW_CHUNK", 3, raising=False)  # several chunks per table
    log = populated()
    log(BootstrapToken(id="t0", name="root", secret_hash="cd" * 32))
    for n in range(30):  # over 24 rows: a longer CBOR array head
        log(CreateInstance(id=f"j-{n:02}", spec=InstanceSpec(workload_id="w-1", node_id="n1")))
    expected = codec.encode_plain(snapshot_plain(log.sm))
    digest = state_digest(log.sm)
    objects = log.sm._objects
    tables: list[LmdbTable[Any]] = []
    for table in (objects._workloads, objects._instances, objects._nodes):
        assert isinstance(table, LmdbTable)
        tables.append(table)
    decoders: dict[int, Any] = {}
    calls: list[bytes] = []

    def refuse(raw: bytes) -> Any:
        calls.append(raw)
        raise AssertionError("a snapshot of an LMDB state decoded a stored row")

    for table in tables:
        decoders[id(table)] = table._decode
        table._decode = refuse
    encode = capture(log.sm)
    for table in tables:  # the state goes on after the capture, decoding as it must
        table._decode = decoders[id(table)]
    log(CreateWorkload(id="later", spec=spec("later")))  # applied after the capture
    for table in tables:
        table._decode = refuse
    data = encode()
    assert calls == []
    assert data == expected  # byte for byte: format, order and digest unchanged
    assert state_digest(restore(data)) == digest


@pytest.mark.usefixtures("lmdb_objects")
def test_an_empty_lmdb_state_snapshots_like_the_encoder() -> None:
    log = populated()
    empty = type(log.sm)(log.sm.policy)
    assert capture(empty)() == codec.encode_plain(snapshot_plain(empty))


def test_a_memory_state_has_no_raw_views() -> None:
    """The in-memory tables store objects, not rows: the encoder path stays."""
    log = populated()
    assert log.sm.stored_raw_views() is None
    assert capture(log.sm)() == codec.encode_plain(snapshot_plain(log.sm))


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32])
@pytest.mark.parametrize("major", [4, 5])
def test_cbor_heads_are_cbor2s(major: int, n: int) -> None:
    out = io.BytesIO()
    cbor2.CBOREncoder(out).encode_length(major, n)
    assert snapshots_module._head(major, n) == out.getvalue()
