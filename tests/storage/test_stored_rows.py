"""Malformed rows at open (s15-small): every row of the state env (``state.lmdb``, formats 1
to 3: the upgrade too) and of the log env (``raft.lmdb``) that opening reads is replaced by
random bytes and by CBOR values with one field of another type, length or range; opening
either raises ``StorageError`` naming what is wrong or succeeds, never another exception, and
a refused upgrade writes nothing (one transaction). Before the fix a format-1/2 session row
with a seq or client id of the wrong type raised ``struct.error`` or ``AttributeError``, and
wrong types in ``meta``, a session head's owner, a token or a ledger row were taken in."""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import zlib
from collections.abc import Iterator
from typing import Any

import cbor2
import lmdb
import pytest

from tests.runtime.state_envs import Clock, apply_next, old_layout
from univrs.codec import decode_plain
from univrs.errors import StorageError
from univrs.raft.messages import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    SnapshotMeta,
    encode_membership,
)
from univrs.sm import (
    CreateInstance,
    CreateToken,
    CreateWorkload,
    Envelope,
    MintCredits,
    OpenSession,
    RegisterNode,
    ScaleWorkload,
    WorkloadSpec,
)
from univrs.sm.model import InstanceSpec, NodeInfo
from univrs.storage import LogStore
from univrs.storage.sm_tables import StateEnv

Row = tuple[bytes, bytes, bytes]  # (table, key, value)

# Replacements for one field of a row: other types, a negative, a float, a value past 64 bits.
_ODD: tuple[Any, ...] = (None, "s", -1, 1.5, [], {"a": 1}, b"b", 2**70, True)
# Tables the state env's open reads (the others are read when used: DecodeError there).
_READ_AT_OPEN = {b"meta", b"sessions", b"session_activity", b"session_responses", b"ledger"}
_READ_AT_OPEN |= {b"tokens"}


def _state_env(path: str) -> None:
    """A state env with a row in every table: a workload, a node, an instance, a balance, a
    token, a session with three cached responses."""
    env = StateEnv(path)
    sm = env.load()
    clock = Clock()

    def run(cmd: Any) -> Any:
        return apply_next(sm, clock, cmd)

    run(CreateWorkload(id="w0", spec=WorkloadSpec(name="w", image="i:1")))
    run(RegisterNode(info=NodeInfo(id="n0")))
    run(CreateInstance(id="i0", spec=InstanceSpec(workload_id="w0", node_id="n0")))
    run(MintCredits(to_peer="p", amount=5, reason="r"))
    run(CreateToken(id="t0", name="t", roles=("read",), secret_hash="a" * 64))
    client = run(OpenSession(owner="token:t0")).id
    for seq in range(1, 4):
        cmd = ScaleWorkload(id="w0", replicas=seq)
        run(Envelope(command=cmd, client_id=client, seq=seq, owner="token:t0"))
    env.close()


def _rows(path: str, max_dbs: int = 16) -> list[Row]:
    raw = lmdb.open(path, max_dbs=max_dbs, readonly=True, lock=False)
    rows: list[Row] = []
    with raw.begin() as txn:
        for name, _ in txn.cursor():
            db = raw.open_db(bytes(name), txn=txn, create=False)
            rows += [(bytes(name), bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
    raw.close()
    return rows


def _replace(path: str, row: Row, key: bytes, value: bytes, max_dbs: int = 16) -> bool:
    table, old_key, _ = row
    raw = lmdb.open(path, max_dbs=max_dbs)
    try:
        with raw.begin(write=True) as txn:
            db = raw.open_db(table, txn=txn)
            txn.delete(old_key, db=db)
            txn.put(key, value, db=db)
        return True
    except lmdb.BadValsizeError:  # an empty key: LMDB itself refuses it
        return False
    finally:
        raw.close()


def _field_changes(value: Any) -> Iterator[Any]:
    """``value`` (a list) with each item in turn replaced by each of ``_ODD``, one item
    short, one too many."""
    if type(value) is not list:
        return
    for k in range(len(value)):
        for odd in _ODD:
            yield [*value[:k], odd, *value[k + 1 :]]
    yield value[:-1]
    yield [*value, 1]


def _values(rng: random.Random, value: bytes) -> Iterator[bytes]:
    for _ in range(3):
        yield os.urandom(rng.randint(0, 16))
    yield b"\xff"
    plain: Any
    for plain in (5, "x", None, [], {}, 1.5):
        yield cbor2.dumps(plain)
    try:
        decoded = cbor2.loads(value)
    except cbor2.CBORDecodeError:
        return
    for changed in _field_changes(decoded):
        yield cbor2.dumps(changed)


def _cases(rows: list[Row]) -> Iterator[tuple[Row, bytes, bytes]]:
    rng = random.Random(15)
    for row in rows:
        _, key, value = row
        for changed in _values(rng, value):
            yield row, key, changed
        for other in (key[:-1], key + b"\0", os.urandom(3)):
            yield row, other, value


@pytest.fixture(scope="module")
def state_envs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """One env per state format, each in a folder of its own (copied per case)."""
    found = {}
    for fmt in (1, 2, 3):
        folder = tmp_path_factory.mktemp(f"format{fmt}")
        _state_env(str(folder / "state.lmdb"))
        if fmt != 3:
            old_layout(str(folder / "state.lmdb"), fmt)
        found[fmt] = str(folder)
    return found


def _open_state(path: str) -> str:
    env = StateEnv(path)
    try:
        env.load()
        return "ok"
    except StorageError as exc:
        assert str(exc).startswith(f"state env {path}"), exc
        return "refused"
    finally:
        env.store.close()


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_every_malformed_state_row_is_a_storage_error_and_the_upgrade_writes_nothing(
    state_envs: dict[int, str], tmp_path: pathlib.Path, fmt: int
) -> None:
    base = state_envs[fmt]
    rows = _rows(os.path.join(base, "state.lmdb"))
    assert {table for table, _, _ in rows} >= _READ_AT_OPEN - {b"session_responses"}
    outcomes: dict[bytes, set[str]] = {}
    for n, (row, key, value) in enumerate(_cases(rows)):
        work = str(tmp_path / str(n))
        shutil.copytree(base, work)
        path = os.path.join(work, "state.lmdb")
        if not _replace(path, row, key, value):
            continue
        before = _rows(path)
        outcome = _open_state(path)  # raises anything but StorageError
        outcomes.setdefault(row[0], set()).add(outcome)
        if outcome == "refused":
            assert _rows(path) == before  # an upgrade refused: nothing of it written
        shutil.rmtree(work)
    for table in _READ_AT_OPEN & set(outcomes):
        assert "refused" in outcomes[table], table


def _refusal(path: str) -> str:
    env = StateEnv(path)
    try:
        with pytest.raises(StorageError) as caught:
            env.load()
    finally:
        env.store.close()
    return str(caught.value)


@pytest.mark.parametrize(
    ("fmt", "table", "key", "change", "said"),
    [
        # s14-review2's case: the old session row, a seq and a client id of the wrong type
        (2, b"sessions", None, lambda r: [*r[:6], "1", *r[7:]], "sessions row b'c6'"),
        (1, b"sessions", None, lambda r: [r[0], 7, *r[2:]], "sessions row b'c6'"),
        (2, b"sessions", None, lambda r: [*r[:6], 2**70, *r[7:]], "sessions row b'c6'"),
        (2, b"sessions", None, lambda r: [5, *r[1:]], "the owner is not a string"),
        (3, b"sessions", None, lambda r: [r[0], "c7", *r[2:]], "the client id is not its key"),
        (3, b"sessions", None, lambda r: [[], *r[1:]], "the owner is not a string"),
        (3, b"sessions", None, lambda r: [*r[:2], r[2] + 1, *r[3:]], "its activity index"),
        (3, b"meta", b"state", lambda r: [*r[:2], "1", *r[3:]], "meta row b'state'"),
        (3, b"meta", b"state", lambda r: [*r[:4], 1, *r[5:]], "not a boolean"),
        (1, b"meta", b"state", lambda r: [*r[:5], [0, 1, 2, 3, 4], r[6]], "meta row b'state'"),
        (3, b"ledger", b"p", lambda r: 1.5, "ledger row b'p'"),
        (3, b"ledger", b"p", lambda r: 0, "ledger row b'p'"),
        (3, b"tokens", b"t0", lambda r: ["t1", *r[1:]], "the token id is not its key"),
        (1, b"instances", b"i0", lambda r: [r[0], None, *r[2:]], "instances row b'i0'"),
    ],
)
def test_a_malformed_row_is_named_by_its_table_and_key(
    state_envs: dict[int, str],
    tmp_path: pathlib.Path,
    fmt: int,
    table: bytes,
    key: bytes | None,
    change: Any,
    said: str,
) -> None:
    shutil.copytree(state_envs[fmt], tmp_path / "env")
    path = str(tmp_path / "env" / "state.lmdb")
    rows = [r for r in _rows(path) if r[0] == table and (key is None or r[1] == key)]
    (row,) = rows
    _replace(path, row, row[1], cbor2.dumps(change(cbor2.loads(row[2]))))
    before = _rows(path)
    assert said in _refusal(path)
    assert _rows(path) == before


def test_a_short_key_in_the_state_tables_is_a_storage_error(
    state_envs: dict[int, str], tmp_path: pathlib.Path
) -> None:
    """A response key that is not ``id + NUL + 8 bytes`` (struct.error before), an activity
    key naming no session by an empty id (LMDB's BadValsizeError before)."""
    for table, key in ((b"session_responses", b"c6\0\0\0\x01"), (b"session_activity", b"\0" * 8)):
        work = tmp_path / table.decode()
        shutil.copytree(state_envs[3], work)
        path = str(work / "state.lmdb")
        (row,) = [r for r in _rows(path) if r[0] == table][:1]
        _replace(path, row, key, row[2])
        assert f"{table.decode()} row {key!r}" in _refusal(path)


def _log_store(data_dir: pathlib.Path) -> None:
    store = LogStore.open(data_dir, node_id="n1", cluster_id="c")
    membership = Membership(voters=frozenset({"n1", "n2"}))
    store.save_snapshot(SnapshotMeta(index=3, term=1, membership=membership), b"x" * 100)
    entries = [
        Entry(term=1, index=4, kind=EntryKind.CONFIG, data=encode_membership(membership)),
        Entry(term=2, index=5, kind=EntryKind.NORMAL, data=b"abc"),
    ]
    hs = HardState(term=2, vote="n1", commit=4, pins=(("n1", "i1"), ("n2", "i2")), named=("n3",))
    store.append(hard_state=hs, truncate_from=None, entries=entries)
    store.close()


def _checked(key: bytes, body: bytes) -> bytes:
    """A value with a right checksum (``layout``): what gets past the CRC is the content."""
    return zlib.crc32(body, zlib.crc32(key)).to_bytes(4, "big") + body


def _log_values(table: bytes, key: bytes, value: bytes) -> Iterator[bytes]:
    yield from (b"", os.urandom(3), os.urandom(20))
    if table == b"meta":
        for changed in _field_changes(decode_plain(value[4:], max_size=1 << 20)):
            yield _checked(key, cbor2.dumps(changed))
        plain: Any
        for plain in (5, "x", None, [], {}, 1.5, b"b"):
            yield _checked(key, cbor2.dumps(plain))
        yield _checked(key, b"\xff")
    elif table == b"log":
        for data in (b"", b"\xff\x00", cbor2.dumps([1]), cbor2.dumps({"voters": 5})):
            for kind in (0, 1, 2, 3, 9):
                for term in (0, 2, 3, 2**63):
                    yield _checked(key, term.to_bytes(8, "big") + bytes([kind]) + data)


def test_every_malformed_log_row_is_a_storage_error(tmp_path: pathlib.Path) -> None:
    """The log env's values carry a CRC (``layout``); past it, every record's content is
    checked: a store opens and reads its initial state, or refuses with ``StorageError``."""
    base = tmp_path / "base"
    _log_store(base)
    env_path = str(base / "raft.lmdb")
    rows = _rows(env_path, max_dbs=8)
    refused: set[bytes] = set()
    for n, row in enumerate(rows):
        table, key, value = row
        for m, changed in enumerate(_log_values(table, key, value)):
            work = tmp_path / f"{n}-{m}"
            shutil.copytree(base, work)
            _replace(str(work / "raft.lmdb"), row, key, changed, max_dbs=8)
            try:
                store = LogStore.open(work, node_id="n1", cluster_id="c")
                try:
                    store.initial_state()
                    store.snapshot_meta()
                finally:
                    store.close()
            except StorageError:
                refused.add(table + b"/" + key if table == b"meta" else table)
            shutil.rmtree(work)
    names = (b"format", b"identity", b"hard_state", b"pins", b"named", b"snapshot")
    assert refused >= {b"meta/" + name for name in names} | {b"log"}
