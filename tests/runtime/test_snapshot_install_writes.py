"""A snapshot from the leader does not hold the follower's storage writer for a transaction of
its size (docs/state-at-scale.md, fourteenth increment): ``Snapshotter.install`` has its data
written to a file off the writer's queue from the moment the core hands it over
(``StorageWriter.stage``, univrs/storage/snapshot_install.py), and the install's item of the
queue only switches the record. Before, ``LogStore.save_snapshot`` stored it as one item of
the queue in one transaction (212 MB at 1,000,000 + 1,000,000 objects), and everything queued
behind it (a vote, the hard state of a new term, the appends after the snapshot) waited.
Both tests fail on the code before (c6c0ee9)."""

from __future__ import annotations

import os
import pathlib
import random
import time
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from tests.storage.helpers import count_written, make_entries
from univrs.raft.interpreter import InstallJob
from univrs.raft.messages import HardState, Membership, SnapshotMeta
from univrs.raft.ready import SnapshotInstall
from univrs.runtime.snapshots import SnapshotChecker
from univrs.runtime.snapshotter import Snapshotter
from univrs.runtime.waiter import Waiter
from univrs.runtime.writer import StorageTask, StorageWriter
from univrs.storage import LogStore, snapshot_file

MEMBERS = Membership(voters=frozenset({"n1"}))


def _store(tmp_path: pathlib.Path) -> LogStore:
    store = LogStore.open(tmp_path / "node", node_id="n1")
    store.append(hard_state=HardState(term=1), truncate_from=None, entries=make_entries(1, 40))
    store.save_snapshot(SnapshotMeta(index=12, term=1, membership=MEMBERS), b"old" * 5000)
    return store


def _parts(store: LogStore, writer: StorageWriter) -> tuple[Snapshotter, list[Any]]:
    queued: list[Any] = []
    applier = SimpleNamespace(enqueue_install=lambda install, durable: queued.append(durable))

    async def call(fn: Any) -> Any:
        raise AssertionError("not called by an install")

    snapshots = Snapshotter(storage=store, writer=writer, applier=applier, call=call)  # type: ignore[arg-type]
    return snapshots, queued


def _writer(store: LogStore) -> StorageWriter:
    return StorageWriter(
        write=store.append,
        send=lambda _m: None,
        on_persisted=lambda *_: None,
        install=store.save_snapshot,
    )


async def test_no_writer_transaction_holds_the_leaders_snapshot(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted, not timed: while a 400 KB snapshot from the leader is installed, no write
    transaction of ``raft.lmdb`` puts more than a record's bytes (before: one of 400 KB, the
    whole snapshot in ``save_snapshot``)."""
    store = _store(tmp_path)
    writer = _writer(store)
    snapshots, queued = _parts(store, writer)
    data = random.Random(1).randbytes(400_000)
    meta = SnapshotMeta(index=60, term=2, membership=MEMBERS)
    written = count_written(monkeypatch)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            snapshots.install(
                SnapshotInstall(meta=meta, data=data), InstallJob(meta=meta, data=data)
            )
            with trio.fail_after(30):
                await queued[0].wait()  # stored: the apply loop may adopt it
            nursery.cancel_scope.cancel()
        assert store.load_snapshot() == (meta, data)
        assert written and max(written) <= 1024, written
    finally:
        store.close()


async def test_the_file_is_written_while_the_items_before_the_install_run(
    tmp_path: pathlib.Path,
) -> None:
    """An item ahead of the install in the writer's queue (here one that waits, in the
    writer's thread, for the snapshot's file to be whole) does not hold the file back: the
    file is written from the moment the core hands the snapshot over, off the queue, and the
    install's item then only switches the record. Before, nothing of the install started
    until its item came up (the item ahead waited in vain)."""
    store = _store(tmp_path)
    writer = _writer(store)
    snapshots, queued = _parts(store, writer)
    data = random.Random(2).randbytes(300_000)
    meta = SnapshotMeta(index=60, term=2, membership=MEMBERS)
    size = snapshot_file.blocks_for(len(data)) * 4 + len(data)
    ahead: Waiter[bool] = Waiter()

    def wait_for_the_file() -> bool:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            files = [p for p in store.path.glob("snapshot-*.dat") if p.stat().st_size == size]
            if files:
                return store.snapshot_meta() == SnapshotMeta(
                    index=12, term=1, membership=MEMBERS
                )  # whole, and not yet named
            time.sleep(0.01)
        return False

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            writer.submit(StorageTask(fn=wait_for_the_file, waiter=ahead))
            snapshots.install(
                SnapshotInstall(meta=meta, data=data), InstallJob(meta=meta, data=data)
            )
            with trio.fail_after(30):
                assert await ahead.wait() is True
                await queued[0].wait()
            nursery.cancel_scope.cancel()
        assert store.load_snapshot() == (meta, data)
    finally:
        store.close()


async def test_a_node_stopped_while_the_file_is_written_leaves_the_old_snapshot(
    tmp_path: pathlib.Path,
) -> None:
    """The writer cancelled (the node stopping) with the install's file being written and
    its item behind a blocked one: the file's thread stops and is joined, nothing is
    switched, and the next open removes the partial file."""
    store = _store(tmp_path)
    writer = _writer(store)
    snapshots, _ = _parts(store, writer)
    data = random.Random(3).randbytes(2_000_000)
    meta = SnapshotMeta(index=60, term=2, membership=MEMBERS)
    release = trio.Event()
    blocked: Waiter[None] = Waiter()
    token = trio.lowlevel.current_trio_token()

    def block() -> None:
        trio.from_thread.run(release.wait, trio_token=token)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit(StorageTask(fn=block, waiter=blocked))
        snapshots.install(SnapshotInstall(meta=meta, data=data), InstallJob(meta=meta, data=data))
        await trio.sleep(0)
        nursery.cancel_scope.cancel()
        release.set()
    staged = list(writer._staged.values())
    assert staged == []  # handed to the cancelled threads and joined
    assert store.snapshot_meta() == SnapshotMeta(index=12, term=1, membership=MEMBERS)
    store.close()
    reopened = LogStore.open(tmp_path / "node", node_id="n1")
    try:
        assert reopened.load_snapshot() == (
            SnapshotMeta(index=12, term=1, membership=MEMBERS),
            b"old" * 5000,
        )
        assert [n for n in os.listdir(reopened.path) if n.startswith("snapshot-")] == []
    finally:
        reopened.close()


def test_the_file_is_written_while_the_snapshot_is_checked(tmp_path: pathlib.Path) -> None:
    """``SnapshotChecker.precheck`` with the store's ``prewrite_install`` (as the node builds
    it): the file is written while the check stages the state (here a check that waits until
    the file is whole), so the install after a passed check waits for none of it. A check
    that fails drops the file. Before (c6c0ee9) the file (then: the transaction) was written
    only when the install's item came up, after the check."""
    store = _store(tmp_path)
    data = random.Random(4).randbytes(300_000)
    meta = SnapshotMeta(index=60, term=2, membership=MEMBERS)
    seen: list[bool] = []

    def staged(_data: bytes) -> Any:  # the check's staging, waiting for the file
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ahead = store._ahead.file
            if ahead is not None and ahead.written:  # whole and synced, not yet named
                seen.append(
                    store.snapshot_meta() == SnapshotMeta(index=12, term=1, membership=MEMBERS)
                )
                break
            time.sleep(0.01)
        return SimpleNamespace(last_applied_index=meta.index)

    try:
        check = SnapshotChecker(into=staged, prewrite=store.prewrite_install)
        check.precheck(meta, data)
        assert seen == [True] and check.found(meta, data) is None
        install = store.install_file(meta, data)
        assert install.written  # nothing left to write
        install.switch()
        assert store.load_snapshot() == (meta, data)
        # A snapshot that fails its check: its file is dropped, never named.
        bad = SnapshotMeta(index=70, term=2, membership=MEMBERS)
        bad_data = random.Random(5).randbytes(100_000)
        check.precheck(bad, bad_data)
        assert check.found(bad, bad_data) is not None  # the index does not match
        assert store._ahead.file is None
    finally:
        store.close()
    reopened = LogStore.open(tmp_path / "node", node_id="n1")
    try:
        assert reopened.load_snapshot() == (meta, data)
        assert len([n for n in os.listdir(reopened.path) if n.startswith("snapshot-")]) == 1
    finally:
        reopened.close()


def test_a_prewrite_that_fails_leaves_the_check_and_the_install_to_do_it() -> None:
    """The file cannot be begun ahead (here: the hook raises): the check still runs and
    passes, and the install writes the file itself later (``install_file`` finds nothing)."""
    meta = SnapshotMeta(index=60, term=2, membership=MEMBERS)

    def failing(_meta: SnapshotMeta, _data: bytes) -> Any:
        raise OSError("no thread")

    def staged(_data: bytes) -> Any:
        return SimpleNamespace(last_applied_index=meta.index)

    check = SnapshotChecker(into=staged, prewrite=failing)
    data = b"x" * 1000
    check.precheck(meta, data)
    assert check.found(meta, data) is None and check(meta, data) is None
