"""A node's own snapshot neither holds the storage writer for its whole save nor keeps the
event loop from running while it is encoded (docs/state-at-scale.md, ninth increment).

* The log's appends queued while it is being stored are written before it is stored
  (univrs/runtime/snapshotter.py ``_save``, univrs/storage/snapshot_parts.py). A leader hands
  out no committed entry before it made it durable itself, and a node sends nothing at a new
  term before that term is durable, so an append waiting for a save of 212 MB (1,000,000 +
  1,000,000 objects) was a write pause of the whole cluster and a node mute to elections.
* The encoding of an LMDB state waits for the loop between two chunks of rows
  (univrs/runtime/snapshots.py ``capture``'s ``pause``).

A caller of ``take`` cancelled between the stored record's switch and the core's
``snapshot_taken``: tests/runtime/test_snapshot_take.py."""

from __future__ import annotations

import pathlib
import random
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from tests.sm.test_sm_snapshot import populated
from tests.storage.helpers import SavingSteps, count_written, make_entries
from univrs.bench.scale_state import build
from univrs.raft.messages import HardState, Membership, SnapshotMeta
from univrs.runtime.snapshots import capture
from univrs.runtime.snapshotter import Snapshotter
from univrs.runtime.waiter import Waiter
from univrs.runtime.writer import StorageTask, StorageWriter
from univrs.storage import LogStore, sm_store
from univrs.storage.sm_tables import StateEnv

MEMBERS = Membership(voters=frozenset({"n1"}))


class _Core:
    def snapshot_taken(self, meta: SnapshotMeta, data: Any, *, keep: int = 0) -> int:
        return max(0, meta.index - keep)


class _Hooked:
    """The store, with ``hook`` called (once) at the first storage call of a snapshot's save,
    in the writer's thread: whichever way the save is done (one ``save_snapshot``, or the
    steps of ``snapshot_parts`` where the store has them)."""

    def __init__(self, store: LogStore, hook: Any) -> None:
        self._store, self._hook, self.hooked = store, hook, False

    def _once(self) -> None:
        if not self.hooked:
            self.hooked = True
            self._hook()

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        self._once()
        self._store.save_snapshot(meta, data)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)  # AttributeError where the store has none
        if name != "snapshot_parts":
            return attr

        def parts(meta: SnapshotMeta, data: bytes, **options: Any) -> Any:
            saving = attr(meta, data, **options)
            hooked = self

            return SavingSteps(saving, before=hooked._once)

        return parts


def _snapshotter(store: Any, writer: StorageWriter, sm: Any) -> Snapshotter:
    applier = SimpleNamespace(
        sm=sm,
        applied_index=40,
        applied_term=1,
        view=SimpleNamespace(applied_membership=MEMBERS),
    )

    async def call(fn: Any) -> Any:
        return fn(_Core())

    return Snapshotter(storage=store, writer=writer, applier=applier, call=call)  # type: ignore[arg-type]


def _log_store(tmp_path: pathlib.Path) -> LogStore:
    store = LogStore.open(tmp_path / "node", node_id="n1")
    old = random.Random(1).randbytes(50_000)
    store.append(hard_state=HardState(term=1), truncate_from=None, entries=make_entries(1, 40))
    store.save_snapshot(SnapshotMeta(index=12, term=1, membership=MEMBERS), old)
    return store


async def test_appends_queued_during_the_save_are_written_before_it_ends(
    tmp_path: pathlib.Path,
) -> None:
    """Fails on the code before the ninth increment: the save was one item of the writer's
    queue, so an append queued while it ran was written only after the snapshot was stored."""
    store = _log_store(tmp_path)
    token = trio.lowlevel.current_trio_token()
    writer = StorageWriter(write=store.append, send=lambda _m: None, on_persisted=lambda *_: None)
    appended = Waiter[Any]()
    seen: list[int | None] = []

    def append() -> None:  # on the loop, while the save's first storage call runs
        def write() -> None:
            store.append(hard_state=None, truncate_from=None, entries=make_entries(41, 41))
            meta = store.snapshot_meta()
            seen.append(None if meta is None else meta.index)  # stored snapshot when written

        writer.submit(StorageTask(fn=write, waiter=appended))

    hooked = _Hooked(store, lambda: trio.from_thread.run_sync(append, trio_token=token))
    snapshots = _snapshotter(hooked, writer, populated().sm)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(snapshots.run)
            with trio.fail_after(30):
                meta = await snapshots.take()
                await appended.wait()
            nursery.cancel_scope.cancel()
        assert hooked.hooked and meta is not None and meta.index == 40
        assert seen == [12]  # written while the old snapshot was still the stored one
        assert store.load_snapshot() is not None
        assert store.snapshot_meta() == meta and store.last_index() == 41
    finally:
        store.close()


async def test_the_encoding_waits_for_the_loop_between_chunks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop is blocked (as by a long call) while the snapshot of an LMDB state is being
    encoded: the encoding produces at most one chunk more, and finishes once the loop runs.
    Fails on the code before the ninth increment: the encoding ran to its end meanwhile (it
    never waited for the loop, which got the interpreter lock back only by chance)."""
    env = StateEnv(str(tmp_path / "state.lmdb"), map_size=1 << 27)
    sm = env.replace(env.stage(capture(build(300))()))
    monkeypatch.setattr(sm_store, "RAW_CHUNK", 10)  # 30 chunks of workloads, 30 of instances
    produced = [0]
    first, go, done = threading.Event(), threading.Event(), threading.Event()
    chunks = sm_store.LmdbRawRows.chunks

    def counted(self: sm_store.LmdbRawRows) -> Iterator[bytes]:
        for chunk in chunks(self):
            produced[0] += 1
            if not first.is_set():
                # Hold the first chunk until the test blocks the loop: otherwise, on a loaded
                # machine, the encoding could run to its end (with the loop free) before the
                # test begins to block it (found by CI: finished with 0 chunks while blocked).
                first.set()
                go.wait(timeout=30)
            yield chunk
        if self.count == 300 and produced[0] >= 60:  # the instances: the last big table
            done.set()

    monkeypatch.setattr(sm_store.LmdbRawRows, "chunks", counted)
    store = _log_store(tmp_path)
    writer = StorageWriter(write=store.append, send=lambda _m: None, on_persisted=lambda *_: None)
    snapshots = _snapshotter(store, writer, sm)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(snapshots.run)
            with trio.fail_after(30):
                async with trio.open_nursery() as taking:
                    taking.start_soon(snapshots.take)
                    await trio.to_thread.run_sync(first.wait)
                    before = produced[0]
                    # The loop blocked for a second: how far does the encoding get?
                    go.set()
                    finished = done.wait(timeout=1.0)
                    blocked = produced[0] - before
            nursery.cancel_scope.cancel()
        assert not finished and blocked <= 1, (finished, blocked)
        assert done.is_set() and store.snapshot_meta() is not None
        assert store.snapshot_meta().index == 40  # type: ignore[union-attr]
    finally:
        store.close()
        env.close()


async def test_no_storage_writer_transaction_holds_the_snapshots_data(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Snapshotter.take`` on the LMDB log store: no write transaction of ``raft.lmdb`` it
    runs (the items of the storage writer's queue) puts more than a record's bytes; the data
    goes to a file written off the queue (univrs/storage/snapshot_file.py). Counted, not
    timed. Fails on the tenth increment's save in parts (parts of up to 2 MB of chunks, each
    a writer item: here one of the whole snapshot), and on ``save_snapshot`` (all of it)."""
    store = _log_store(tmp_path)
    sm = build(300)
    writer = StorageWriter(write=store.append, send=lambda _m: None, on_persisted=lambda *_: None)
    snapshots = _snapshotter(store, writer, sm)
    written = count_written(monkeypatch)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(snapshots.run)
            with trio.fail_after(30):
                meta = await snapshots.take()
            nursery.cancel_scope.cancel()
        loaded = store.load_snapshot()
        assert meta is not None and loaded is not None and loaded[0] == meta
        assert len(loaded[1]) > 4096  # a snapshot larger than the bound below
        assert written and max(written) <= 1024, written
        assert store.first_index() == 41  # compacted up to the snapshot (keep 0)
    finally:
        store.close()


async def test_the_log_is_compacted_in_bounded_writer_items(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compaction after the snapshot deletes at most ``COMPACT_STEP`` entries per writer
    item. Fails on the code before it: one ``compact`` of the whole log behind the snapshot."""
    from univrs.runtime import snapshotter

    monkeypatch.setattr(snapshotter, "COMPACT_STEP", 7, raising=False)
    store = _log_store(tmp_path)
    writer = StorageWriter(write=store.append, send=lambda _m: None, on_persisted=lambda *_: None)
    snapshots = _snapshotter(store, writer, populated().sm)
    firsts: list[int] = []
    compact, some = LogStore.compact, getattr(LogStore, "compact_some", None)

    def counted(self: LogStore, up_to: int) -> None:
        compact(self, up_to)
        firsts.append(self.first_index())

    def counted_some(self: LogStore, up_to: int, **options: Any) -> Any:
        done = some(self, up_to, **options)  # type: ignore[misc]
        firsts.append(self.first_index())
        return done

    monkeypatch.setattr(LogStore, "compact", counted)
    monkeypatch.setattr(LogStore, "compact_some", counted_some, raising=False)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(snapshots.run)
            with trio.fail_after(30):
                await snapshots.take()
            nursery.cancel_scope.cancel()
        steps = [b - a for a, b in zip([1, *firsts], firsts, strict=False)]
        assert firsts[-1] == 41 and max(steps) <= 7, firsts
    finally:
        store.close()
