"""The small tables of the state machine in LMDB (sessions, their activity order, the ledger,
the tokens) and ``meta`` (the applied index with the state's scalars), written by the journal
when a batch commits; and ``Objects`` on a store (the layout: ``univrs.storage.sm_tables``).
"""

from __future__ import annotations

import struct
from typing import Any, cast

import cbor2
import lmdb

from univrs.errors import StorageError
from univrs.sm.objects import Objects
from univrs.sm.plain import response_to_plain
from univrs.sm.responses import Response, Success
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.snapshot import _token_row
from univrs.sm.state import ClusterStateMachine
from univrs.sm.tables import StateJournal
from univrs.storage.sm_row_bytes import cbor_uint as _uint
from univrs.storage.sm_store import (
    DEFAULT_MAP_SIZE,
    LmdbPairIndex,
    LmdbStore,
    LmdbTable,
    cbor_codec,
    decode_counts,
    encode_counts,
)

# The layout of the small tables and meta below. 2: the object tables gained
# ``workload_counts`` (s14-page). 3: a session is a head row in ``sessions`` and one row per
# cached response in ``session_responses`` (s14-journal), no longer one row of all its
# responses. 4: a response row sits in its seq's slot of the window (``seq % window``) and
# carries the session's last index and time, so a keyed write is one put (the head row is
# written only when no response row is); no ``session_activity`` (the order is sorted at open)
# (s15-follow). An env of format 1, 2 or 3 is upgraded when opened (``StateEnv._upgrade``:
# ``build_counts`` for 1, ``split_sessions`` for 1 and 2, ``slot_sessions`` for all), then
# says 4.
STATE_FORMAT = 4
_SEQ = struct.Struct(">Q")  # a response's seq (3) or slot (4) in its key (CBOR uints: < 2**64)
_NUL_SEQ = struct.Struct(">xQ")  # NUL, then ``_SEQ``: a key's tail after the client id
# The head of a response row's value (format 4): seq, the session's last index and last ms
# (CBOR uints on the way in, so each fits), followed by the response's plain CBOR.
_ROW = struct.Struct(">QQQ")
# The plain CBOR of a ``Success`` up to its version: ``{"type": "success", "version": ``.
_SUCCESS_HEAD = cbor2.dumps({"type": "success", "version": 0})[:-1]
# A response row's whole value for a ``Success`` whose version takes CBOR's 2- or 4-byte uint
# (0x19 / 0x1a, then the version): ``_ROW.pack(...) + _SUCCESS_HEAD + cbor_uint(version)`` in
# one call (s31: every keyed write's row; a revision is past 0x10000 soon after start).
_ROW_SUCCESS16 = struct.Struct(f">QQQ{len(_SUCCESS_HEAD)}sBH")
_ROW_SUCCESS32 = struct.Struct(f">QQQ{len(_SUCCESS_HEAD)}sBI")
# The head of the meta row (``_meta_bytes``): a CBOR array of 7 items, then the format.
_META_HEAD = b"\x87" + _uint(STATE_FORMAT)
_CBOR_FALSE, _CBOR_TRUE = cbor2.dumps(False), cbor2.dumps(True)
_UINT_END = 1 << 64  # CBOR's unsigned integers (major type 0) are below this


def _plain_uint(value: object) -> bool:
    return type(value) is int and 0 <= value < _UINT_END


_SMALL_DBS = ("sessions", "session_responses", "ledger", "tokens")
_OBJECT_DBS = ("workloads", "instances", "nodes", "by_workload", "by_node", "workload_counts")
_ALL_DBS = frozenset((*_OBJECT_DBS, *_SMALL_DBS, "meta"))
# Databases of older formats that an env may still hold until it is upgraded (not foreign).
_LEGACY_DBS = frozenset({"session_activity"})


def response_key(client_id: str, seq: int) -> bytes:
    """Format 3's ``session_responses`` key of a session's response to ``seq``: ``client id +
    NUL + seq (8 bytes, big-endian)`` (ids never contain NUL): a session's responses are one
    contiguous range (``client id + NUL``), in seq order."""
    return client_id.encode() + b"\0" + _SEQ.pack(seq)


def slot_key(client_id: str, seq: int, window: int) -> bytes:
    """The ``session_responses`` key (format 4) of the row holding a session's response to
    ``seq``: ``client id + NUL + seq % window (8 bytes, big-endian)``. The seqs a session
    caches are in ``(max_seq - window, max_seq]``, so each has a slot of its own; a row whose
    seq is no longer in the window is what the slot held before, overwritten by the next seq
    that takes it, and never read as a response (``sm_rows.read_small``)."""
    return client_id.encode() + b"\0" + _SEQ.pack(seq % window)


def response_bytes(response: Response) -> bytes:
    """``cbor2.dumps(response_to_plain(response))``: the same bytes, a ``Success`` (every
    applied write's answer) without building its map or calling the encoder (a third of a
    response row's cost: docs/performance.md, Round 15)."""
    if type(response) is Success:
        return _SUCCESS_HEAD + _uint(response.version)
    return cbor2.dumps(response_to_plain(response))


def _head_row(session: Session) -> list[Any]:
    """A session's ``sessions`` row (format 3): what is not a response."""
    return [
        session.owner,
        session.client_id,
        session.last_index,
        session.last_ms,
        session.max_seq,
    ]


def _drop_responses(cursor: lmdb.Cursor, prefix: bytes) -> None:
    """Delete every ``session_responses`` row of the session whose keys start with ``prefix``
    (``client id + NUL``): one seek, then one delete per row."""
    if not cursor.set_range(prefix):
        return
    end = len(prefix)
    while True:
        key = cast(bytes, cursor.key())  # bytes: the cursor was not opened with buffers
        if key[:end] != prefix:
            return
        if not cursor.delete():  # moved to the next row; False: there is none
            return


def _policy_row(p: SessionPolicy) -> list[Any]:
    return [p.window, p.max_sessions, p.ttl_entries, p.ttl_ms, p.max_sessions_per_owner]


def _policy_from_row(row: Any) -> SessionPolicy:
    window, max_sessions, ttl_entries, ttl_ms, per_owner = row
    return SessionPolicy(
        window=window,
        max_sessions=max_sessions,
        ttl_entries=ttl_entries,
        ttl_ms=ttl_ms,
        max_sessions_per_owner=per_owner,
    )


class LmdbJournal(StateJournal):
    """Writes the changed sessions, balances and tokens and the state's scalars when a batch
    commits (see the module docstring).

    A session (format 4) is its head row in ``sessions`` and its response rows in
    ``session_responses``, one per slot of the window, each carrying the session's last
    index and time as they were when it was written. What a session is, read back
    (``sm_rows.read_small``): its owner from the head; its last index and time, and its max seq,
    the newest of the head's and its rows' (they only grow); its responses the rows whose seq
    is in the window below that max seq. So a batch writes per changed session:

    * its response rows recorded in the batch (each with the session's current last index,
      time: the newest), and the head row only if none is written (a retry, a stale seq: the
      session's activity moved without a response) or the session is new (``opened``);
    * for a session gone (closed, expired, evicted): a delete of its head and of its rows'
      range.

    A keyed write that records its response is one put; nothing is read back, nothing is
    deleted: the slot's row that fell out of the window is overwritten."""

    def __init__(self, store: LmdbStore) -> None:
        self._store = store
        self._sessions_db = store.db("sessions")
        self._responses_db = store.db("session_responses")
        self._ledger_db = store.db("ledger")
        self._tokens_db = store.db("tokens")
        self._meta_db = store.db("meta")
        self._sm: ClusterStateMachine | None = None
        self._dirty_sessions: set[str] = set()
        self._new_sessions: set[str] = set()  # opened in this batch: their head is written
        # client id -> the seqs whose responses were recorded in this batch
        self._dirty_responses: dict[str, set[int]] = {}
        self._dirty_balances: set[str] = set()
        self._dirty_tokens: set[str] = set()
        self._rewrite = False
        self._rewrite_sessions = False
        # The policy whose row was encoded last, and its bytes (``_meta_bytes``).
        self._policy_bytes: tuple[SessionPolicy, bytes] | None = None
        store.before_commit = self._flush

    def attach(self, sm: Any) -> None:
        """The state machine these tables belong to."""
        self._sm = sm

    def rewrite(self) -> None:
        """Write every session, balance and token at the commit (after a restore)."""
        self._rewrite = True

    def session(self, client_id: str) -> None:
        """The session changes in this batch."""
        self._dirty_sessions.add(client_id)

    def opened(self, client_id: str) -> None:
        """The session is opened in this batch: its head row is written."""
        self._dirty_sessions.add(client_id)
        self._new_sessions.add(client_id)

    def response(self, client_id: str, seq: int) -> None:
        """The session's response to ``seq`` is recorded in this batch."""
        found = self._dirty_responses.get(client_id)
        if found is None:
            self._dirty_responses[client_id] = {seq}
        else:
            found.add(seq)

    def balance(self, peer: str) -> None:
        """The balance changes in this batch."""
        self._dirty_balances.add(peer)

    def token(self, token_id: str) -> None:
        """The token changes in this batch."""
        self._dirty_tokens.add(token_id)

    def _flush(self, txn: lmdb.Transaction) -> None:
        sm = self._sm
        if sm is None:
            return
        if self._rewrite:
            self._dirty_sessions.update(s.client_id for s in sm.stored_sessions())
            self._rewrite_sessions = True
            self._dirty_balances.update(peer for peer, _ in sm.ledger_items())
            self._dirty_tokens.update(t.id for t in sm.stored_tokens())
            self._rewrite = False
        if self._rewrite_sessions:
            # every session's head and every response (a restore): all its rows are written
            for s in sm.stored_sessions():
                self._new_sessions.add(s.client_id)
                self._dirty_responses[s.client_id] = set(s.responses)
            self._rewrite_sessions = False
        if self._dirty_sessions:
            self._write_sessions(txn, sm)
        for peer in sorted(self._dirty_balances):
            amount = sm.balance(peer)
            if amount:
                txn.put(peer.encode(), cbor2.dumps(amount), db=self._ledger_db)
            else:
                txn.delete(peer.encode(), db=self._ledger_db)
        for token_id in sorted(self._dirty_tokens):
            token = sm.token(token_id)
            if token is None:
                txn.delete(token_id.encode(), db=self._tokens_db)
            else:
                txn.put(token_id.encode(), cbor2.dumps(_token_row(token)), db=self._tokens_db)
        self._dirty_balances.clear()
        self._dirty_tokens.clear()
        txn.put(b"state", self._meta_bytes(sm), db=self._meta_db)

    def _meta_bytes(self, sm: ClusterStateMachine) -> bytes:
        """The ``meta``/``state`` row in CBOR: ``cbor2.dumps([STATE_FORMAT, index, term,
        clock ms, tokens bootstrapped, policy row, revision])``, the same bytes, spliced (a
        CBOR array is its head followed by its items' encodings: every batch writes this row,
        one per write at one client, session 28): the policy's row is encoded once (it is
        fixed for a state machine), the four integers as CBOR's shortest uints."""
        policy = sm.policy
        encoded = self._policy_bytes
        if encoded is None or encoded[0] is not policy:
            encoded = self._policy_bytes = (policy, cbor2.dumps(_policy_row(policy)))
        index, term, clock_ms, revision = (
            sm.last_applied_index,
            sm.last_applied_term,
            sm.clock_ms,
            sm.revision,
        )
        bootstrapped = sm.tokens_bootstrapped
        if all(map(_plain_uint, (index, term, clock_ms, revision))) and type(bootstrapped) is bool:
            return b"".join(
                (
                    _META_HEAD,
                    _uint(index),
                    _uint(term),
                    _uint(clock_ms),
                    _CBOR_TRUE if bootstrapped else _CBOR_FALSE,
                    encoded[1],
                    _uint(revision),
                )
            )
        # (cannot happen: a state's indexes are uints, always encoded as above)
        return cbor2.dumps(
            [STATE_FORMAT, index, term, clock_ms, bootstrapped, _policy_row(policy), revision]
        )

    def _write_sessions(self, txn: lmdb.Transaction, sm: ClusterStateMachine) -> None:
        """The changed sessions' rows (format 4, see the class docstring). The response rows
        are put together at the end (``putmulti``: one call, not one each; round 18): a
        session's rows are a key range of its own (``client id + NUL``), so putting them after
        the other sessions' deletes writes the same rows."""
        new, dirty_responses = self._new_sessions, self._dirty_responses
        window = sm.policy.window
        sessions_db = self._sessions_db
        dumps, pack, row_head = cbor2.dumps, _NUL_SEQ.pack, _ROW.pack
        success16, success32, success_head = _ROW_SUCCESS16.pack, _ROW_SUCCESS32.pack, _SUCCESS_HEAD
        get_session = sm.session
        rows: list[tuple[bytes, bytes]] = []
        append = rows.append
        cursor = None
        for client_id in self._dirty_sessions:
            key = client_id.encode()
            session = get_session(client_id)
            seqs = dirty_responses.get(client_id)
            if session is None:
                txn.delete(key, db=sessions_db)
                if cursor is None:
                    cursor = txn.cursor(db=self._responses_db)
                _drop_responses(cursor, key + b"\0")
                continue
            written = False
            if seqs:
                responses = session.responses
                last_index, last_ms = session.last_index, session.last_ms
                for seq in seqs:
                    response = responses.get(seq)
                    if response is not None:  # else out of the window again already
                        if type(response) is Success:  # ``response_bytes``, written out
                            version = response.version
                            if type(version) is not int:  # (cannot happen: the general way)
                                value = row_head(seq, last_index, last_ms) + response_bytes(
                                    response
                                )
                            elif 0x10000 <= version < 0x100000000:
                                value = success32(
                                    seq, last_index, last_ms, success_head, 0x1A, version
                                )
                            elif 0x100 <= version < 0x10000:
                                value = success16(
                                    seq, last_index, last_ms, success_head, 0x19, version
                                )
                            else:
                                value = row_head(seq, last_index, last_ms) + (
                                    success_head + _uint(version)
                                )
                        else:
                            value = row_head(seq, last_index, last_ms) + response_bytes(response)
                        append((key + pack(seq % window), value))  # ``slot_key``
                        written = True
            if not written or client_id in new:
                txn.put(key, dumps(_head_row(session)), db=sessions_db)
        if rows:
            if cursor is None:
                cursor = txn.cursor(db=self._responses_db)
            cursor.putmulti(rows)
        self._dirty_sessions.clear()
        new.clear()
        dirty_responses.clear()


def _objects_on(store: LmdbStore) -> Objects:
    from univrs.sm.snapshot import (
        _instance_row,
        _instance_v1,
        _node_row,
        _node_v1,
        _workload_row,
        _workload_v1,
    )
    from univrs.storage.sm_row_bytes import workload_bytes

    # a workload's bytes encoded once per object (a scale's spliced: ``sm_row_bytes``), the same
    # bytes as ``cbor_codec``'s encode
    w_enc, w_dec = workload_bytes, cbor_codec(_workload_row, _workload_v1, "workload")[1]
    i_enc, i_dec = cbor_codec(_instance_row, _instance_v1, "instance")
    n_enc, n_dec = cbor_codec(_node_row, _node_v1, "node")
    return Objects(
        workloads=LmdbTable(store, "workloads", w_enc, w_dec, rows=True),
        instances=LmdbTable(store, "instances", i_enc, i_dec, rows=True),
        nodes=LmdbTable(store, "nodes", n_enc, n_dec, rows=True),
        by_workload=LmdbPairIndex(store, "by_workload"),
        by_node=LmdbPairIndex(store, "by_node"),
        counts=LmdbTable(
            store, "workload_counts", encode_counts, decode_counts, remember_absent=True
        ),
        batch=store.batch,
        pinned_read=store.pinned_read,
        journal=LmdbJournal(store),
    )


def build_counts(txn: lmdb.Transaction, store: LmdbStore) -> int:
    """Write ``workload_counts`` from the instances, in ``txn`` (an env of format 1, which
    had no such table, opened by this version: ``StateEnv.load``); returns the rows written.
    Once per env: one read of every instance row, the counts of at most a row per workload
    in memory meanwhile."""
    counts = count_instances(txn, store)
    db = store.db("workload_counts")
    txn.drop(db, delete=False)
    txn.cursor(db=db).putmulti(
        [(key, encode_counts(tuple(counts[key]))) for key in sorted(counts)], append=True
    )
    return len(counts)


def count_instances(txn: lmdb.Transaction, store: LmdbStore) -> dict[bytes, list[int]]:
    """The counts rows the instance rows give (workload id -> counts by status), read in
    ``txn``: one read of every instance row."""
    slot = {"pending": 0, "running": 1, "succeeded": 2, "failed": 3, "unknown": 4}
    counts: dict[bytes, list[int]] = {}
    loads = cbor2.loads
    for raw_key, raw in txn.cursor(store.db("instances")):
        try:
            row = loads(raw)
        except cbor2.CBORDecodeError:
            row = None
        if type(row) is not list or len(row) < 4 or type(row[1]) is not str or row[3] not in slot:
            # an upgrade's or a scrub's reading: said as the table and the key (s15-small)
            raise StorageError(f"instances row {bytes(raw_key)!r} is malformed")
        key = row[1].encode()
        found = counts.get(key)
        if found is None:
            found = counts[key] = [0, 0, 0, 0, 0]
        found[slot[row[3]]] += 1
    return counts


def counts_damage(txn: lmdb.Transaction, store: LmdbStore) -> str | None:
    """What is wrong with the stored ``workload_counts`` rows (derived data, not in the state
    digest) against a recount of the instance rows, or None (s14-review: ``univrs
    state-scrub`` checks them too)."""
    expected = count_instances(txn, store)
    wrong: list[str] = []
    for key, raw in txn.cursor(store.db("workload_counts")):
        want = expected.pop(bytes(key), None)
        try:
            stored = list(decode_counts(bytes(raw)))
        except struct.error:
            stored = None
        if stored != want:
            wrong.append(bytes(key).decode(errors="replace"))
    wrong += [key.decode(errors="replace") for key in expected]  # rows missing
    if not wrong:
        return None
    named = ", ".join(sorted(wrong)[:3])
    return f"the instance counts of {len(wrong)} workloads ({named}) differ from their instances"


def objects_in_lmdb(path: str, *, sync: bool = True, map_size: int = DEFAULT_MAP_SIZE) -> Objects:
    """``Objects`` whose tables and indexes live in a new LMDB environment at ``path``, with
    the journal that writes the small tables and the applied index there too; each applied
    command is one write transaction unless the caller opened a batch."""
    return _objects_on(LmdbStore(path, sync=sync, map_size=map_size))
