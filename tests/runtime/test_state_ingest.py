"""A received snapshot staged in one walk, its canonical rows stored as they come
(``univrs.storage.sm_ingest``, used by ``StateEnv.stage``; docs/state-at-scale.md, eighth
increment): the same stored bytes as the full reader, and no snapshot accepted or refused
otherwise than by it."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import lmdb
import pytest

from tests.sm.helpers import Log, node_info, spec
from tests.sm.test_sm_snapshot import populated
from univrs import codec
from univrs.bench.scale_state import build
from univrs.errors import StorageError
from univrs.runtime.snapshots import capture, restore
from univrs.sm import (
    BootstrapToken,
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    InstanceSpec,
    RegisterNode,
    snapshot_read,
    state_digest,
)
from univrs.sm.snapshot import snapshot_plain
from univrs.sm.snapshot_format import CheckStopped, check_stop
from univrs.storage import sm_ingest, sm_tables
from univrs.storage.sm_ingest import staged_plain
from univrs.storage.sm_journal import _ALL_DBS
from univrs.storage.sm_store import LmdbStore
from univrs.storage.sm_tables import StateEnv


def _state() -> ClusterStateMachine:
    log = populated()
    log(BootstrapToken(id="t0", name="root", secret_hash="cd" * 32))
    for n in range(30):  # more than 24 rows: longer CBOR heads
        log(CreateWorkload(id=f"x-{n:02}", spec=spec(f"x{n}")))
    return log.sm


def _tables(path: str) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every database of an env, as stored (the cluster stamp aside)."""
    env = lmdb.open(path, max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {
                name: [
                    (bytes(k), bytes(v))
                    for k, v in txn.cursor(env.open_db(name.encode(), txn=txn))
                    if bytes(k) != b"cluster"
                ]
                for name in _ALL_DBS
            }
    finally:
        env.close()


def _full_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``StateEnv.stage`` as before this increment: the streamed reader for every snapshot."""
    monkeypatch.setattr(sm_tables, "staged_plain", lambda data, store: None)


def _staged(folder: pathlib.Path, data: bytes) -> tuple[str, dict[str, list[Any]]]:
    env = StateEnv(str(folder / "state.lmdb"), map_size=1 << 26)
    sm = env.replace(env.stage(data))
    digest = state_digest(sm)
    env.close()
    return digest, _tables(str(folder / "state.lmdb"))


@contextlib.contextmanager
def _probe(folder: pathlib.Path) -> Iterator[LmdbStore]:
    """An empty store with every state database, for ``staged_plain`` alone."""
    store = LmdbStore(str(folder / "probe"), sync=False, map_size=1 << 26)
    try:
        for name in _ALL_DBS:
            store.db(name)
        yield store
    finally:
        store.close()


def _leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".incoming." in p.name)


@pytest.mark.parametrize("make", [_state, lambda: build(300)])
def test_a_nodes_snapshot_is_staged_in_one_walk_with_the_full_readers_bytes(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[], Any]
) -> None:
    """Fails on the code before (97d4f8e): its staging built every row into objects (the
    row readers, refused here) and encoded them back."""
    sm = make()
    data = capture(sm)()
    with monkeypatch.context() as m:
        _full_path_only(m)
        full_digest, full_tables = _staged(tmp_path / "full", data)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a row was built into an object")

    env = StateEnv(str(tmp_path / "one" / "state.lmdb"), map_size=1 << 26)
    with monkeypatch.context() as m:
        for name in ("_workload_fast", "_workload_checked", "_instance_checked"):
            m.setattr(snapshot_read, name, refuse)
        staged = env.replace(env.stage(data))
    one_walk_digest = state_digest(staged)
    env.close()
    one_walk_tables = _tables(str(tmp_path / "one" / "state.lmdb"))
    assert one_walk_digest == full_digest == state_digest(sm)
    assert one_walk_tables == full_tables
    assert sum(map(len, one_walk_tables.values())) > 2 * len(sm.list_instances())


def _corrupt(plain: dict[str, Any], change: str) -> None:
    rows = plain["instances"]
    if change == "dangling workload":
        rows[0][1] = "no-such-workload"
    elif change == "unknown node":
        rows[-1][2] = "no-such-node"
    elif change == "repeated workload":
        plain["workloads"].insert(1, list(plain["workloads"][0]))
    elif change == "repeated instance":
        rows.append(list(rows[-1]))
    elif change == "bad status":
        rows[3][3] = "sleeping"
    elif change == "short row":
        del plain["workloads"][2][-1]
    elif change == "negative version":
        rows[4][5] = -1
    elif change == "node id not text":
        plain["nodes"][0][0] = 7
    elif change == "revision below index":
        plain["last_revision"] = 1
    elif change == "format":
        plain["format"] = "other"


CHANGES = [
    "dangling workload",
    "unknown node",
    "repeated workload",
    "repeated instance",
    "bad status",
    "short row",
    "negative version",
    "node id not text",
    "revision below index",
    "format",
]


def _flipped_utf8(data: bytes) -> bytes:
    """A workload id's text made invalid UTF-8 (a corrupted byte in a row)."""
    at = data.index(b"x-17")
    return data[:at] + b"\xff" + data[at + 1 :]


def _refusal(folder: pathlib.Path, data: bytes) -> str:
    env = StateEnv(str(folder / "state.lmdb"), map_size=1 << 26)
    env.replace(Log(ClusterStateMachine()).sm)
    with pytest.raises(StorageError) as refused:
        restore(data, env.stage)
    assert _leftovers(folder) == []  # the staged env is gone
    assert state_digest(env.load()) == state_digest(ClusterStateMachine())  # untouched
    env.close()
    return str(refused.value)


@pytest.mark.parametrize("change", [*CHANGES, "flipped byte"])
def test_a_corrupted_snapshot_is_refused_with_the_full_readers_message(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Each corruption is refused: a bad row by the one walk (it writes nothing:
    ``staged_plain`` is None, the tables stay empty), then by the full reader, a bad header by
    ``restore_plain`` after either; with the message the staging gave before."""
    sm = _state()
    if change == "flipped byte":
        bad = _flipped_utf8(capture(sm)())
    else:
        plain = snapshot_plain(sm)
        _corrupt(plain, change)
        bad = codec.encode_plain(plain)
    if change != "revision below index":  # the header is checked after the walk, by both
        with _probe(tmp_path) as store:
            assert staged_plain(bad, store) is None
            with store.env.begin() as txn:
                assert all(txn.stat(store.db(name))["entries"] == 0 for name in _ALL_DBS)
    message = _refusal(tmp_path / "now", bad)
    with monkeypatch.context() as m:
        _full_path_only(m)
        assert _refusal(tmp_path / "before", bad) == message


def _reordered_keys(plain: dict[str, Any]) -> bytes:
    return codec.encode_plain({k: plain[k] for k in sorted(plain, reverse=True)})


def _unsorted_labels(plain: dict[str, Any]) -> bytes:
    """The first workload's two env pairs swapped (the reader sorts them)."""
    row = plain["workloads"][0]
    env_at = 9 + row[8]
    assert row[env_at] == 2
    first, second = row[env_at + 1 : env_at + 3], row[env_at + 3 : env_at + 5]
    row[env_at + 1 : env_at + 5] = second + first
    return codec.encode_plain(plain)


def _rows_out_of_order(plain: dict[str, Any]) -> bytes:
    plain["instances"].reverse()
    return codec.encode_plain(plain)


def _long_heads(plain: dict[str, Any]) -> bytes:
    """The first instance's version as an 8-byte integer: valid CBOR, not the shortest form."""
    data = codec.encode_plain(plain)
    row = plain["instances"][0]
    short = cbor2.dumps(row)
    items = [cbor2.dumps(item) for item in row]
    items[5] = b"\x1b" + row[5].to_bytes(8, "big")
    long = bytes([0x80 | len(row)]) + b"".join(items)
    assert cbor2.loads(long) == row and long != short
    assert data.count(short) == 1
    return data.replace(short, long)


@pytest.mark.parametrize("reform", [_reordered_keys, _unsorted_labels, _rows_out_of_order])
def test_a_valid_snapshot_in_another_form_takes_the_full_reader(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, reform: Callable[[Any], bytes]
) -> None:
    """Not canonical, still valid: the one walk declines it and the full reader stores the
    canonical rows (the same tables as for the node's own snapshot)."""
    sm = _state()
    data = reform(snapshot_plain(sm))
    assert data != capture(sm)()
    with _probe(tmp_path) as store:
        assert staged_plain(data, store) is None
    digest, tables = _staged(tmp_path / "reformed", data)
    assert digest == state_digest(restore(data)) == state_digest(sm)
    assert tables == _staged(tmp_path / "canonical", capture(sm)())[1]


def test_a_row_in_a_longer_encoding_is_stored_in_the_shortest(tmp_path: pathlib.Path) -> None:
    """The one walk stores each row re-encoded (``cbor2.dumps`` of the decoded row), never the
    received bytes: a leader's non-shortest integer does not reach the tables (nor, through
    them, this node's own snapshots, which splice the stored rows)."""
    sm = _state()
    data = _long_heads(snapshot_plain(sm))
    with _probe(tmp_path) as store:
        assert staged_plain(data, store) is not None  # canonical rows, in a longer encoding
    digest, tables = _staged(tmp_path / "long", data)
    assert digest == state_digest(sm)
    assert tables == _staged(tmp_path / "canonical", capture(sm)())[1]


def test_a_nodes_rows_are_encoded_once_a_block_and_kept_as_received(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s14-join: the one walk encodes a block of rows in one ``cbor2.dumps`` call and, when
    that is the block's bytes as received (a node's snapshot), keeps each row's received
    bytes (its shortest encoding): not one call per row. Fails on the code before (one
    ``dumps`` per workload and instance row: 600 and more here). The tables are the full
    reader's (test above); a block holding a row in a longer encoding is encoded row by row
    (``test_a_row_in_a_longer_encoding_is_stored_in_the_shortest``)."""
    sm = build(300)
    data = capture(sm)()
    monkeypatch.setattr(sm_ingest, "STOP_EVERY", 100)  # three blocks of each
    calls: list[int] = []
    dumps = cbor2.dumps

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return dumps(*args, **kwargs)

    monkeypatch.setattr(cbor2, "dumps", counting)
    with _probe(tmp_path) as store:
        assert staged_plain(data, store) is not None
    monkeypatch.undo()
    rows = len(sm.list_instances()) + len(sm.list_workloads())
    assert rows == 600
    assert len(calls) <= 6 + len(sm.list_nodes())  # a call a block, and the node rows


def _scattered() -> ClusterStateMachine:
    """Instances whose ids do not follow their workloads' (the by-workload index pairs come
    out of order) on three nodes (the by-node pairs too)."""
    log = populated()
    for k in (2, 3):
        log(RegisterNode(info=node_info(f"n{k}")))
    for n in range(40):
        log(
            CreateInstance(
                id=f"s-{n:02}",
                spec=InstanceSpec(workload_id=f"w-{(7 * n) % 20}", node_id=f"n{1 + n % 3}"),
            )
        )
    return log.sm


@pytest.mark.parametrize("batch", [1, 7, 1 << 16])
def test_index_pairs_out_of_order_are_staged_as_the_full_reader_stores_them(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """The one walk puts the by-node pairs in sorted batches of ``_INDEX_BATCH`` and appends
    the by-workload pairs only while they come in order (fifteenth increment): any batch
    size, and pairs out of order, give the full reader's tables."""
    sm = _scattered()
    data = capture(sm)()
    with monkeypatch.context() as m:
        _full_path_only(m)
        full_digest, full_tables = _staged(tmp_path / "full", data)
    with _probe(tmp_path) as store:
        assert staged_plain(data, store) is not None  # the one walk takes it
    monkeypatch.setattr(sm_ingest, "_INDEX_BATCH", batch)
    digest, tables = _staged(tmp_path / "one", data)
    assert digest == full_digest == state_digest(sm)
    assert tables == full_tables
    placed = [i for i in sm.list_instances() if i.node_id is not None]
    assert len(tables["by_node"]) == len(placed) > 40


def test_a_stopped_check_stops_the_staging_between_blocks_and_keeps_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s13-scale: the check's stop (``snapshot_format.check_stop``, set by the runtime for a
    check whose snapshot can no longer be installed) is polled between blocks of rows: the
    staging raises ``CheckStopped`` after the block in progress (not at the end), writes
    nothing, does not fall back to the full reader, and ``StateEnv.stage`` leaves no folder.
    Fails on the code before: the staging never looked, and finished the whole snapshot."""
    sm = build(300)
    data = capture(sm)()
    monkeypatch.setattr(sm_ingest, "STOP_EVERY", 50)
    polls: list[int] = []

    def stop_at_third_poll() -> bool:
        polls.append(1)
        return len(polls) >= 3

    token = check_stop.set(stop_at_third_poll)
    try:
        with _probe(tmp_path) as store:
            with pytest.raises(CheckStopped):
                staged_plain(data, store)
            with store.env.begin() as txn:
                assert txn.stat(store.db("workloads"))["entries"] == 0  # aborted
        assert len(polls) == 3  # stopped at the first poll that said so
        env = StateEnv(str(tmp_path / "state.lmdb"), map_size=1 << 26)
        polls.clear()
        with pytest.raises(CheckStopped):
            env.stage(data)  # neither the full reader nor a decode whole after it
        env.close()
        assert _leftovers(tmp_path) == []
    finally:
        check_stop.reset(token)
    # Without a stop the same data stages whole.
    (tmp_path / "again").mkdir()
    with _probe(tmp_path / "again") as store:
        assert staged_plain(data, store) is not None
