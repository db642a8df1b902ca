"""The state env's small tables read back when it opens (``StateEnv.load``) or upgraded from
an older format (``StateEnv._upgrade``): every row read there is checked for its shape, its
types and its key, and any problem is a ``StorageError`` naming the table and the key, never
another exception (s15-small; LMDB does not checksum its values, and a row may have been
written by a build with a bug or changed by hand). An upgrade is one write transaction: a
refused row aborts it, so nothing of it is written.

What a row must be (the layouts: ``univrs.storage.sm_tables``'s docstring):

* ``meta``/``state``: ``[format, index, term, clock_ms, bootstrapped, policy row, revision]``
  with uints, a bool and a valid ``SessionPolicy`` row;
* ``sessions``: key = the client id; formats 3 and 4 a head ``[owner, client id, last index,
  last ms, max seq]``, formats 1 and 2 the head's fields then ``n, seq, response, ...``; the
  owner a string; the rest what a snapshot's session row must be (``_session_v1``);
* ``session_activity`` (format 3 only; the upgrade to 4 drops it): key = ``last index (8
  bytes) + client id`` of a session whose head says that index, empty value;
* ``session_responses``: format 4 key = ``client id + NUL + seq % window (8 bytes)`` of a
  known session, value ``seq, last index, last ms`` (8 bytes each) and a plain response,
  the seq >= 1 and in its slot; format 3 key = ``client id + NUL + seq (8 bytes)``, value a
  plain response, the seq in its session's window;
* ``ledger``: key = a UTF-8 peer id, value a positive integer;
* ``tokens``: key = the token id, value a snapshot's token row (``_token_v1``).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import Any

import cbor2
import lmdb

from univrs.errors import StorageError
from univrs.sm.plain import response_from_plain
from univrs.sm.responses import Response, Success
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.tokens import Token
from univrs.storage.sm_journal import _ROW, _SEQ, _SUCCESS_HEAD, _policy_from_row, response_key
from univrs.storage.sm_store import LmdbStore

# What decoding or checking a malformed row raises (cbor2's errors, the checks' DecodeError
# (a ValueError), a row of the wrong length or type, a key of the wrong size, LMDB refusing
# a key read from another row).
_ROW_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    struct.error,
    cbor2.CBORDecodeError,
    lmdb.Error,
)


@contextlib.contextmanager
def reading(table: str, key: bytes | memoryview) -> Iterator[None]:
    """Any error of reading the row ``key`` of ``table`` inside the block becomes a
    ``StorageError`` naming both (a ``StorageError`` raised inside is named too)."""
    try:
        yield
    except (StorageError, *_ROW_ERRORS) as exc:
        raise named(table, key, exc) from None


def named(table: str, key: bytes | memoryview, exc: BaseException) -> StorageError:
    """The ``StorageError`` that ``reading`` raises for ``exc`` met reading the row ``key`` of
    ``table`` (for a loop too hot for a ``with`` per row: ``read_small``'s response rows)."""
    if isinstance(exc, StorageError):
        return StorageError(f"{table} row {bytes(key)!r}: {exc}")
    return StorageError(f"{table} row {bytes(key)!r} is malformed: {type(exc).__name__}: {exc}")


def _uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def _want(ok: bool, problem: str) -> None:
    if not ok:
        raise StorageError(problem)


# (format, index, term, clock ms, tokens bootstrapped, policy, revision)
StateMeta = tuple[int, int, int, int, bool, SessionPolicy, int]
# (sessions with their cached responses, balances, tokens)
SmallTables = tuple[list[Session], list[tuple[str, int]], list[Token]]


def state_meta(raw: bytes) -> StateMeta:
    """The ``meta``/``state`` row: (format, index, term, clock ms, tokens bootstrapped,
    policy, revision)."""
    with reading("meta", b"state"):
        row = cbor2.loads(raw)
        _want(type(row) is list and len(row) == 7, "not a list of 7 items")
        fmt, index, term, clock_ms, bootstrapped, policy, revision = row
        _want(type(fmt) is int, f"format {fmt!r} is not an integer")
        _want(all(map(_uint, (index, term, clock_ms, revision))), "an index is not a uint")
        _want(type(bootstrapped) is bool, "tokens_bootstrapped is not a boolean")
        _want(type(policy) is list and len(policy) == 5, "the policy is not a list of 5")
        return fmt, index, term, clock_ms, bootstrapped, _policy_from_row(policy), revision


def state_format(raw: bytes) -> int:
    """The format of a ``meta``/``state`` row (the upgrade's first look)."""
    with reading("meta", b"state"):
        row = cbor2.loads(raw)
        _want(type(row) is list and len(row) == 7 and type(row[0]) is int, "no format")
        return int(row[0])


def _session(key: bytes, row: Any, *, old: bool) -> tuple[str, Session]:
    """(owner, session) from a ``sessions`` row of format 3 (``old`` False: a head, no
    responses) or 1/2 (``old``: every response in the row)."""
    from univrs.sm.snapshot_read import _session_v1

    size = 6 if old else 5
    _want(type(row) is list and len(row) >= size, f"not a list of at least {size} items")
    owner, client_id = row[0], row[1]
    _want(type(owner) is str, "the owner is not a string")
    _want(type(client_id) is str and client_id.encode() == key, "the client id is not its key")
    if not old:
        _want(len(row) == 5, "a head row of more than 5 items")
    # the snapshot's session row (its checks: types, the id, seqs >= 1 and unique)
    session = _session_v1(row[1:] if old else [*row[1:], 0], f"session {client_id!r}")
    session.owner = owner
    return owner, session


def split_sessions(txn: lmdb.Transaction, store: LmdbStore) -> int:
    """Rewrite the ``sessions`` rows of an env of format 1 or 2 (one row per session with all
    its responses: ``[owner, client id, last index, last ms, max seq, n, seq, response, ...]``)
    as format 3's head rows and ``session_responses`` rows, in ``txn`` (``StateEnv._upgrade``);
    returns the response rows written. Each response's plain form is stored as read (the
    same CBOR value), so every cached answer is kept as it was. A malformed row raises
    ``StorageError`` before anything is written."""
    sessions_db, responses_db = store.db("sessions"), store.db("session_responses")
    loads, dumps = cbor2.loads, cbor2.dumps
    heads: list[tuple[bytes, bytes]] = []
    responses: list[tuple[bytes, bytes]] = []
    for raw_key, raw in txn.cursor(sessions_db):
        key = bytes(raw_key)
        with reading("sessions", key):
            row = loads(raw)
            _session(key, row, old=True)  # checked: the row as a whole
            owner, client_id, last_index, last_ms, max_seq, _, *pairs = row
            heads.append((key, dumps([owner, client_id, last_index, last_ms, max_seq])))
            for seq, plain in zip(pairs[::2], pairs[1::2], strict=True):
                responses.append((response_key(client_id, seq), dumps(plain)))  # seq < 2**64
    txn.drop(responses_db, delete=False)
    for key, head in heads:
        txn.put(key, head, db=sessions_db)
    responses.sort()
    txn.cursor(db=responses_db).putmulti(responses, append=True)
    return len(responses)


def slot_sessions(txn: lmdb.Transaction, store: LmdbStore, window: int) -> int:
    """Rewrite the ``session_responses`` rows of an env of format 3 (key ``client id + NUL +
    seq``, value the plain response) as format 4's (key the seq's slot, value seq, 0, 0 and
    the plain response: the head row holds the session's last index and time, which a row of
    0 never overrides) and drop ``session_activity``, in ``txn`` (``StateEnv._upgrade``, after
    ``split_sessions`` for formats 1 and 2); returns the rows rewritten. Each response's
    plain CBOR is kept as stored. Every row is checked as format 3's reader checked it: of a
    known session, its seq in that session's window (so no two take one slot); a malformed
    one raises ``StorageError`` before anything is written."""
    sessions_db, responses_db = store.db("sessions"), store.db("session_responses")
    max_seqs: dict[bytes, int] = {}
    for raw_key, raw in txn.cursor(sessions_db):
        key = bytes(raw_key)
        with reading("sessions", key):
            max_seqs[key] = _session(key, cbor2.loads(raw), old=False)[1].max_seq
    rows: list[tuple[bytes, bytes]] = []
    pack, row_head = _SEQ.pack, _ROW.pack
    key = b""  # the row being read, named by any error (``reading``'s checks, one ``try``)
    try:
        for raw_key, raw in txn.cursor(responses_db):
            key = bytes(raw_key)
            _want(len(key) > _SEQ.size + 1, "too short for an id, NUL and 8 bytes")
            prefix, (seq,) = key[: -_SEQ.size], _SEQ.unpack_from(key, len(key) - _SEQ.size)
            max_seq = max_seqs.get(prefix[:-1])
            _want(prefix[-1:] == b"\0" and max_seq is not None, "a row of no session")
            assert max_seq is not None
            _want(max_seq - window < seq <= max_seq and seq >= 1, "a seq out of the window")
            rows.append((prefix + pack(seq % window), row_head(seq, 0, 0) + bytes(raw)))
    except (StorageError, *_ROW_ERRORS) as exc:
        raise named("session_responses", key, exc) from None
    txn.drop(responses_db, delete=False)
    rows.sort()
    txn.cursor(db=responses_db).putmulti(rows, append=True)
    if txn.get(b"session_activity") is not None:  # a key of the main database: it exists
        txn.drop(store.env.open_db(b"session_activity", txn=txn, create=False), delete=True)
    return len(rows)


def read_small(txn: lmdb.Transaction, store: LmdbStore, window: int) -> SmallTables:
    """The sessions (with their cached responses, least recently active first), the
    balances and the tokens of a format-4 env (``window``: its session policy's), every row
    checked (the module docstring). A session's last index, time and max seq are the newest
    of its head's and its response rows' (all three only grow); its responses the rows whose
    seq is in the window below that max seq (the others: what their slots held before)."""
    from univrs.sm.snapshot_read import _token_v1

    sessions_db, responses_db = store.db("sessions"), store.db("session_responses")
    responses = txn.cursor(db=responses_db)
    pack, row_head, size = _SEQ.pack, _ROW.unpack_from, _ROW.size
    sessions: list[Session] = []
    found = 0
    for raw_key, raw in txn.cursor(sessions_db):
        key = bytes(raw_key)
        with reading("sessions", key):
            _, session = _session(key, cbor2.loads(raw), old=False)
        cached: list[tuple[int, bytes]] = []
        prefix = key + b"\0"
        end = len(prefix)
        # The checks of ``reading``, without a ``with`` per row (a third of an open's CPU at
        # 640,000 rows, s16-scale): any error names the row being read, ``at``.
        at: bytes | memoryview = prefix
        try:
            if responses.set_range(prefix):
                for row_key, value in responses:
                    if row_key[:end] != prefix:
                        break
                    at = row_key
                    _want(len(row_key) == end + _SEQ.size, "not an id, NUL and 8 bytes")
                    _want(len(value) > size, "too short for a seq, an index, a time, a response")
                    seq, index, ms = row_head(value)
                    _want(seq >= 1, "seq 0")
                    _want(row_key[end:] == pack(seq % window), "not in its seq's slot")
                    cached.append((seq, bytes(value[size:])))  # bytes if the txn gave buffers
                    if index > session.last_index:
                        session.last_index, session.last_ms = index, ms
                    if seq > session.max_seq:
                        session.max_seq = seq
            found += len(cached)
            cut = session.max_seq - window  # rows of seqs <= cut: their slots' old values
            cached.sort(key=_first)
            for seq, plain in cached:
                if seq > cut:
                    at = prefix + pack(seq % window)
                    session.responses[seq] = _response(plain, session.client_id, seq)
        except (StorageError, *_ROW_ERRORS) as exc:
            raise named("session_responses", at, exc) from None
        sessions.append(session)
    if found != txn.stat(responses_db)["entries"]:
        raise StorageError("the session responses hold rows of no session")
    sessions.sort(key=_activity)  # the activity order (state.py: by last index, then id)
    balances: list[tuple[str, int]] = []
    for raw_key, raw in txn.cursor(store.db("ledger")):
        with reading("ledger", raw_key):
            amount = cbor2.loads(raw)
            _want(type(amount) is int and amount > 0, f"balance {amount!r}")
            balances.append((bytes(raw_key).decode(), amount))
    tokens: list[Token] = []
    for raw_key, raw in txn.cursor(store.db("tokens")):
        with reading("tokens", raw_key):
            token = _token_v1(cbor2.loads(raw), f"token {bytes(raw_key)!r}")
            _want(token.id.encode() == bytes(raw_key), "the token id is not its key")
            tokens.append(token)
    return sessions, balances, tokens


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _response(plain: bytes, client_id: str, seq: int) -> Response:
    """The cached response whose plain CBOR is ``plain``: a ``Success`` as the journal writes
    it (``sm_journal.response_bytes``: the map's head, then the version as a CBOR uint) read
    without the decoder (every applied write's answer: most rows), anything else through
    ``response_from_plain`` (its checks; ``DecodeError`` when malformed)."""
    if plain.startswith(_SUCCESS_HEAD):
        version = _cbor_uint(plain, len(_SUCCESS_HEAD))
        if version is not None:
            return Success(version=version)
    path = f"session {client_id!r}.response[{seq}]"
    return response_from_plain(cbor2.loads(plain), path)


_UINT_WIDTHS = {0x18: 1, 0x19: 2, 0x1A: 4, 0x1B: 8}  # a CBOR uint's first byte: its length


def _cbor_uint(data: bytes, at: int) -> int | None:
    """The CBOR unsigned integer (major type 0, any of its lengths) that ends ``data`` from
    ``at``, or None if the rest of ``data`` is not exactly one."""
    rest = len(data) - at
    if rest < 1:
        return None
    first = data[at]
    if first < 24:
        return first if rest == 1 else None
    width = _UINT_WIDTHS.get(first)
    if width is None or rest != 1 + width:
        return None
    return int.from_bytes(data[at + 1 :], "big")


def _activity(session: Session) -> tuple[int, str]:
    return session.last_index, session.client_id
