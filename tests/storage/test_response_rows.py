"""A session's cached responses read back when the state env opens (``sm_rows.read_small``):
a ``Success`` row is read without the CBOR decoder (s16-scale: the open of an env holding
the session policy's maxima, 640,000 rows, went from 3.8 to 1.7 s of CPU), and must give
exactly what the decoder gives; any other row goes through ``response_from_plain``."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import cbor2
import lmdb
import pytest

from tests.runtime.state_envs import Clock, apply_next
from univrs.errors import StorageError
from univrs.sm import CreateWorkload, Envelope, OpenSession, ScaleWorkload, WorkloadSpec
from univrs.sm.plain import response_from_plain
from univrs.sm.responses import Created, ErrorCode, Failure, Response, Success
from univrs.sm.sessions import Session, SessionPolicy
from univrs.storage.sm_journal import (
    _ROW,
    _SUCCESS_HEAD,
    LmdbJournal,
    objects_in_lmdb,
    response_bytes,
    slot_key,
)
from univrs.storage.sm_rows import _response
from univrs.storage.sm_tables import StateEnv

# Every length of a CBOR uint, at both ends of each.
VERSIONS = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_success_row_reads_as_the_decoder_reads_it(version: int) -> None:
    plain = response_bytes(Success(version=version))
    assert plain.startswith(_SUCCESS_HEAD)  # the row the fast path takes
    read = _response(plain, "c1", 7)
    assert read == Success(version=version) == response_from_plain(cbor2.loads(plain))
    assert type(read.version) is int


@pytest.mark.parametrize(
    "tail",
    [
        b"\x18\x05",  # 5 in two bytes (not the shortest form): still 5
        b"\x19\x00\x05",
        b"\x1a\x00\x00\x00\x05",
        b"\x1b\x00\x00\x00\x00\x00\x00\x00\x05",
    ],
)
def test_a_longer_form_of_a_version_is_the_same_version(tail: bytes) -> None:
    plain = _SUCCESS_HEAD + tail
    assert _response(plain, "c1", 7) == Success(version=5)
    assert response_from_plain(cbor2.loads(plain)) == Success(version=5)


def _outcome(read: Callable[[], Response]) -> object:
    """What ``read`` gives: the response, or the type of the error it raises."""
    try:
        return read()
    except (ValueError, cbor2.CBORDecodeError) as exc:
        return type(exc)


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # no version
        b"\x18",  # a uint's head without its byte
        b"\x19\x01",  # two-byte uint cut short
        b"\x05\x05",  # a byte after the version (the decoder reads the first item)
        b"\x18\x05\x00",
        b"\x20",  # -1
        b"\xf9\x3c\x00",  # 1.0
        b"\x1c",  # a reserved additional-information value
        b"\x61\x35",  # "5"
        b"\xf6",  # null
    ],
)
def test_a_success_head_with_anything_but_one_uint_reads_as_the_decoder_reads_it(
    tail: bytes,
) -> None:
    plain = _SUCCESS_HEAD + tail
    fast = _outcome(lambda: _response(plain, "c1", 7))
    slow = _outcome(lambda: response_from_plain(cbor2.loads(plain)))
    assert fast == slow


@pytest.mark.parametrize(
    "response",
    [
        Created(id="c9", version=12),
        Failure(code=ErrorCode.NOT_FOUND, message="workload 'w' not found"),
        Failure(code=ErrorCode.VERSION_CONFLICT, message="stale", current_version=2**40),
    ],
)
def test_other_responses_go_through_the_decoder(response: Response) -> None:
    plain = response_bytes(response)
    assert not plain.startswith(_SUCCESS_HEAD)
    assert _response(plain, "c1", 7) == response


def test_every_cached_response_comes_back_at_open(tmp_path: pathlib.Path) -> None:
    """Successes, creations and failures cached by a session survive a reopen as they were
    (the open reads successes without the decoder)."""
    path = str(tmp_path / "state.lmdb")
    env = StateEnv(path)
    sm = env.load()
    clock = Clock()
    opened = apply_next(sm, clock, OpenSession())
    assert isinstance(opened, Created)
    client = opened.id
    spec = WorkloadSpec(name="w", image="registry.example/w:1")
    commands: list[CreateWorkload | ScaleWorkload] = [
        CreateWorkload(id="w1", spec=spec),  # created
        ScaleWorkload(id="w1", replicas=3),  # success
        ScaleWorkload(id="nope", replicas=1),  # failure: not found
        CreateWorkload(id="w1", spec=spec),  # failure: exists
    ]
    commands += [ScaleWorkload(id="w1", replicas=k % 5) for k in range(40)]  # versions > 23
    for seq, cmd in enumerate(commands, start=1):
        apply_next(sm, clock, Envelope(command=cmd, client_id=client, seq=seq))
    (session,) = list(sm.stored_sessions())
    cached = dict(session.responses)
    assert {type(r) for r in cached.values()} == {Created, Success, Failure}
    env.close()
    again = StateEnv(path)
    (read,) = list(again.load().stored_sessions())
    assert read.responses == cached
    again.close()


def test_a_malformed_response_row_is_named_by_its_key(tmp_path: pathlib.Path) -> None:
    """A row that passes the head's checks but whose response does not decode: the open's
    ``StorageError`` names the table and the row's key (as ``sm_rows.reading`` does)."""
    path = str(tmp_path / "state.lmdb")
    env = StateEnv(path)
    sm = env.load()
    clock = Clock()
    opened = apply_next(sm, clock, OpenSession())
    assert isinstance(opened, Created)
    apply_next(
        sm, clock, Envelope(command=ScaleWorkload(id="x", replicas=1), client_id=opened.id, seq=1)
    )
    env.close()
    raw = lmdb.open(path, max_dbs=16)
    with raw.begin(write=True) as txn:
        db = raw.open_db(b"session_responses", txn=txn)
        ((key, value),) = list(txn.cursor(db))
        txn.put(key, value[:24] + _SUCCESS_HEAD + b"\x20", db=db)  # version -1
    raw.close()
    with pytest.raises(StorageError) as refused:
        StateEnv(path).load()
    assert f"session_responses row {bytes(key)!r}" in str(refused.value)
    assert "malformed" in str(refused.value)


class _Txn:
    """What ``LmdbJournal._write_sessions`` writes, kept: puts by key, the cursor's rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[bytes, bytes]] = []
        self.heads: dict[bytes, bytes] = {}

    def put(self, key: bytes, value: bytes, db: object = None) -> None:
        self.heads[key] = value

    def cursor(self, db: object = None) -> _Txn:
        return self

    def putmulti(self, rows: list[tuple[bytes, bytes]]) -> None:
        self.rows.extend(rows)


class _Sm:
    def __init__(self, sessions: dict[str, Session], window: int) -> None:
        self.policy = SessionPolicy(window=window)
        self.session = sessions.get


@pytest.mark.parametrize("last", [(0, 0), (7, 1_700_000_000_000), (2**64 - 1, 2**64 - 1)])
def test_a_response_row_is_its_head_and_the_response_bytes(
    tmp_path: pathlib.Path, last: tuple[int, int]
) -> None:
    """s31: a ``Success`` row whose version is a 2- or 4-byte uint is packed in one struct
    call; every row must equal ``_ROW.pack(seq, last index, last ms) + response_bytes`` (the
    general way) at the seq's slot, whatever the version's length or the response."""
    journal = objects_in_lmdb(str(tmp_path / "state"), sync=False).journal
    assert isinstance(journal, LmdbJournal)
    window = 64
    responses: list[Response] = [Success(version=v) for v in VERSIONS]
    responses += [Success(version=v) for v in range(0, 2**33, 2**33 // 97 + 1)]
    responses += [
        Created(id="c9", version=70_000),
        Failure(code=ErrorCode.NOT_FOUND, message="workload 'w' not found"),
    ]
    sessions: dict[str, Session] = {}
    expected: list[tuple[bytes, bytes]] = []
    for n, response in enumerate(responses):
        client_id, seq = f"c{n}", 1 + n * 37
        sessions[client_id] = Session(
            client_id=client_id,
            last_index=last[0],
            last_ms=last[1],
            max_seq=seq,
            responses={seq: response},
        )
        journal.response(client_id, seq)
        journal.session(client_id)
        expected.append(
            (slot_key(client_id, seq, window), _ROW.pack(seq, *last) + response_bytes(response))
        )
    txn = _Txn()
    journal._write_sessions(txn, _Sm(sessions, window))  # type: ignore[arg-type]
    assert sorted(txn.rows) == sorted(expected)
    assert txn.heads == {}  # every session wrote a response row, none is new
