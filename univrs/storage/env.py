"""The LMDB environment of a store: durable transactions, map growth and sync statistics.

Every ``read``/``write`` call is ONE LMDB transaction. The environment is opened with
``sync=True, metasync=True`` so each committed write transaction is fsynced (data and meta
page) before ``write`` returns. When the memory map is full the transaction is aborted, the
map grows geometrically (x2, up to ``max_map_size``) and the transaction is retried from the
start, so callers never see ``MapFullError``.

Threads: reads run concurrently; writes are serialized by ``_write_lock``; resizing the map
needs no transaction active in the process, so transactions hold ``_rw`` shared and a resize
holds it exclusively. Every LMDB or layout failure is translated into ``StorageError`` naming
the data file (``translated``).
"""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import lmdb

from univrs.errors import StorageError, WouldWait
from univrs.storage import layout, nospace
from univrs.storage.layout import Corrupt
from univrs.storage.rwlock import SharedExclusiveLock

if TYPE_CHECKING:
    Txn = lmdb.Transaction[bytes]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class StorageStatistics:
    """Counters of a store since it was opened (for metrics such as the fsync histogram)."""

    syncs: int  # committed write transactions; each one is an fsync
    sync_seconds: float  # total time spent in commits (fsync included)
    max_sync_seconds: float
    last_sync_seconds: float
    map_size: int  # current size of the LMDB memory map in bytes
    map_grows: int  # times the map grew because it was full
    db_bytes: int  # size of data.mdb on disk (LMDB never shrinks it; see ``univrs defrag``)
    db_in_use_bytes: int  # pages the databases use (the rest of the file is free pages)


@attrs.define(eq=False)
class StoreEnv:
    """An open LMDB environment with the store's three named databases."""

    path: pathlib.Path
    meta: Any  # the named databases (lmdb._Database handles)
    log: Any
    snap: Any
    _env: lmdb.Environment
    _max_map_size: int
    _rw: SharedExclusiveLock = attrs.field(factory=SharedExclusiveLock, init=False)
    _write_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _syncs: int = attrs.field(default=0, init=False)
    _sync_seconds: float = attrs.field(default=0.0, init=False)
    _max_sync_seconds: float = attrs.field(default=0.0, init=False)
    _last_sync_seconds: float = attrs.field(default=0.0, init=False)
    _map_grows: int = attrs.field(default=0, init=False)
    _page_size: int = attrs.field(default=0, init=False)

    @classmethod
    def open(
        cls, path: pathlib.Path, *, create: bool, map_size: int, max_map_size: int
    ) -> StoreEnv:
        with translated(path):
            if create:
                try:
                    path.mkdir(mode=0o700, exist_ok=True)
                except OSError as exc:
                    raise StorageError(f"cannot create {path}: {exc.strerror}") from None
            env = lmdb.open(
                str(path),
                map_size=map_size,
                subdir=True,
                sync=True,  # fsync the data on every commit ...
                metasync=True,  # ... and the meta page: a returned commit is durable
                map_async=False,
                writemap=False,
                max_dbs=4,
                mode=0o600,  # file mode; the directory is made above with 0o700
                create=create,
                lock=True,
            )
            try:
                with env.begin(write=True) as txn:
                    dbs = [
                        env.open_db(name, txn=txn, create=True)
                        for name in (layout.DB_META, layout.DB_LOG, layout.DB_SNAP)
                    ]
            except BaseException:
                env.close()
                raise
        return cls(
            path=path,
            meta=dbs[0],
            log=dbs[1],
            snap=dbs[2],
            env=env,
            max_map_size=max(max_map_size, map_size),
        )

    @property
    def data_file(self) -> pathlib.Path:
        return self.path / "data.mdb"

    @property
    def page_size(self) -> int:
        """LMDB's page size in bytes (the OS page size when the file was created)."""
        if not self._page_size:
            with self._rw.shared(), translated(self.path):
                self._check_open()
                self._page_size = int(self._env.stat()["psize"])
        return self._page_size

    def space(self) -> tuple[int, int]:
        """(bytes of data.mdb on disk, bytes of it the databases use). The difference is free
        pages, which LMDB reuses but never gives back (``univrs defrag`` does, offline)."""

        def used_pages(txn: Txn) -> int:
            pages = 2  # the two meta pages
            for db in (None, self.meta, self.log, self.snap):  # None: the main database
                st = txn.stat(db) if db is not None else txn.stat()
                pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            return pages

        in_use = self.read(used_pages) * self.page_size
        try:
            on_disk = self.data_file.stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot read {self.data_file}: {exc.strerror}") from None
        return on_disk, in_use

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._rw.exclusive():
            if not self._closed:
                self._closed = True
                self._env.close()

    def flags(self) -> dict[str, bool]:
        """LMDB's environment flags (``sync``, ``metasync``, ``map_async``, ``writemap``...)."""
        with self._rw.shared(), translated(self.path):
            self._check_open()
            return {name: bool(value) for name, value in self._env.flags().items()}

    def read(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn`` in one read-only transaction."""
        with self._rw.shared(), translated(self.path):
            self._check_open()
            with self._env.begin(write=False) as txn:
                return fn(txn)

    def write(self, fn: Callable[[Txn], T], *, wait: bool = True) -> T:
        """Run ``fn`` in one write transaction and commit it durably; grow the map if full.

        ``fn`` may run more than once (after a map growth), each time in a fresh transaction.
        ``wait=False``: raise ``WouldWait``, with nothing written, where the write would wait
        (another writer holds the write lock: a commit, or a staged snapshot's ``turn``) or
        the map must grow first (a growth waits for every read transaction of the process):
        for a caller on the event loop, the storage writer's small writes
        (univrs/runtime/writer.py), which then run the write again on their thread.
        """
        if not self._write_lock.acquire(blocking=wait):
            raise WouldWait(f"{self.data_file}: another writer holds the write lock")
        rw = self._rw
        try:
            while True:
                # ``with self._rw.shared(), translated(self.path, writing=True)``, written out:
                # this runs for every write, and the two context managers cost more than the
                # rest of this method.
                rw.acquire_shared()
                try:
                    self._check_open()
                    txn = self._env.begin(write=True)
                    try:
                        result = fn(txn)
                        start = time.perf_counter()
                        txn.commit()
                        elapsed = time.perf_counter() - start
                    except lmdb.MapFullError:
                        txn.abort()
                    except BaseException:
                        txn.abort()
                        raise
                    else:
                        self._syncs += 1
                        self._sync_seconds += elapsed
                        self._last_sync_seconds = elapsed
                        self._max_sync_seconds = max(self._max_sync_seconds, elapsed)
                        return result
                except (Corrupt, lmdb.Error) as exc:
                    raise translation(self.path, exc, writing=True) from None
                finally:
                    rw.release_shared()
                if not wait:
                    raise WouldWait(f"{self.data_file}: the LMDB map must grow first")
                self._grow()
        finally:
            self._write_lock.release()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the environment's write lock without a transaction: no commit (and so no
        fsync of ``data.mdb``) runs meanwhile. For other writes to the same disk that should
        alternate with the log's commits rather than overlap them (a snapshot file's pieces,
        univrs/storage/snapshot_file.py): a commit then waits for at most one of them."""
        with self._write_lock:
            yield

    def _grow(self) -> None:
        with self._rw.exclusive(), translated(self.path):
            self._check_open()
            size = self._env.info()["map_size"]
            if size >= self._max_map_size:
                raise StorageError(
                    f"{self.data_file}: LMDB map is full at its maximum size of {size} bytes"
                )
            self._env.set_mapsize(min(size * 2, self._max_map_size))
            self._map_grows += 1

    def copy_compacted(self, target: pathlib.Path) -> None:
        """Write a compacted copy of the environment (no free pages, pages renumbered) to the
        new file ``target`` and fsync it. A consistent snapshot: one read transaction."""
        with self._rw.shared(), translated(self.path):
            self._check_open()
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StorageError(f"cannot create {target}: {exc.strerror}") from None
            try:
                self._env.copyfd(fd, compact=True)
                os.fsync(fd)
            except OSError as exc:
                raise StorageError(f"cannot write {target}: {exc.strerror}") from None
            finally:
                os.close(fd)

    def statistics(self) -> StorageStatistics:
        with self._rw.shared():
            map_size = 0 if self._closed else self._env.info()["map_size"]
        db_bytes, in_use = (0, 0) if self._closed else self.space()
        return StorageStatistics(
            syncs=self._syncs,
            sync_seconds=self._sync_seconds,
            max_sync_seconds=self._max_sync_seconds,
            last_sync_seconds=self._last_sync_seconds,
            map_size=map_size,
            map_grows=self._map_grows,
            db_bytes=db_bytes,
            db_in_use_bytes=in_use,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"store {self.path} is closed")


@contextmanager
def translated(env_path: pathlib.Path, *, writing: bool = False) -> Iterator[None]:
    """Translate LMDB and layout failures into StorageError naming the file (at the edge);
    a failed write on a full disk says so (``DiskFull``, univrs/storage/nospace.py)."""
    try:
        yield
    except (Corrupt, lmdb.Error) as exc:
        raise translation(env_path, exc, writing=writing) from None


def translation(
    env_path: pathlib.Path, exc: Corrupt | lmdb.Error, *, writing: bool = False
) -> StorageError:
    """The ``StorageError`` that ``translated`` raises for ``exc``."""
    data_file = env_path / "data.mdb"
    if isinstance(exc, Corrupt):
        return StorageError(f"corrupt data in {data_file}: {exc}")
    message = f"LMDB error on {data_file}: {exc}"
    if writing:
        return nospace.write_failure(data_file, exc, message)
    return StorageError(message)
