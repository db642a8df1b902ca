"""The watch history (univrs/runtime/watch.py): ranges, compaction, waiting, bounds."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from univrs.errors import Compacted, Unavailable
from univrs.runtime.watch import WatchHub
from univrs.sm.events import Event, EventType, ObjectKind
from univrs.sm.objects import AppliedChanges

ALL = frozenset(ObjectKind)


def ev(revision: int, kind: ObjectKind = ObjectKind.WORKLOAD, ident: str = "x") -> Event:
    return Event(revision=revision, type=EventType.PUT, kind=kind, id=ident, object=None, prev=None)


def revisions(events: list[Event]) -> list[int]:
    return [e.revision for e in events]


def test_reads_return_whole_revisions_from_the_start_and_where_to_go_on() -> None:
    hub = WatchHub(capacity=100)
    hub.reset(10)
    hub.applied(11, (ev(11), ev(11, ObjectKind.NODE)))
    hub.applied(12, ())  # a no-op entry: a revision without events
    hub.applied(13, (ev(13),))
    events, through = hub.read(ALL, 11, limit=100)
    assert revisions(events) == [11, 11, 13] and through == 13
    events, through = hub.read(frozenset({ObjectKind.NODE}), 12, limit=100)
    assert events == [] and through == 13
    # A limit stops between revisions, never inside one.
    events, through = hub.read(ALL, 11, limit=1)
    assert revisions(events) == [11, 11] and through == 12
    events, through = hub.read(ALL, through + 1, limit=1)
    assert revisions(events) == [13] and through == 13


def test_a_revision_at_or_before_the_start_is_compacted() -> None:
    hub = WatchHub()
    hub.reset(10)
    with pytest.raises(Compacted) as info:
        hub.read(ALL, 10, limit=10)
    assert info.value.current_revision == 10 and info.value.compacted_revision == 10
    assert hub.read(ALL, 11, limit=10) == ([], 10)


def test_the_oldest_revisions_are_dropped_beyond_capacity() -> None:
    hub = WatchHub(capacity=3)
    hub.reset(0)
    for r in range(1, 6):
        hub.applied(r, (ev(r),))
    assert hub.compacted_revision == 2 and hub.dropped_events == 2
    with pytest.raises(Compacted):
        hub.read(ALL, 2, limit=10)
    events, through = hub.read(ALL, 3, limit=10)
    assert revisions(events) == [3, 4, 5] and through == 5


def test_a_snapshot_install_compacts_everything_before_it() -> None:
    hub = WatchHub()
    hub.reset(0)
    hub.applied(1, (ev(1),))
    hub.reset(50)
    with pytest.raises(Compacted) as info:
        hub.read(ALL, 2, limit=10)
    assert info.value.current_revision == 50


async def test_a_poll_waits_for_an_event_of_its_kinds_or_its_time() -> None:
    hub = WatchHub()
    hub.reset(0)
    got: list[tuple[list[Event], int]] = []

    async def poll() -> None:
        got.append(await hub.poll(frozenset({ObjectKind.NODE}), 1, limit=10, wait=5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        hub.applied(1, (ev(1),))  # not a node: the poll goes on waiting
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        hub.applied(2, (ev(2, ObjectKind.NODE),))
    [(events, through)] = got
    assert revisions(events) == [2] and through == 2
    with trio.fail_after(10):
        events, through = await hub.poll(ALL, 3, limit=10, wait=0.2)
    assert events == [] and through == 2  # nothing came: where to go on from


def test_watchers_beyond_the_limit_are_refused() -> None:
    hub = WatchHub(max_watchers=1)
    with hub.watcher():
        with pytest.raises(Unavailable), hub.watcher():
            pass
        assert hub.watchers == 1
    with hub.watcher():
        assert hub.watchers == 1


def test_big_commands_are_dropped_by_their_estimated_bytes() -> None:
    hub = WatchHub(capacity=1000, max_bytes=10_000)
    hub.reset(0)
    hub.applied(1, (ev(1),), size=3_000)
    hub.applied(2, (ev(2),), size=3_000)  # 2 * 6256 bytes held: over the budget
    assert hub.compacted_revision == 1
    assert revisions(hub.read(ALL, 2, limit=10)[0]) == [2]


class _CountingHub(WatchHub):
    """Counts the reads of the history (a poll reads once per wake-up)."""

    reads: int = 0

    def read(self, kinds: frozenset[ObjectKind], start: int, limit: int) -> tuple[list[Event], int]:
        self.reads += 1
        return super().read(kinds, start, limit)


async def test_a_poll_of_some_kinds_is_not_woken_by_revisions_of_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Session 27: a poll of some kinds only (the reconciler waiting for a machine's
    registration) wakes for a revision with one of them, not for every revision applied;
    at its deadline it still answers with the newest revision covered. Fails on the hub
    that woke every poll at every revision."""
    hub = _CountingHub()
    hub.reset(0)
    got: list[tuple[list[Event], int]] = []

    async def poll(start: int, wait: float) -> None:
        got.append(await hub.poll(frozenset({ObjectKind.NODE}), start, limit=10, wait=wait))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll, 1, 60.0)
        await trio.testing.wait_all_tasks_blocked()
        for r in range(1, 51):
            hub.applied(r, (ev(r),))
            hub.applied_many([])  # (a batch with nothing kept wakes nothing either)
            await trio.testing.wait_all_tasks_blocked()
        assert got == [] and hub.reads == 1
        hub.applied(51, (ev(51, ObjectKind.INSTANCE), ev(51, ObjectKind.NODE)))
    [(events, through)] = got
    assert revisions(events) == [51] and through == 51 and hub.reads == 2
    got.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll, 52, 5.0)
        await trio.testing.wait_all_tasks_blocked()
        hub.applied(52, (ev(52),))
    [(events, through)] = got
    assert events == [] and through == 52  # timed out: the newest revision covered


def test_a_read_of_some_kinds_renders_no_revision_of_others() -> None:
    """The kinds of each revision are kept beside it: a read of other kinds skips it
    without rendering its captured changes."""
    hub = WatchHub()
    hub.reset(0)
    hub.applied_many(  # (deletes: nothing to render but the event itself)
        [(r, AppliedChanges(r, ((ObjectKind.WORKLOAD, "w", None, None),))) for r in range(1, 40)]
    )
    assert hub.read(frozenset({ObjectKind.NODE}), 1, limit=10) == ([], 39)
    assert hub._rendered == {}
    events, _ = hub.read(ALL, 39, limit=10)
    assert revisions(events) == [39] and list(hub._rendered) == [39]


async def test_a_poll_of_some_kinds_is_not_compacted_by_revisions_of_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A poll of some kinds that other kinds' revisions pushed out of the history (none of
    them had its kinds: it was not woken) answers as before: at its deadline with the newest
    revision, woken by its kind with that revision's events; never ``Compacted`` (the poll
    that woke at every revision moved its start along; session 27's did not)."""
    hub = WatchHub(capacity=3)
    hub.reset(0)
    got: list[tuple[list[Event], int] | BaseException] = []
    node = frozenset({ObjectKind.NODE})

    async def poll(start: int, wait: float) -> None:
        try:
            got.append(await hub.poll(node, start, limit=10, wait=wait))
        except Compacted as exc:
            got.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll, 1, 5.0)
        await trio.testing.wait_all_tasks_blocked()
        for r in range(1, 11):  # workloads only: the history keeps the last 3
            hub.applied(r, (ev(r),))
            await trio.testing.wait_all_tasks_blocked()
    assert hub.compacted_revision > 1
    assert got == [([], 10)]
    got.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll, 11, 60.0)
        await trio.testing.wait_all_tasks_blocked()
        for r in range(11, 21):
            hub.applied(r, (ev(r),))
            await trio.testing.wait_all_tasks_blocked()
        hub.applied(21, (ev(21, ObjectKind.NODE),))
    assert hub.compacted_revision > 11
    [answer] = got
    assert not isinstance(answer, BaseException), answer
    assert revisions(answer[0]) == [21] and answer[1] == 21
