"""Helpers shared by the storage tests."""

from __future__ import annotations

import os
import pathlib
import random
from collections.abc import Callable
from typing import Any

import pytest

from univrs.raft.messages import Entry, EntryKind, HardState, Membership, SnapshotMeta
from univrs.storage import LogStore, layout, snapshot_file
from univrs.storage.env import StoreEnv


def make_entries(first: int, last: int, *, term: int = 1, size: int = 12) -> list[Entry]:
    """Entries first..last whose data names their index (so corruption can be aimed)."""
    return [
        Entry(term=term, index=i, kind=EntryKind.NORMAL, data=marker(i).ljust(size, b"."))
        for i in range(first, last + 1)
    ]


def marker(index: int) -> bytes:
    return f"<{index:08d}>".encode()


def flip_everywhere(path: pathlib.Path, needle: bytes, offset: int = 1) -> int:
    """Flip one bit of byte ``offset`` in every copy of ``needle`` in the file; returns copies.

    Every copy, because LMDB's copy-on-write may leave stale copies of a page behind.
    """
    raw = bytearray(path.read_bytes())
    count = 0
    start = raw.find(needle)
    while start != -1 and count < 1000:
        raw[start + offset] ^= 0x01
        count += 1
        start = raw.find(needle, start + 1)
    path.write_bytes(bytes(raw))
    return count


Opener = Callable[..., LogStore]  # the ``open_store`` fixture (conftest.py)
MEMBERS = Membership(voters=frozenset({"n1", "n2", "n3"}))


def at(index: int) -> SnapshotMeta:
    """A snapshot's meta at ``index`` (term 1, three voters)."""
    return SnapshotMeta(index=index, term=1, membership=MEMBERS)


def store_with_snapshot(
    open_store: Opener, data: bytes, index: int = 12, *, entries: int = 20
) -> LogStore:
    """A store holding entries 1..``entries`` (commit 4) and ``data`` as its snapshot at
    ``index``."""
    store = open_store()
    store.append(
        hard_state=HardState(term=1, commit=4), truncate_from=None, entries=make_entries(1, entries)
    )
    store.save_snapshot(at(index), data)
    return store


def store_with_file_snapshot(
    open_store: Opener, rng: random.Random
) -> tuple[LogStore, snapshot_file.FileSnapshot]:
    """A store whose stored snapshot (at 30, 100 KB) is in a file (an own save in parts over
    a chunk snapshot at 12, entries 1..40), and a reader of it (``stored_snapshot``)."""
    store = store_with_snapshot(open_store, rng.randbytes(30_000), 12, entries=40)
    saving = store.snapshot_parts(at(30), rng.randbytes(100_000), part_blocks=3)
    while not saving.step():
        pass
    reader = store.stored_snapshot()
    assert isinstance(reader, snapshot_file.FileSnapshot)
    return store, reader


class _CursorSpy:
    def __init__(self, cursor: Any, count: list[int]) -> None:
        self._cursor, self._count = cursor, count

    def put(self, key: bytes, value: bytes, **options: Any) -> Any:
        self._count[0] += len(value)
        return self._cursor.put(key, value, **options)

    def putmulti(self, items: Any, **options: Any) -> Any:
        items = list(items)
        self._count[0] += sum(len(value) for _, value in items)
        return self._cursor.putmulti(items, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _TxnSpy:
    def __init__(self, txn: Any, count: list[int]) -> None:
        self._txn, self._count = txn, count

    def put(self, key: bytes, value: bytes, **options: Any) -> Any:
        self._count[0] += len(value)
        return self._txn.put(key, value, **options)

    def cursor(self, **options: Any) -> _CursorSpy:
        return _CursorSpy(self._txn.cursor(**options), self._count)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


def count_written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the bytes of values each write transaction of a log store puts (one entry
    per transaction, in order): counted, not timed."""
    sizes: list[int] = []
    write = StoreEnv.write

    def spied(self: StoreEnv, fn: Callable[[Any], Any]) -> Any:
        def run(txn: Any) -> Any:
            count = [0]
            try:
                return fn(_TxnSpy(txn, count))
            finally:
                sizes.append(count[0])

        return write(self, run)

    monkeypatch.setattr(StoreEnv, "write", spied)
    return sizes


class SavingSteps:
    """A save in parts (``LogStore.snapshot_parts``) seen through: ``before()`` runs before
    and ``after()`` after each of its steps (in whatever thread runs the step), everything
    else is the save's own."""

    def __init__(
        self,
        saving: Any,
        before: Callable[[], None] = lambda: None,
        after: Callable[[], None] = lambda: None,
    ) -> None:
        self._saving, self._before, self._after = saving, before, after

    @property
    def stored(self) -> bool | None:
        return self._saving.stored  # type: ignore[no-any-return]

    @property
    def at_switch(self) -> bool:
        return self._saving.at_switch  # type: ignore[no-any-return]

    @property
    def in_writer(self) -> bool:
        return self._saving.in_writer  # type: ignore[no-any-return]

    def step(self) -> bool:
        self._before()
        done: bool = self._saving.step()
        self._after()
        return done


def snapshot_files(store: LogStore) -> list[str]:
    """The snapshot files in ``store``'s directory, sorted."""
    return sorted(n for n in os.listdir(store.path) if n.startswith("snapshot-"))


def snapshot_keys(store: LogStore) -> list[int]:
    """The indexes of the snapshot chunks in ``store``'s database (the test looks at the
    database itself: garbage left or not)."""
    env = store._env
    return env.read(
        lambda txn: [layout.key_index(k) for k in txn.cursor(db=env.snap).iternext(values=False)]
    )


def record_syncs(monkeypatch: pytest.MonkeyPatch, store: LogStore) -> list[str]:
    """From now on, the order of a snapshot file's syncs: "piece" for each piece flushed
    (which must hold ``store``'s log env write lock: no log commit runs meanwhile), "fsync"
    for a file synced, "dir" for a directory entry synced."""
    events: list[str] = []
    real_fsync, real_flush = os.fsync, snapshot_file.flush_range

    def flushed(fd: int, offset: int, nbytes: int) -> None:
        events.append("piece")
        assert store._env._write_lock.locked()  # no log commit runs meanwhile
        real_flush(fd, offset, nbytes)

    def synced(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def dir_synced(path: pathlib.Path) -> None:
        events.append("dir")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            real_fsync(fd)
        finally:
            os.close(fd)

    monkeypatch.setattr(snapshot_file, "flush_range", flushed)
    monkeypatch.setattr(os, "fsync", synced)
    monkeypatch.setattr(snapshot_file, "fsync_dir", dir_synced)
    return events
