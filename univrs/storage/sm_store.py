"""The LMDB side of the state machine's tables: one environment with named databases and the
write transaction they share (``LmdbStore``), the object tables (``LmdbTable``), the pair
indexes (``LmdbPairIndex``) and a table's stored rows read raw for a snapshot
(``LmdbRawRows``). The layout and transactions are described in ``univrs.storage.sm_tables``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import struct
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import cbor2
import lmdb

from univrs.sm.tables import PairIndex, RawRows, Table
from univrs.storage import nospace

V = TypeVar("V")

SEP = b"\x00"
MAX_KEY = 511  # LMDB's largest key (bytes); no valid id comes near it


def _storable(raw_key: bytes) -> bool:
    """A key LMDB can look up: a key that is not (empty, or too long: an invalid id a command
    carries, looked up before it is refused) is simply absent, never an LMDB error."""
    return 0 < len(raw_key) <= MAX_KEY


_NESTED = contextlib.nullcontext()  # reusable: it holds nothing


class _Batch:
    """``LmdbStore.batch``'s context when no batch is open: a write transaction begun when the
    block is entered, committed with the journal's writes when it ends (``_commit``), aborted
    if it raises (``_abort``; the exception goes on). A class, not a generator context
    manager: one is entered per applied entry at one client (session 28)."""

    __slots__ = ("_store", "_txn")

    def __init__(self, store: LmdbStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        store = self._store
        self._txn = store._txn = store.env.begin(write=True)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self._store._commit(self._txn)
        else:
            self._store._abort(self._txn)  # (and the block's exception goes on)


DEFAULT_MAP_SIZE = 1 << 34  # 16 GiB of address space; the file grows as needed


class LmdbStore:
    """One LMDB environment holding named tables, with the batch (write transaction) they
    share."""

    def __init__(self, path: str, *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True) -> None:
        # Private like the log's environment (univrs/storage/env.py): the folder 0700, the
        # files 0600 (lmdb.open alone made them 0755/0644; it would make a folder it creates
        # 0600, which its owner could not enter).
        os.makedirs(path, mode=0o700, exist_ok=True)
        self.env = lmdb.open(
            path, map_size=map_size, max_dbs=16, sync=sync, metasync=sync, mode=0o600
        )
        self._txn: lmdb.Transaction | None = None
        # True while ``_txn`` is a read transaction pinned by ``pinned_read`` (a page): the
        # tables' reads share it; no batch or write may begin until it ends.
        self._pinned = False
        self._dbs: dict[str, Any] = {}
        # Called with the batch's transaction just before it commits: the journal's writes
        # (one journal per store: the state machine last opened on it).
        self.before_commit: Callable[[lmdb.Transaction], None] | None = None
        # Decoded values of the tables, by database name (``cache``): shared by every table on
        # a database of this store, so they agree whichever wrote last. Invariant: an entry is
        # the value the database holds for its key in the open batch, or committed when none
        # is open. Anything that ends a transaction without committing it (an abort, a failed
        # commit) or writes around the tables (``invalidate``) empties them all.
        self._caches: dict[str, dict[str, Any]] = {}
        # Called by ``invalidate`` (the journal forgets what it remembers of the stored rows).
        self.on_invalidate: Callable[[], None] | None = None

    def db(self, name: str) -> Any:
        """The named database (created if absent; in the batch's transaction if one is open:
        LMDB has one writer, a second write transaction would wait for it forever)."""
        db = self._dbs.get(name)
        if db is None:
            db = self._dbs[name] = self.env.open_db(name.encode(), txn=self._txn)
        return db

    def batch(self) -> contextlib.AbstractContextManager[object]:
        """One write transaction for everything done in the block (nested: the outer one, at
        the cost of a ``nullcontext``: the state machine opens one per command)."""
        if self._pinned:
            raise RuntimeError("a write batch begun inside a pinned read")
        if self._txn is not None:
            return _NESTED
        return _Batch(self)

    @contextlib.contextmanager
    def pinned_read(self) -> Iterator[None]:
        """One read transaction for every read of the tables in the block (a page of a list:
        its rows, their indexes and lookups), instead of one per lookup or scan. In a batch:
        the batch's transaction (nothing pinned). The block must not write (a batch or a write
        begun in it raises ``RuntimeError``) and must consume its scans before it ends."""
        if self._txn is not None:
            yield
            return
        txn = self.env.begin()
        self._txn, self._pinned = txn, True
        try:
            yield
        finally:
            self._txn, self._pinned = None, False
            txn.abort()

    def _commit(self, txn: lmdb.Transaction) -> None:
        """End the batch ``txn`` whose block ended without an exception: the journal's
        writes (``before_commit``), then the commit; aborted if the journal raises."""
        try:
            if self.before_commit is not None:
                self.before_commit(txn)
        except BaseException:
            self._abort(txn)
            raise
        self._txn = None
        try:
            txn.commit()
        except BaseException as exc:
            self.invalidate()
            full = nospace.disk_full(pathlib.Path(self.env.path(), "data.mdb"), exc)
            if full is not None:
                raise full from None  # says so, not "Input/output error" (nospace.py)
            raise

    def _abort(self, txn: lmdb.Transaction) -> None:
        """End the batch ``txn`` without committing it (its block or the journal raised)."""
        self._txn = None
        self.invalidate()
        txn.abort()

    @contextlib.contextmanager
    def writing(self) -> Iterator[lmdb.Transaction]:
        """The batch's transaction, or a transaction of its own for one write."""
        if self._pinned:
            raise RuntimeError("a write begun inside a pinned read")
        if self._txn is not None:
            yield self._txn
            return
        try:
            with self.env.begin(write=True) as txn:
                yield txn
        except BaseException:
            self.invalidate()  # aborted: a cached value may be one it wrote
            raise

    def cache(self, name: str) -> dict[str, Any]:
        """The decoded values of database ``name`` (see ``__init__``: ``LmdbTable`` keeps it)."""
        return self._caches.setdefault(name, {})

    def invalidate(self) -> None:
        """Forget every decoded value (the databases may hold others now)."""
        for cache in self._caches.values():
            cache.clear()
        journal = self.on_invalidate
        if journal is not None:
            journal()

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
    ``skip`` left out.

    The transaction is the one open at the first ``next``, not at the call: the batch's if a
    batch is open then (its writes seen), else a read transaction of the scan's own, held
    until the scan ends. A scan that began in a batch must end in it: iterated on after the
    batch ended (its transaction committed or aborted), it raises ``RuntimeError``."""
    txn = store._txn
    if txn is None:
        with store.env.begin() as own:
            yield from _scan_in(own, db, start, prefix, skip)
        return
    try:
        yield from _scan_in(txn, db, start, prefix, skip)  # (no context manager per scan)
    except lmdb.Error:
        if store._txn is not txn:
            raise RuntimeError(
                "an LMDB scan begun in a batch was iterated after the batch ended"
            ) from None
        raise


def _scan_in(
    txn: lmdb.Transaction, db: Any, start: bytes, prefix: bytes, skip: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
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


CACHE_SIZE = 4096  # decoded values kept per table (``LmdbTable``): the objects written lately
# Cached for a key the database holds no value for (``LmdbTable(remember_absent=True)``).
_ABSENT: Any = object()


class LmdbTable(Table[V]):
    """``Table`` on a named LMDB database, with a bounded cache of decoded values.

    The cache (``LmdbStore.cache``, shared by the tables on the same database) holds up to
    ``cache_size`` values by key: each one read (decoded once) or written lately, the oldest
    written or first read dropped first. Values are immutable, so a cached one is handed out
    as it is, as the in-memory table hands out its own. A write that replaces a cached value
    does not read the old one back, and a read of a cached one touches no page: a command that
    reads an object and writes it back (a scale, an update) decodes nothing.

    With ``remember_absent`` a key read and found absent is cached as absent too (``_ABSENT``,
    the same invariant: the database holds no value for it), so a table read mostly for keys
    it does not hold (``workload_counts``: a workload without instances has no row, and every
    scale reads its counts twice on the leader) touches no page for them either."""

    def __init__(
        self,
        store: LmdbStore,
        name: str,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
        *,
        rows: bool = False,
        cache_size: int = CACHE_SIZE,
        remember_absent: bool = False,
    ) -> None:
        self._store, self._db = store, store.db(name)
        self._encode, self._decode = encode, decode
        # True when ``encode`` writes a value as its snapshot row in CBOR (``cbor_codec`` of
        # the snapshot's row writer): the stored bytes are then the snapshot's (``raw_view``).
        self._rows = rows
        self._cache: dict[str, V] = store.cache(name)
        self._cache_size = cache_size
        self._remember_absent = remember_absent and cache_size > 0

    def _remember(self, key: str, value: V) -> None:
        cache = self._cache
        cache[key] = value
        if len(cache) > self._cache_size:
            del cache[next(iter(cache))]  # the oldest entry (dicts keep insertion order)

    def get(self, key: str) -> V | None:
        """The value at ``key``, or None."""
        cached = self._cache.get(key)
        if cached is not None:
            return None if cached is _ABSENT else cached
        raw_key = key.encode()
        if not _storable(raw_key):
            return None
        txn = self._store._txn  # in a batch: its transaction, no context manager per call
        if txn is not None:
            raw = txn.get(raw_key, db=self._db)
        else:
            with self._store.reading() as txn:
                raw = txn.get(raw_key, db=self._db)
        if raw is None:
            if self._remember_absent:
                self._remember(key, _ABSENT)
            return None
        value = self._decode(bytes(raw))
        if self._cache_size:
            self._remember(key, value)
        return value

    def put(self, key: str, value: V) -> V | None:
        """Set ``key``; returns the replaced value (None if new)."""
        raw_key, raw = key.encode(), self._encode(value)
        old = self._cache.pop(key, None)  # out first: a failed write must not leave it
        txn = self._store._txn
        if old is not None:  # known (present or absent): written without reading it back
            if old is _ABSENT:
                old = None
            if txn is not None:
                # ``txn.put(raw_key, raw, db=self._db)`` (dupdata, overwrite, append: their
                # defaults), by position: lmdb parses keywords slower (s31: every write's put)
                txn.put(raw_key, raw, True, True, False, self._db)
            else:
                with self._store.writing() as txn:
                    txn.put(raw_key, raw, db=self._db)
        else:
            if txn is not None:
                replaced = txn.replace(raw_key, raw, self._db)
            else:
                with self._store.writing() as txn:
                    replaced = txn.replace(raw_key, raw, db=self._db)
            old = None if replaced is None else self._decode(bytes(replaced))
        if self._cache_size:  # ``_remember``, written out (s30: every write's put)
            cache = self._cache
            cache[key] = value
            if len(cache) > self._cache_size:
                del cache[next(iter(cache))]
        return old

    def pop(self, key: str) -> V:
        """Remove ``key`` and return its value; ``KeyError`` if absent."""
        raw_key = key.encode()
        if not _storable(raw_key):
            raise KeyError(key)
        cached = self._cache.pop(key, None)
        if cached is _ABSENT:
            raise KeyError(key)
        with self._store.writing() as txn:
            if cached is not None:
                if not txn.delete(raw_key, db=self._db):  # the cache's invariant broken
                    raise AssertionError(f"cached key {key!r} is not stored")
                return cached
            raw = txn.pop(raw_key, db=self._db)
        if raw is None:
            raise KeyError(key)
        return self._decode(bytes(raw))

    def __contains__(self, key: object) -> bool:
        if type(key) is not str:
            return False
        cached = self._cache.get(key)
        if cached is not None:
            return cached is not _ABSENT
        raw_key = key.encode()
        if not _storable(raw_key):
            return False
        txn = self._store._txn
        if txn is not None:
            return txn.get(raw_key, db=self._db) is not None
        with self._store.reading() as txn:
            return txn.get(raw_key, db=self._db) is not None

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

    def rows(self, after: str | None = None) -> Iterator[list[Any]] | None:
        """The stored snapshot rows in key order (of keys greater than ``after``), decoded
        from CBOR and no further, when this table stores rows (``rows=True``); else None."""
        if not self._rows:
            return None
        loads = cbor2.loads
        return (loads(value) for _, value in self._items(after))

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

    def raw_view(self) -> RawRows | None:
        """The stored values now, as the snapshot rows they are (``LmdbRawRows``), when this
        table stores snapshot rows; None otherwise. O(1) now, like ``view``."""
        if not self._rows:
            return None
        assert self._store._txn is None, "a view is taken between batches"
        return LmdbRawRows(self._store.env.begin(), self._db)

    def load(self, items: Iterable[tuple[str, V]]) -> list[str]:
        """Fill an empty table in one transaction; returns the repeated keys."""
        repeated: list[str] = []
        encode = self._encode
        self._cache.clear()  # empty already (the table is); nothing cached from before
        with self._store.writing() as txn:
            assert txn.stat(self._db)["entries"] == 0, "load fills an empty table"
            for key, value in items:
                raw_key, raw = key.encode(), encode(value)
                if not txn.put(raw_key, raw, db=self._db, overwrite=False):
                    repeated.append(key)
                    txn.put(raw_key, raw, db=self._db)  # the last value wins, as in memory
        return repeated


RAW_CHUNK = 2048  # rows per chunk of ``LmdbRawRows.chunks`` (about 200 KB of snapshot rows)


class LmdbRawRows(RawRows):
    """``RawRows`` of an LMDB table: a read transaction begun when the view is taken (LMDB's
    MVCC keeps what it saw while writes go on), its values read in key order and joined
    ``RAW_CHUNK`` at a time. Nothing is decoded: a snapshot of 1,000,000 objects is a copy of
    their stored bytes in chunks, each a short C call, so the event loop gets the interpreter
    between chunks (an encoding of the objects held it for seconds: docs/state-at-scale.md).
    The transaction ends at ``close``, at the end of ``chunks``, or when the view is dropped."""

    def __init__(self, txn: lmdb.Transaction, db: Any) -> None:
        self._txn, self._db = txn, db
        self._count = int(txn.stat(db)["entries"])
        self._finalizer = weakref.finalize(self, txn.abort)

    @property
    def count(self) -> int:
        """How many rows the view holds."""
        return self._count

    def chunks(self) -> Iterator[bytes]:
        """The rows in key order, ``RAW_CHUNK`` per chunk; the transaction ends with them."""
        try:
            values = self._txn.cursor(self._db).iternext(keys=False, values=True)
            while True:
                chunk = b"".join(itertools.islice(values, RAW_CHUNK))
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """End the read transaction (idempotent)."""
        self._finalizer()


class LmdbPairIndex(PairIndex):
    """``PairIndex`` on a named LMDB database (key ``first NUL second``, empty value)."""

    incremental = True  # a put per pair, in bulk or not

    def __init__(self, store: LmdbStore, name: str) -> None:
        self._store, self._db = store, store.db(name)

    @staticmethod
    def _key(first: str, second: str) -> bytes:
        return first.encode() + SEP + second.encode()

    def add(self, first: str, second: str) -> None:
        """Add the pair (no effect if present)."""
        txn = self._store._txn
        if txn is not None:
            txn.put(first.encode() + SEP + second.encode(), b"", db=self._db)
            return
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


# A workload's instance counts row (``univrs.sm.objects.Counts``): five unsigned 64-bit
# integers, big-endian; the staging writes the same bytes (``univrs.storage.sm_ingest``).
COUNTS_ROW = struct.Struct(">5Q")


def encode_counts(counts: tuple[int, ...]) -> bytes:
    """The stored bytes of a counts row."""
    return COUNTS_ROW.pack(*counts)


def decode_counts(raw: bytes) -> Any:
    """A counts row from its stored bytes (a tuple of five ints)."""
    return COUNTS_ROW.unpack(raw)


def cbor_codec(
    to_row: Callable[[V], list[Any]], from_row: Callable[[Any, str], V], what: str
) -> tuple[Callable[[V], bytes], Callable[[bytes], V]]:
    """(encode, decode) of a value as its snapshot row in CBOR."""

    def encode(value: V) -> bytes:
        return cbor2.dumps(to_row(value))

    def decode(raw: bytes) -> V:
        return from_row(cbor2.loads(raw), what)

    return encode, decode
