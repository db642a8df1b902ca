"""A node's own snapshot does not hold the storage writer for its whole save: the log's
appends queued while it is being stored are written before it is stored
(univrs/runtime/snapshotter.py ``_save``, univrs/storage/snapshot_parts.py). A leader hands
out no committed entry before it made it durable itself, so an append waiting for a save of
212 MB (1,000,000 + 1,000,000 objects) was a write pause of the whole cluster
(docs/state-at-scale.md, ninth increment)."""

from __future__ import annotations

import pathlib
import random
from types import SimpleNamespace
from typing import Any

import trio

from tests.sm.test_sm_snapshot import populated
from tests.storage.helpers import make_entries
from univrs.raft.messages import HardState, Membership, SnapshotMeta
from univrs.runtime.snapshotter import Snapshotter
from univrs.runtime.waiter import Waiter
from univrs.runtime.writer import StorageTask, StorageWriter
from univrs.storage import LogStore

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

        def parts(meta: SnapshotMeta, data: bytes) -> Any:
            saving = attr(meta, data)
            hooked = self

            class Steps:
                @property
                def stored(self) -> bool | None:
                    return saving.stored  # type: ignore[no-any-return]

                def step(self) -> bool:
                    hooked._once()
                    return saving.step()  # type: ignore[no-any-return]

            return Steps()

        return parts


async def test_appends_queued_during_the_save_are_written_before_it_ends(
    tmp_path: pathlib.Path,
) -> None:
    """Fails on the code before the ninth increment: the save was one item of the writer's
    queue, so an append queued while it ran was written only after the snapshot was stored."""
    store = LogStore.open(tmp_path / "node", node_id="n1")
    old = random.Random(1).randbytes(50_000)
    store.append(hard_state=HardState(term=1), truncate_from=None, entries=make_entries(1, 40))
    store.save_snapshot(SnapshotMeta(index=12, term=1, membership=MEMBERS), old)
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
    sm = populated().sm
    applier = SimpleNamespace(
        sm=sm,
        applied_index=40,
        applied_term=1,
        view=SimpleNamespace(applied_membership=MEMBERS),
    )

    async def call(fn: Any) -> Any:
        return fn(_Core())

    snapshots = Snapshotter(storage=hooked, writer=writer, applier=applier, call=call)  # type: ignore[arg-type]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
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
