"""A node's own snapshot is taken in the snapshotter's task, not in its caller's
(univrs/runtime/snapshotter.py): a caller cancelled between the stored record's switch and
the core's ``snapshot_taken`` (an admin or backup request whose client went away) used to
leave the core holding the old snapshot, whose chunks the next save pruned before the core
got its new one: a stream to a follower in that window failed ("no longer stored"). And the
node's stop in that window neither hangs nor leaves a caller waiting."""

from __future__ import annotations

import pathlib
import random
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from tests.sm.test_sm_snapshot import populated
from tests.storage.helpers import SavingSteps, make_entries
from univrs.errors import StorageError, Unavailable
from univrs.raft.messages import HardState, Membership, SnapshotMeta
from univrs.raft.snapshot import Snapshot, SnapshotData, SnapshotSender
from univrs.runtime.snapshots import capture
from univrs.runtime.snapshotter import Snapshotter
from univrs.runtime.writer import StorageWriter
from univrs.storage import LogStore

MEMBERS = Membership(voters=frozenset({"n1"}))


class _Core:
    """The core's side of a save: the snapshot it holds to stream to followers."""

    def __init__(self, held: SnapshotData) -> None:
        self.held = held
        self.taken: list[int] = []

    def snapshot_taken(self, meta: SnapshotMeta, data: SnapshotData, *, keep: int = 0) -> int:
        self.held = data
        self.taken.append(meta.index)
        return 0  # nothing compacted: only the snapshot's chunks matter here


class _Stepped:
    """The store, with ``after(number, saving)`` called in the writer's thread after every
    step of a save in parts (``number``: 1 for the first save, ...)."""

    def __init__(self, store: LogStore, after: Any) -> None:
        self._store, self._after, self.saves = store, after, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name != "snapshot_parts":
            return attr

        def parts(meta: SnapshotMeta, data: bytes, **options: Any) -> Any:
            saving = attr(meta, data, **options)
            self.saves += 1
            number, after = self.saves, self._after

            return SavingSteps(saving, after=lambda: after(number, saving))

        return parts


def _setup(
    tmp_path: pathlib.Path, after: Any
) -> tuple[LogStore, StorageWriter, Snapshotter, _Core]:
    """A store holding a snapshot at 12 (the core holds it, read on demand from the store),
    a writer, and a snapshotter of a state applied up to 40."""
    store = LogStore.open(tmp_path / "node", node_id="n1")
    store.append(hard_state=HardState(term=1), truncate_from=None, entries=make_entries(1, 60))
    store.save_snapshot(
        SnapshotMeta(index=12, term=1, membership=MEMBERS), random.Random(1).randbytes(50_000)
    )
    held = store.stored_snapshot()
    assert held is not None
    core = _Core(held)
    writer = StorageWriter(write=store.append, send=lambda _m: None, on_persisted=lambda *_: None)
    applier = SimpleNamespace(
        sm=populated().sm,
        applied_index=40,
        applied_term=1,
        view=SimpleNamespace(applied_membership=MEMBERS),
    )

    async def call(fn: Any) -> Any:
        return fn(core)

    snapshots = Snapshotter(
        storage=_Stepped(store, after),
        writer=writer,
        applier=applier,  # type: ignore[arg-type]
        call=call,
    )
    return store, writer, snapshots, core


def _stream(held: SnapshotData, index: int) -> bytes:
    """What a leader streams of the snapshot it holds: every chunk, read as a sender does."""
    meta = SnapshotMeta(index=index, term=1, membership=MEMBERS)
    sender = SnapshotSender(
        snapshot=Snapshot(meta=meta, data=held), chunk_bytes=4096, window=1 << 20
    )
    return b"".join(chunk.data for chunk in sender.take_chunks())


async def test_a_caller_cancelled_after_the_switch_leaves_the_core_a_snapshot_it_can_stream(
    tmp_path: pathlib.Path,
) -> None:
    """The caller of the first save is cancelled right after its switch (its record stored,
    the core not told yet). The core then gets the new snapshot all the same, and whatever
    the core holds when the next save has pruned what it no longer stores can still be
    streamed to a follower. Fails on the code before: the save ran in the caller's task, so
    the core kept the snapshot at 12, whose chunks the second save pruned ("no longer
    stored")."""
    token = trio.lowlevel.current_trio_token()
    caller = trio.CancelScope()
    streamed: list[tuple[int, bytes | StorageError]] = []
    core_box: list[_Core] = []

    def after(number: int, saving: Any) -> None:  # in the writer's thread
        if number == 1 and saving.switched:
            trio.from_thread.run_sync(caller.cancel, trio_token=token)
        elif number == 2 and saving.at_switch:
            # The second save's parts are stored and the garbage pruned: a follower needs a
            # snapshot now, before the core holds the second one.
            core = core_box[0]
            index = core.taken[-1] if core.taken else 12
            try:
                streamed.append((index, _stream(core.held, index)))
            except StorageError as exc:
                streamed.append((index, exc))

    store, writer, snapshots, core = _setup(tmp_path, after)
    core_box.append(core)
    expected = capture(snapshots.applier.sm)()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(snapshots.run)
            with trio.fail_after(30):
                with caller:
                    await snapshots.take()
                assert caller.cancelled_caught
                snapshots.applier.applied_index = 50
                second = await snapshots.take()
            nursery.cancel_scope.cancel()
        assert streamed == [(40, expected)]  # the new snapshot, read whole after the prune
        assert second is not None and second.index == 50
        assert core.taken == [40, 50]
        assert store.load_snapshot() == (second, expected)
    finally:
        store.close()


async def test_the_nodes_stop_after_the_switch_neither_hangs_nor_leaves_the_caller_waiting(
    tmp_path: pathlib.Path,
) -> None:
    """The node stops (its tasks cancelled: the writer, the snapshotter; the driver is gone)
    right after a save's switch, while a caller outside the node waits for that save: the stop
    returns at once (nothing shielded waits for the gone driver), the caller is told
    ``Unavailable``, a later ``take`` too, and the stored record names the new snapshot,
    complete (what the next start hands the core)."""
    token = trio.lowlevel.current_trio_token()
    node = trio.CancelScope()

    def after(number: int, saving: Any) -> None:
        if saving.switched:
            trio.from_thread.run_sync(node.cancel, trio_token=token)

    store, writer, snapshots, core = _setup(tmp_path, after)
    expected = capture(snapshots.applier.sm)()
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await snapshots.take()
        except Unavailable as exc:
            errors.append(exc)

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as outside:
                outside.start_soon(caller)
                with node:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(writer.run)
                        nursery.start_soon(snapshots.run)
                assert node.cancelled_caught
        assert len(errors) == 1 and "stopped" in str(errors[0])
        with pytest.raises(Unavailable):
            await snapshots.take()
        assert core.taken == []  # the driver was gone; the next start reads the record
        loaded = store.load_snapshot()
        assert loaded is not None and loaded[0].index == 40 and loaded[1] == expected
    finally:
        store.close()
