"""The small tables of the state machine in LMDB (sessions, their activity order, the ledger,
the tokens) and ``meta`` (the applied index with the state's scalars), written by the journal
when a batch commits; and ``Objects`` on a store (the layout: ``univrs.storage.sm_tables``).
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
import lmdb

from univrs.errors import StorageError
from univrs.sm.objects import Objects
from univrs.sm.plain import response_to_plain
from univrs.sm.responses import Response
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.state import ClusterStateMachine
from univrs.sm.tables import StateJournal
from univrs.sm.tokens import Token
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
# ``workload_counts`` (s14-page); an env of format 1 gets it built when opened
# (``build_counts``), then says 2.
STATE_FORMAT = 2
_ACTIVITY = struct.Struct(">Q")
_SMALL_DBS = ("sessions", "session_activity", "ledger", "tokens")
_OBJECT_DBS = ("workloads", "instances", "nodes", "by_workload", "by_node", "workload_counts")
_ALL_DBS = frozenset((*_OBJECT_DBS, *_SMALL_DBS, "meta"))


# What the journal remembers of a session's stored row: its responses' seqs and objects, and
# each one's encoding ``dumps(seq) + dumps(plain)``, in the row's order.
Encoded = tuple[list[int], list[Response], list[bytes]]


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
    commits (see the module docstring)."""

    def __init__(self, store: LmdbStore) -> None:
        self._store = store
        self._sessions_db = store.db("sessions")
        self._activity_db = store.db("session_activity")
        self._ledger_db = store.db("ledger")
        self._tokens_db = store.db("tokens")
        self._meta_db = store.db("meta")
        self._sm: ClusterStateMachine | None = None
        self._dirty_sessions: set[str] = set()
        self._dirty_balances: set[str] = set()
        self._dirty_tokens: set[str] = set()
        self._rewrite = False
        # Per session this journal wrote lately (at most ``SESSION_ROWS``, the oldest written
        # dropped first): the activity index it stored and its responses' encodings
        # (``_session_bytes``), so a write of the session neither reads its old row back nor
        # encodes a response again.
        # Invariant: what the sessions table holds in the open batch (or committed); emptied
        # when the store forgets its caches (an abort: ``LmdbStore.invalidate``).
        self._rows: dict[str, tuple[int, Encoded]] = {}
        store.before_commit = self._flush
        store.on_invalidate = self._rows.clear

    def attach(self, sm: Any) -> None:
        """The state machine these tables belong to."""
        self._sm = sm

    def rewrite(self) -> None:
        """Write every session, balance and token at the commit (after a restore)."""
        self._rewrite = True

    def session(self, client_id: str) -> None:
        """The session changes in this batch."""
        self._dirty_sessions.add(client_id)

    def balance(self, peer: str) -> None:
        """The balance changes in this batch."""
        self._dirty_balances.add(peer)

    def token(self, token_id: str) -> None:
        """The token changes in this batch."""
        self._dirty_tokens.add(token_id)

    def _flush(self, txn: lmdb.Transaction) -> None:
        from univrs.sm.snapshot import _token_row

        sm = self._sm
        if sm is None:
            return
        if self._rewrite:
            self._dirty_sessions.update(s.client_id for s in sm.stored_sessions())
            self._dirty_balances.update(peer for peer, _ in sm.ledger_items())
            self._dirty_tokens.update(t.id for t in sm.stored_tokens())
            self._rewrite = False
        rows = self._rows
        for client_id in sorted(self._dirty_sessions):
            key = client_id.encode()
            known = rows.pop(client_id, None)  # what this journal stored for it last
            if known is not None:
                stored_index: int | None = known[0]
            else:
                old = txn.get(key, db=self._sessions_db)
                stored_index = None if old is None else cbor2.loads(old)[2]
            if stored_index is not None:
                txn.delete(_ACTIVITY.pack(stored_index) + key, db=self._activity_db)
            session = sm.session(client_id)
            if session is None:
                txn.delete(key, db=self._sessions_db)
                continue
            row, encoded = _session_bytes(session, None if known is None else known[1])
            txn.put(key, row, db=self._sessions_db)
            txn.put(_ACTIVITY.pack(session.last_index) + key, b"", db=self._activity_db)
            rows[client_id] = (session.last_index, encoded)
            if len(rows) > SESSION_ROWS:
                del rows[next(iter(rows))]
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
        self._dirty_sessions.clear()
        self._dirty_balances.clear()
        self._dirty_tokens.clear()
        meta = [
            STATE_FORMAT,
            sm.last_applied_index,
            sm.last_applied_term,
            sm.clock_ms,
            sm.tokens_bootstrapped,
            _policy_row(sm.policy),
            sm.revision,
        ]
        txn.put(b"state", cbor2.dumps(meta), db=self._meta_db)


SESSION_ROWS = 1024  # sessions whose stored row the journal remembers (``LmdbJournal._rows``)


def _session_bytes(session: Session, known: Encoded | None) -> tuple[bytes, Encoded]:
    """The sessions table's row of ``session``, ``cbor2.dumps([owner, *_session_row(session)])``
    byte for byte (a CBOR array is its head and its items' encodings one after the other;
    tests/runtime/test_state_lmdb_caches.py checks it), and what to remember of it.

    The responses' encodings come from ``known`` (the row written before) where they are the
    same: a session's window slides (responses drop off the front, new ones come at the end),
    so the run of ``known`` from the current first seq on, as far as seqs and responses are
    equal (compared in C, list against list), is reused and only the rest is encoded. Equal
    responses encode equally, so the row is exact whatever ``known`` holds."""
    responses = session.responses
    seqs, values = list(responses), list(responses.values())
    n = len(seqs)
    reused: list[bytes] = []
    if known is not None and n:
        old_seqs, old_values, old_parts = known
        try:
            k = old_seqs.index(seqs[0])
        except ValueError:
            k = -1
        if k >= 0:
            m = min(len(old_seqs) - k, n)
            if old_seqs[k : k + m] == seqs[:m] and old_values[k : k + m] == values[:m]:
                reused = old_parts[k : k + m]
    dumps = cbor2.dumps
    parts = reused + [
        dumps(seq) + dumps(response_to_plain(response))
        for seq, response in zip(seqs[len(reused) :], values[len(reused) :], strict=True)
    ]
    head = (
        _array_head(6 + 2 * n)
        + dumps(
            [
                session.owner,
                session.client_id,
                session.last_index,
                session.last_ms,
                session.max_seq,
                n,
            ]
        )[1:]
    )
    return head + b"".join(parts), (seqs, values, parts)


_HEADS: dict[int, bytes] = {}


def _array_head(n: int) -> bytes:
    """The CBOR head of an array of ``n`` items (as cbor2 writes it)."""
    head = _HEADS.get(n)
    if head is None:
        head = cbor2.dumps([0] * n)[: -n or None]  # each 0 is one byte
        if len(_HEADS) < 4096:
            _HEADS[n] = head
    return head


def _objects_on(store: LmdbStore) -> Objects:
    from univrs.sm.snapshot import (
        _instance_row,
        _instance_v1,
        _node_row,
        _node_v1,
        _workload_v1,
        workload_row,
    )

    w_enc, w_dec = cbor_codec(workload_row, _workload_v1, "workload")
    i_enc, i_dec = cbor_codec(_instance_row, _instance_v1, "instance")
    n_enc, n_dec = cbor_codec(_node_row, _node_v1, "node")
    return Objects(
        workloads=LmdbTable(store, "workloads", w_enc, w_dec, rows=True),
        instances=LmdbTable(store, "instances", i_enc, i_dec, rows=True),
        nodes=LmdbTable(store, "nodes", n_enc, n_dec, rows=True),
        by_workload=LmdbPairIndex(store, "by_workload"),
        by_node=LmdbPairIndex(store, "by_node"),
        counts=LmdbTable(store, "workload_counts", encode_counts, decode_counts),
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
    for raw in txn.cursor(store.db("instances")).iternext(keys=False, values=True):
        row = loads(raw)
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


def _read_small(
    txn: lmdb.Transaction, store: LmdbStore
) -> tuple[list[Session], list[tuple[str, int]], list[Token]]:
    from univrs.sm.snapshot_read import _session_v1, _token_v1

    sessions_db, activity_db = store.db("sessions"), store.db("session_activity")
    sessions: list[Session] = []
    for raw_key, _ in txn.cursor(activity_db):
        client_id = bytes(raw_key)[_ACTIVITY.size :]
        raw = txn.get(client_id, db=sessions_db)
        if raw is None:
            raise StorageError(f"session {client_id!r} is in the activity index only")
        owner, *row = cbor2.loads(raw)
        session = _session_v1(row, f"session {client_id!r}")
        session.owner = owner
        sessions.append(session)
    if len(sessions) != txn.stat(sessions_db)["entries"]:
        raise StorageError("the session activity index does not match the sessions")
    balances = [(bytes(k).decode(), cbor2.loads(v)) for k, v in txn.cursor(store.db("ledger"))]
    tokens = [
        _token_v1(cbor2.loads(v), f"token {bytes(k)!r}") for k, v in txn.cursor(store.db("tokens"))
    ]
    return sessions, balances, tokens
