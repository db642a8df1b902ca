"""Snapshots of an LMDB state copy the stored rows instead of encoding objects
(``univrs.runtime.snapshots.capture`` with ``Table.raw_view``; docs/state-at-scale.md)."""

from __future__ import annotations

import io
import pathlib
import tracemalloc
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest

from tests.sm.helpers import Log, spec
from tests.sm.test_sm_snapshot import populated
from univrs import codec
from univrs.bench.scale_state import build
from univrs.errors import StorageError
from univrs.raft.messages import Membership, SnapshotMeta
from univrs.runtime import snapshots as snapshots_module
from univrs.runtime.snapshots import SnapshotChecker, capture, restore
from univrs.sm import (
    BootstrapToken,
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    InstanceSpec,
    snapshot_plain,
    state_digest,
)
from univrs.sm import objects as objects_module
from univrs.storage import sm_ingest, sm_tables
from univrs.storage.sm_tables import LmdbTable, StateEnv, objects_in_lmdb


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


# ---------------------------------------------------------------- installs on LMDB


def _meta(sm: Any) -> SnapshotMeta:
    return SnapshotMeta(
        index=sm.last_applied_index,
        term=sm.last_applied_term,
        membership=Membership(voters=frozenset({"a"})),
    )


def _leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".incoming." in p.name)


def _env_with_old_state(folder: pathlib.Path) -> tuple[StateEnv, str]:
    env = StateEnv(str(folder / "state.lmdb"), map_size=1 << 26)
    old = Log(ClusterStateMachine())
    old(CreateWorkload(id="old", spec=spec("old")))
    env.replace(old.sm)
    return env, state_digest(env.load())


def test_a_leaders_snapshot_is_restored_straight_into_the_env(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check restores into a new environment (``StateEnv.stage``) and the install copies
    its tables: the snapshot is never restored in memory. Fails on the code before (commit
    d00a011): its check could only restore in memory (``SnapshotChecker`` took no ``into``)."""
    log = populated()
    log(BootstrapToken(id="t0", name="root", secret_hash="cd" * 32))
    data, digest, meta = capture(log.sm)(), state_digest(log.sm), _meta(log.sm)
    env, _ = _env_with_old_state(tmp_path)

    def in_memory(plain: Any) -> Any:
        raise AssertionError("restored in memory")

    monkeypatch.setattr(snapshots_module, "restore_plain", in_memory)
    check = SnapshotChecker(into=env.stage)
    check.precheck(meta, data)  # the runtime's worker thread
    assert check(meta, data) is None
    assert len(_leftovers(tmp_path)) == 1  # staged beside the state, not yet installed
    checked = check.take(meta, data)
    assert checked is not None
    stored = env.replace(checked)  # the install
    assert state_digest(stored) == digest
    assert stored.problems() == []
    assert _leftovers(tmp_path) == []
    env.close()
    reopened = StateEnv(str(tmp_path / "state.lmdb"), map_size=1 << 26)
    again = reopened.load()
    assert state_digest(again) == digest
    assert reopened.applied() == (log.sm.last_applied_index, log.sm.last_applied_term)
    assert [t.id for t in again.stored_tokens()] == ["t0"] and again.tokens_bootstrapped
    reopened.close()


def test_a_bad_snapshot_is_refused_by_the_staging_check_and_changes_nothing(
    tmp_path: pathlib.Path,
) -> None:
    log = populated()
    plain = snapshot_plain(log.sm)
    plain["instances"][0][1] = "no-such-workload"  # a dangling reference
    bad = codec.encode_plain(plain)
    env, old = _env_with_old_state(tmp_path)
    check = SnapshotChecker(into=env.stage)
    problem = check(_meta(log.sm), bad)
    assert problem is not None and "has no workload" in problem
    assert _leftovers(tmp_path) == []
    assert check(_meta(log.sm), b"\xa1not cbor") is not None  # refused, not a crash
    assert _leftovers(tmp_path) == []
    assert state_digest(env.load()) == old
    env.close()


def test_a_snapshot_not_laid_out_for_streaming_is_decoded_whole(tmp_path: pathlib.Path) -> None:
    """Data the streaming reader does not take (an indefinite-length map: CBOR the strict
    codec refuses) is decoded whole, which refuses it as a restore in memory does."""
    log = populated()
    data = capture(log.sm)()
    assert data[0] == 0xA0 | 11  # a definite map of the 11 keys
    indefinite = b"\xbf" + data[1:] + b"\xff"
    assert sm_tables.streamed_plain(indefinite) is None
    plain = sm_tables.streamed_plain(data)
    assert plain is not None
    assert [list(plain[k].rows()) for k in ("workloads", "instances", "nodes")] == [
        snapshot_plain(log.sm)[k] for k in ("workloads", "instances", "nodes")
    ]
    env, old = _env_with_old_state(tmp_path)
    with pytest.raises(StorageError, match="indefinite length") as staged:
        restore(indefinite, env.stage)
    with pytest.raises(StorageError) as in_memory:
        restore(indefinite)
    assert str(staged.value) == str(in_memory.value)
    assert _leftovers(tmp_path) == []
    assert state_digest(env.load()) == old
    env.close()


# An install interrupted at each step of its swap: tests/runtime/test_state_swap.py.


def test_a_staged_restore_holds_a_row_not_the_state(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python memory at its peak while a snapshot is staged into an env, against a restore in
    memory of the same snapshot: the staged one keeps no objects, no list of the instances or
    of their index pairs and no cache of shared strings (a count of bytes, not a timing): its
    peak does not grow with the state. Its sorted batches (the index pairs by node, the counts
    rows: ``_INDEX_BATCH`` keys, 65,536, bounded but more than these snapshots hold) are cut to
    256 keys here, so what the staging keeps beyond them shows."""
    monkeypatch.setattr(sm_ingest, "_INDEX_BATCH", 256)
    peaks = []
    for size in (3000, 12000):
        data = capture(build(size))()
        env = StateEnv(str(tmp_path / f"state-{size}.lmdb"), map_size=1 << 27)
        tracemalloc.start()
        try:
            in_memory = restore(data)
            memory_peak = tracemalloc.get_traced_memory()[1]
            del in_memory
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            staged = restore(data, env.stage)
            staged_peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert staged_peak * 10 < memory_peak, (size, staged_peak, memory_peak)
        assert state_digest(env.replace(staged)) == state_digest(restore(data))
        env.close()
        peaks.append(staged_peak)
    assert peaks[1] < peaks[0] * 1.25, peaks  # four times the state, the same peak
