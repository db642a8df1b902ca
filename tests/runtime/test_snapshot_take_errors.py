"""A save that fails after its switch (its record stored, the core not told yet) still hands
the core a snapshot it can stream (univrs/runtime/snapshotter.py).

After the switch, the snapshotter reads the new snapshot back from storage for the core to
hold (``_stored``: it opens the new file). If that read fails (no descriptor left, EMFILE under
a connection flood; any StorageError), ``take``'s caller got the error and ``run`` went on,
with the core still holding the old snapshot, whose chunks the next save's first steps prune:
a follower that needs a snapshot in that window gets a stream that fails ("no longer stored").
Found by the session-12 review (s12-review); the same window as R1's, reached by an error
instead of a cancelled caller."""

from __future__ import annotations

import pathlib
from typing import Any

import trio

from tests.runtime.test_snapshot_take import _setup, _stream
from univrs.errors import StorageError
from univrs.runtime.snapshots import capture


async def test_a_failed_read_back_after_the_switch_leaves_the_core_a_snapshot_it_can_stream(
    tmp_path: pathlib.Path,
) -> None:
    """The first save's read back fails once: the core holds the new snapshot's bytes, and
    whatever it holds while the second save prunes can be streamed. Fails on the code before:
    the first ``take`` raised, the core kept the snapshot at 12, whose chunks the second save
    pruned ("no longer stored")."""
    streamed: list[tuple[int, bytes | StorageError]] = []
    core_box: list[Any] = []

    def after(number: int, saving: Any) -> None:  # in the writer's thread
        if number == 2 and saving.at_switch:
            # The second save's garbage is pruned: a follower needs a snapshot now, before
            # the core holds the second one.
            core = core_box[0]
            index = core.taken[-1] if core.taken else 12
            try:
                streamed.append((index, _stream(core.held, index)))
            except StorageError as exc:
                streamed.append((index, exc))

    store, writer, snapshots, core = _setup(tmp_path, after)
    core_box.append(core)
    stepped = snapshots.storage
    real = store.stored_snapshot
    failures = [1]

    def stored_snapshot() -> Any:
        if failures[0]:
            failures[0] -= 1
            raise StorageError("cannot open snapshot file: Too many open files")
        return real()

    stepped._store = _FailingOnce(store, stored_snapshot)  # type: ignore[attr-defined]
    expected = capture(snapshots.applier.sm)()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(snapshots.run)
            with trio.fail_after(30):
                try:
                    first: Any = await snapshots.take()
                except StorageError:
                    first = None
                snapshots.applier.applied_index = 50
                second = await snapshots.take()
            nursery.cancel_scope.cancel()
        assert failures == [0]  # the read back failed once
        assert second is not None and second.index == 50
        # Whatever the core held while the second save pruned, it could be streamed.
        assert len(streamed) == 1
        index, got = streamed[0]
        assert not isinstance(got, StorageError), got
        assert index == 40 and got == expected and first is not None and first.index == 40
    finally:
        store.close()


class _FailingOnce:
    """The store, with ``stored_snapshot`` replaced."""

    def __init__(self, store: Any, stored_snapshot: Any) -> None:
        self._store, self.stored_snapshot = store, stored_snapshot

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
