"""The state machine in LMDB: the object tables (the ``Table`` / ``PairIndex`` interface of
``univrs.sm.tables``), the session table, the ledger, the API tokens and the applied index on
named databases of one LMDB environment (docs/state-at-scale.md's design; in the storage
layer: the state machine itself stays pure).

Keys are the UTF-8 bytes of the ids (LMDB orders keys bytewise, which for UTF-8 is code point
order: the order of Python's ``str``, the in-memory backend's). A pair (first, second) is the
key ``first + NUL + second``: ids never contain NUL (``univrs.sm.validate``: letters, digits
and ``._:@+=-``), so bytewise order of these keys is the order of the tuples, and the pairs of
one ``first`` are a contiguous range. Values are encoded by the functions the table is given
(for objects: the snapshot's rows as CBOR, ``object_tables``).

Transactions: inside ``LmdbStore.batch()`` every read and write goes through one write
transaction, committed when the block ends (aborted if it raises), so a command's changes are
durable together or not at all; outside a batch each write is its own transaction and reads
open a read transaction (an iterator holds its read transaction until it is exhausted or
closed). One thread uses a store at a time (the state machine's).

The small tables (``LmdbJournal``): the state machine keeps its sessions, balances and tokens
as Python objects too (bounded: at most ``SessionPolicy.max_sessions`` sessions and
``MAX_TOKENS`` tokens) and tells the journal which keys it changes; when the batch commits, the
journal writes their current values, and the applied index, term, clock and the other scalars,
in the same transaction. So what the environment holds is always the state after some applied
index, never half a batch. Databases:

* ``sessions``: client id -> CBOR ``[owner, *snapshot session row]``;
* ``session_activity``: the activity order, key ``last_index (8 bytes, big-endian) + client
  id``, empty value: a cursor over it lists the sessions least recently active first;
* ``ledger``: peer -> CBOR balance; ``tokens``: token id -> CBOR snapshot token row;
* ``meta``: ``state`` -> CBOR ``[STATE_FORMAT, last_index, last_term, clock_ms,
  tokens_bootstrapped, policy row, revision]``, ``cluster`` -> the cluster id (UTF-8).

``StateEnv`` is the node's: open (``load``: O(small tables), the object tables are not read),
replace everything from a snapshot in one transaction (``replace``), force to disk (``sync``).
"""

from __future__ import annotations

import contextlib
import os
import struct
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import cbor2
import lmdb

from univrs.errors import StorageError
from univrs.sm.objects import Objects
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.state import ClusterStateMachine
from univrs.sm.tables import PairIndex, StateJournal, Table
from univrs.sm.tokens import Token

V = TypeVar("V")

SEP = b"\x00"
MAX_KEY = 511  # LMDB's largest key (bytes); no valid id comes near it


def _storable(raw_key: bytes) -> bool:
    """A key LMDB can look up: a key that is not (empty, or too long: an invalid id a command
    carries, looked up before it is refused) is simply absent, never an LMDB error."""
    return 0 < len(raw_key) <= MAX_KEY


DEFAULT_MAP_SIZE = 1 << 34  # 16 GiB of address space; the file grows as needed


class LmdbStore:
    """One LMDB environment holding named tables, with the batch (write transaction) they
    share."""

    def __init__(self, path: str, *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True) -> None:
        self.env = lmdb.open(path, map_size=map_size, max_dbs=16, sync=sync, metasync=sync)
        self._txn: lmdb.Transaction | None = None
        self._dbs: dict[str, Any] = {}
        # Called with the batch's transaction just before it commits: the journal's writes
        # (one journal per store: the state machine last opened on it).
        self.before_commit: Callable[[lmdb.Transaction], None] | None = None

    def db(self, name: str) -> Any:
        """The named database (created if absent; in the batch's transaction if one is open:
        LMDB has one writer, a second write transaction would wait for it forever)."""
        db = self._dbs.get(name)
        if db is None:
            db = self._dbs[name] = self.env.open_db(name.encode(), txn=self._txn)
        return db

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One write transaction for everything done in the block (nested: the outer one)."""
        if self._txn is not None:
            yield
            return
        txn = self.env.begin(write=True)
        self._txn = txn
        try:
            yield
            if self.before_commit is not None:
                self.before_commit(txn)
        except BaseException:
            self._txn = None
            txn.abort()
            raise
        self._txn = None
        txn.commit()

    @contextlib.contextmanager
    def writing(self) -> Iterator[lmdb.Transaction]:
        """The batch's transaction, or a transaction of its own for one write."""
        if self._txn is not None:
            yield self._txn
            return
        with self.env.begin(write=True) as txn:
            yield txn

    @contextlib.contextmanager
    def reading(self) -> Iterator[lmdb.Transaction]:
        """The batch's transaction (it sees its own writes), or a read transaction."""
        if self._txn is not None:
            yield self._txn
            return
        with self.env.begin() as txn:
            yield txn

    def close(self) -> None:
        """Close the environment."""
        self.env.close()


def _scan(
    store: LmdbStore, db: Any, start: bytes, prefix: bytes, skip: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) from the first key >= ``start`` while keys begin with ``prefix``, the key
    ``skip`` left out."""
    with store.reading() as txn:
        cursor = txn.cursor(db)
        if not cursor.set_range(start[:MAX_KEY]):  # a longer start: from its prefix, then
            return  # skip the keys below it (no stored key is that long)
        for raw_key, raw in cursor:
            key = bytes(raw_key)  # bytes already (no copy): buffers are off
            if key < start:
                continue
            if not key.startswith(prefix):
                return
            if key != skip:
                yield key, bytes(raw)


class LmdbTable(Table[V]):
    """``Table`` on a named LMDB database."""

    def __init__(
        self,
        store: LmdbStore,
        name: str,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
    ) -> None:
        self._store, self._db = store, store.db(name)
        self._encode, self._decode = encode, decode

    def get(self, key: str) -> V | None:
        """The value at ``key``, or None."""
        raw_key = key.encode()
        if not _storable(raw_key):
            return None
        with self._store.reading() as txn:
            raw = txn.get(raw_key, db=self._db)
        return None if raw is None else self._decode(bytes(raw))

    def put(self, key: str, value: V) -> V | None:
        """Set ``key``; returns the replaced value (None if new)."""
        with self._store.writing() as txn:
            raw = txn.replace(key.encode(), self._encode(value), db=self._db)
        return None if raw is None else self._decode(bytes(raw))

    def pop(self, key: str) -> V:
        """Remove ``key`` and return its value; ``KeyError`` if absent."""
        if not _storable(key.encode()):
            raise KeyError(key)
        with self._store.writing() as txn:
            raw = txn.pop(key.encode(), db=self._db)
        if raw is None:
            raise KeyError(key)
        return self._decode(bytes(raw))

    def __contains__(self, key: object) -> bool:
        if type(key) is not str or not _storable(key.encode()):
            return False
        with self._store.reading() as txn:
            return txn.get(key.encode(), db=self._db) is not None

    def __len__(self) -> int:
        with self._store.reading() as txn:
            return int(txn.stat(self._db)["entries"])

    def _items(self, after: str | None) -> Iterator[tuple[bytes, bytes]]:
        start = b"" if after is None else after.encode()
        return _scan(self._store, self._db, start, b"", start if after is not None else None)

    def keys(self, after: str | None = None) -> Iterator[str]:
        """Keys in order (greater than ``after`` if given)."""
        return (key.decode() for key, _ in self._items(after))

    def values(self, after: str | None = None) -> Iterator[V]:
        """Values in key order (of keys greater than ``after`` if given)."""
        decode = self._decode
        return (decode(value) for _, value in self._items(after))

    def view(self) -> Callable[[], Iterator[V]]:
        """The values now, in key order, for later (a snapshot's encoder, in another thread):
        a read transaction begun now (LMDB's MVCC keeps what it sees while writes go on),
        ended when the function is dropped. O(1) now: nothing is read or copied until it is
        called. Outside a batch only (a snapshot is captured between applied batches)."""
        assert self._store._txn is None, "a view is taken between batches"
        txn = self._store.env.begin()
        db, decode = self._db, self._decode

        def values() -> Iterator[V]:
            for _, raw in txn.cursor(db):
                yield decode(bytes(raw))

        weakref.finalize(values, txn.abort)
        return values

    def load(self, items: Iterable[tuple[str, V]]) -> list[str]:
        """Fill an empty table in one transaction; returns the repeated keys."""
        repeated: list[str] = []
        encode = self._encode
        with self._store.writing() as txn:
            assert txn.stat(self._db)["entries"] == 0, "load fills an empty table"
            for key, value in items:
                raw_key, raw = key.encode(), encode(value)
                if not txn.put(raw_key, raw, db=self._db, overwrite=False):
                    repeated.append(key)
                    txn.put(raw_key, raw, db=self._db)  # the last value wins, as in memory
        return repeated


class LmdbPairIndex(PairIndex):
    """``PairIndex`` on a named LMDB database (key ``first NUL second``, empty value)."""

    def __init__(self, store: LmdbStore, name: str) -> None:
        self._store, self._db = store, store.db(name)

    @staticmethod
    def _key(first: str, second: str) -> bytes:
        return first.encode() + SEP + second.encode()

    def add(self, first: str, second: str) -> None:
        """Add the pair (no effect if present)."""
        with self._store.writing() as txn:
            txn.put(self._key(first, second), b"", db=self._db)

    def remove(self, first: str, second: str) -> None:
        """Remove the pair; ``ValueError`` if absent."""
        with self._store.writing() as txn:
            if not txn.delete(self._key(first, second), db=self._db):
                raise ValueError(f"pair {(first, second)!r} is not in the index")

    def seconds(self, first: str, after: str | None = None) -> Iterator[str]:
        """The seconds paired with ``first``, in order (greater than ``after`` if given)."""
        prefix = first.encode() + SEP
        start = prefix if after is None else prefix + after.encode()
        skip = None if after is None else start
        n = len(prefix)
        return (key[n:].decode() for key, _ in _scan(self._store, self._db, start, prefix, skip))

    def __contains__(self, pair: object) -> bool:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return False
        first, second = pair
        if type(first) is not str or type(second) is not str:
            return False
        if not _storable(self._key(first, second)):
            return False
        with self._store.reading() as txn:
            return txn.get(self._key(first, second), db=self._db) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for key, _ in _scan(self._store, self._db, b"", b"", None):
            first, _sep, second = key.partition(SEP)
            yield first.decode(), second.decode()

    def __len__(self) -> int:
        with self._store.reading() as txn:
            return int(txn.stat(self._db)["entries"])

    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Fill an empty index in one transaction (duplicates collapse)."""
        with self._store.writing() as txn:
            assert txn.stat(self._db)["entries"] == 0, "load fills an empty index"
            for first, second in pairs:
                txn.put(self._key(first, second), b"", db=self._db)


def cbor_codec(
    to_row: Callable[[V], list[Any]], from_row: Callable[[Any, str], V], what: str
) -> tuple[Callable[[V], bytes], Callable[[bytes], V]]:
    """(encode, decode) of a value as its snapshot row in CBOR."""

    def encode(value: V) -> bytes:
        return cbor2.dumps(to_row(value))

    def decode(raw: bytes) -> V:
        return from_row(cbor2.loads(raw), what)

    return encode, decode


STATE_FORMAT = 1  # the layout of the small tables and meta below
_ACTIVITY = struct.Struct(">Q")
_SMALL_DBS = ("sessions", "session_activity", "ledger", "tokens")
_OBJECT_DBS = ("workloads", "instances", "nodes", "by_workload", "by_node")
_ALL_DBS = frozenset((*_OBJECT_DBS, *_SMALL_DBS, "meta"))


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

    def balance(self, peer: str) -> None:
        """The balance changes in this batch."""
        self._dirty_balances.add(peer)

    def token(self, token_id: str) -> None:
        """The token changes in this batch."""
        self._dirty_tokens.add(token_id)

    def _flush(self, txn: lmdb.Transaction) -> None:
        from univrs.sm.snapshot import _session_row, _token_row

        sm = self._sm
        if sm is None:
            return
        if self._rewrite:
            self._dirty_sessions.update(s.client_id for s in sm.stored_sessions())
            self._dirty_balances.update(peer for peer, _ in sm.ledger_items())
            self._dirty_tokens.update(t.id for t in sm.stored_tokens())
            self._rewrite = False
        for client_id in sorted(self._dirty_sessions):
            key = client_id.encode()
            old = txn.get(key, db=self._sessions_db)
            if old is not None:
                last_index = cbor2.loads(old)[2]
                txn.delete(_ACTIVITY.pack(last_index) + key, db=self._activity_db)
            session = sm.session(client_id)
            if session is None:
                txn.delete(key, db=self._sessions_db)
                continue
            row = [session.owner, *_session_row(session)]
            txn.put(key, cbor2.dumps(row), db=self._sessions_db)
            txn.put(_ACTIVITY.pack(session.last_index) + key, b"", db=self._activity_db)
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


def _objects_on(store: LmdbStore) -> Objects:
    from univrs.sm.snapshot import (
        _instance_row,
        _instance_v1,
        _node_row,
        _node_v1,
        _workload_row,
        _workload_v1,
    )

    w_enc, w_dec = cbor_codec(_workload_row, _workload_v1, "workload")
    i_enc, i_dec = cbor_codec(_instance_row, _instance_v1, "instance")
    n_enc, n_dec = cbor_codec(_node_row, _node_v1, "node")
    return Objects(
        workloads=LmdbTable(store, "workloads", w_enc, w_dec),
        instances=LmdbTable(store, "instances", i_enc, i_dec),
        nodes=LmdbTable(store, "nodes", n_enc, n_dec),
        by_workload=LmdbPairIndex(store, "by_workload"),
        by_node=LmdbPairIndex(store, "by_node"),
        batch=store.batch,
        journal=LmdbJournal(store),
    )


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


class StateEnv:
    """A node's persistent state machine: one LMDB environment (``data_dir/state.lmdb``)
    holding every table and the applied index (see the module docstring).

    Opened with ``sync=False`` by default: a commit is not fsynced (a process crash loses
    nothing, the page cache has it; a machine crash may lose the last batches, so the state
    may be behind the durable log, never ahead of it: replay covers it). ``sync`` forces it to
    disk; the node calls it before compacting its log below the state's applied index."""

    def __init__(self, path: str, *, sync: bool = False, map_size: int = DEFAULT_MAP_SIZE) -> None:
        try:
            os.makedirs(path, exist_ok=True)
            self.store = LmdbStore(path, sync=sync, map_size=map_size)
        except (lmdb.Error, OSError) as exc:
            raise StorageError(f"state env {path} cannot be opened: {exc}") from None
        self.path = path
        # Another LMDB environment put here (a copy of raft.lmdb, ...) is refused before
        # anything is created in it.
        with self.store.env.begin() as txn:
            foreign = sorted(
                bytes(k).decode(errors="replace")
                for k, _ in txn.cursor()
                if bytes(k).decode(errors="replace") not in _ALL_DBS
            )
        if foreign:
            self.store.close()
            raise StorageError(
                f"state env {path} is not a state env: it holds the databases {foreign}"
            )
        for name in (*_OBJECT_DBS, *_SMALL_DBS, "meta"):
            self.store.db(name)
        self._meta = self.store.db("meta")

    def cluster_id(self) -> str | None:
        """The cluster this state belongs to (None: never stamped)."""
        with self.store.env.begin() as txn:
            raw = txn.get(b"cluster", db=self._meta)
        try:
            return None if raw is None else bytes(raw).decode()
        except UnicodeDecodeError:
            raise StorageError(f"state env {self.path}: its cluster id does not decode") from None

    def set_cluster_id(self, cluster_id: str) -> None:
        """Stamp the state with its cluster (durably)."""
        with self.store.env.begin(write=True) as txn:
            txn.put(b"cluster", cluster_id.encode(), db=self._meta)
        self.sync()

    def applied(self) -> tuple[int, int]:
        """(index, term) of the last entry the stored state reflects ((0, 0): empty)."""
        with self.store.env.begin() as txn:
            raw = txn.get(b"state", db=self._meta)
        if raw is None:
            return 0, 0
        try:
            meta = cbor2.loads(raw)
            index, term = meta[1], meta[2]
        except (ValueError, TypeError, KeyError, IndexError, cbor2.CBORDecodeError) as exc:
            raise StorageError(
                f"state env {self.path}: its applied index does not decode: {exc}"
            ) from None
        if type(index) is not int or type(term) is not int:
            raise StorageError(f"state env {self.path}: its applied index does not decode")
        return index, term

    def load(self) -> ClusterStateMachine:
        """The state machine on this environment, as last committed (an empty one if none
        was). Reads the small tables only. ``StorageError`` if they do not decode."""
        objects = _objects_on(self.store)
        try:
            with self.store.env.begin() as txn:
                raw = txn.get(b"state", db=self._meta)
                if raw is None:
                    if any(txn.stat(self.store.db(n))["entries"] for n in _OBJECT_DBS):
                        raise StorageError("tables are filled but the applied index is missing")
                    return ClusterStateMachine(objects=objects)
                fmt, index, term, clock_ms, bootstrapped, policy, revision = cbor2.loads(raw)
                if fmt != STATE_FORMAT:
                    raise StorageError(f"state format {fmt} is not {STATE_FORMAT}")
                sessions, balances, tokens = _read_small(txn, self.store)
            return ClusterStateMachine.resume(
                objects,
                policy=_policy_from_row(policy),
                last_index=index,
                last_term=term,
                clock_ms=clock_ms,
                balances=balances,
                sessions=sessions,
                tokens=tokens,
                tokens_bootstrapped=bootstrapped,
                revision=revision,
            )
        except StorageError as exc:
            raise StorageError(f"state env {self.path}: {exc}") from None
        except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
            raise StorageError(f"state env {self.path} does not decode: {exc}") from None

    def replace(self, sm: ClusterStateMachine) -> ClusterStateMachine:
        """Replace the whole stored state by ``sm``'s (a restored snapshot) in one write
        transaction, and return the state machine on this environment. The old state stays
        whole if this raises."""
        objects = _objects_on(self.store)
        with self.store.batch():
            with self.store.writing() as txn:
                for name in (*_OBJECT_DBS, *_SMALL_DBS):
                    txn.drop(self.store.db(name), delete=False)
            stored = ClusterStateMachine.from_parts(
                policy=sm.policy,
                last_index=sm.last_applied_index,
                last_term=sm.last_applied_term,
                clock_ms=sm.clock_ms,
                workloads=sm.stored_workloads(),
                instances=sm.stored_instances(),
                nodes=sm.stored_nodes(),
                balances=list(sm.ledger_items()),
                sessions=list(sm.stored_sessions()),
                tokens=list(sm.stored_tokens()),
                tokens_bootstrapped=sm.tokens_bootstrapped,
                revision=sm.revision,
                objects=objects,
            )
        return stored

    def sync(self) -> None:
        """Force every committed transaction to disk."""
        self.store.env.sync(True)

    def close(self) -> None:
        """Force to disk and close."""
        self.sync()
        self.store.close()
