"""The state machine's object tables in LMDB: the ``Table`` / ``PairIndex`` interface of
``univrs.sm.tables`` on named databases of one LMDB environment (first step of
docs/state-at-scale.md's design; in the storage layer: the state machine itself stays pure).

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

Not done yet (docs/state-at-scale.md): the other tables (sessions, ledger, tokens) and the
applied index in the same transaction, restart from the environment, snapshots as a read
transaction; the runtime still uses the in-memory backend (``objects_in_lmdb`` is for tests and
measurements).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import cbor2
import lmdb

from univrs.sm.objects import Objects
from univrs.sm.tables import PairIndex, Table

V = TypeVar("V")

SEP = b"\x00"
DEFAULT_MAP_SIZE = 1 << 34  # 16 GiB of address space; the file grows as needed


class LmdbStore:
    """One LMDB environment holding named tables, with the batch (write transaction) they
    share."""

    def __init__(self, path: str, *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True) -> None:
        self.env = lmdb.open(path, map_size=map_size, max_dbs=16, sync=sync, metasync=sync)
        self._txn: lmdb.Transaction | None = None

    def db(self, name: str) -> Any:
        """The named database (created if absent)."""
        return self.env.open_db(name.encode())

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
        if not cursor.set_range(start):
            return
        for raw_key, raw in cursor:
            key = bytes(raw_key)  # bytes already (no copy): buffers are off
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
        with self._store.reading() as txn:
            raw = txn.get(key.encode(), db=self._db)
        return None if raw is None else self._decode(bytes(raw))

    def put(self, key: str, value: V) -> V | None:
        """Set ``key``; returns the replaced value (None if new)."""
        with self._store.writing() as txn:
            raw = txn.replace(key.encode(), self._encode(value), db=self._db)
        return None if raw is None else self._decode(bytes(raw))

    def pop(self, key: str) -> V:
        """Remove ``key`` and return its value; ``KeyError`` if absent."""
        with self._store.writing() as txn:
            raw = txn.pop(key.encode(), db=self._db)
        if raw is None:
            raise KeyError(key)
        return self._decode(bytes(raw))

    def __contains__(self, key: object) -> bool:
        if type(key) is not str:
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


def objects_in_lmdb(path: str, *, sync: bool = True, map_size: int = DEFAULT_MAP_SIZE) -> Objects:
    """``Objects`` whose tables and indexes live in a new LMDB environment at ``path``; each
    applied command is one write transaction (``Objects.batch``)."""
    from univrs.sm.snapshot import (
        _instance_row,
        _instance_v1,
        _node_row,
        _node_v1,
        _workload_row,
        _workload_v1,
    )

    store = LmdbStore(path, sync=sync, map_size=map_size)
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
    )
