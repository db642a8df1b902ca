"""The state env's small tables read back when it opens (``StateEnv.load``) or upgraded from
an older format (``StateEnv._upgrade``): every row read there is checked for its shape, its
types and its key, and any problem is a ``StorageError`` naming the table and the key, never
another exception (s15-small; LMDB does not checksum its values, and a row may have been
written by a build with a bug or changed by hand). An upgrade is one write transaction: a
refused row aborts it, so nothing of it is written.

What a row must be (the layouts: ``univrs.storage.sm_tables``'s docstring):

* ``meta``/``state``: ``[format, index, term, clock_ms, bootstrapped, policy row, revision]``
  with uints, a bool and a valid ``SessionPolicy`` row;
* ``sessions``: key = the client id; format 3 a head ``[owner, client id, last index, last
  ms, max seq]``, formats 1 and 2 the head's fields then ``n, seq, response, ...``; the
  owner a string; the rest what a snapshot's session row must be (``_session_v1``);
* ``session_activity``: key = ``last index (8 bytes) + client id`` of a session whose head
  says that index, empty value;
* ``session_responses``: key = ``client id + NUL + seq (8 bytes)`` of a known session;
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
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.tokens import Token
from univrs.storage.sm_journal import _ACTIVITY, _SEQ, _policy_from_row, response_key
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
    except StorageError as exc:
        raise StorageError(f"{table} row {bytes(key)!r}: {exc}") from None
    except _ROW_ERRORS as exc:
        raise StorageError(
            f"{table} row {bytes(key)!r} is malformed: {type(exc).__name__}: {exc}"
        ) from None


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


def read_small(txn: lmdb.Transaction, store: LmdbStore) -> SmallTables:
    """The sessions (with their cached responses), the balances and the tokens of a format-3
    env, every row checked (the module docstring)."""
    from univrs.sm.plain import response_from_plain
    from univrs.sm.snapshot_read import _token_v1

    sessions_db, activity_db = store.db("sessions"), store.db("session_activity")
    responses = txn.cursor(db=store.db("session_responses"))
    sessions: list[Session] = []
    found = 0
    for raw_key, raw_value in txn.cursor(activity_db):
        activity_key = bytes(raw_key)
        with reading("session_activity", activity_key):
            _want(len(activity_key) > _ACTIVITY.size, "too short for an index and an id")
            _want(not bytes(raw_value), "its value is not empty")
            (index,) = _ACTIVITY.unpack_from(activity_key)
            client_id = activity_key[_ACTIVITY.size :]
            raw = txn.get(client_id, db=sessions_db)
            if raw is None:
                raise StorageError(f"session {client_id!r} is in the activity index only")
        with reading("sessions", client_id):
            _, session = _session(client_id, cbor2.loads(bytes(raw)), old=False)
            _want(session.last_index == index, f"its activity index says {index}")
        prefix = client_id + b"\0"
        if responses.set_range(prefix):
            for key, value in responses:
                if key[: len(prefix)] != prefix:
                    break
                with reading("session_responses", key):
                    _want(len(key) == len(prefix) + _SEQ.size, "not an id, NUL and 8 bytes")
                    (seq,) = _SEQ.unpack_from(key, len(prefix))
                    _want(seq >= 1, "seq 0")
                    path = f"session {session.client_id!r}.response[{seq}]"
                    session.responses[seq] = response_from_plain(cbor2.loads(value), path)
        found += len(session.responses)
        sessions.append(session)
    if len(sessions) != txn.stat(sessions_db)["entries"]:
        raise StorageError("the session activity index does not match the sessions")
    if found != txn.stat(store.db("session_responses"))["entries"]:
        raise StorageError("the session responses hold rows of no session")
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
