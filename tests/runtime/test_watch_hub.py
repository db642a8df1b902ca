"""The watch history (univrs/runtime/watch.py): ranges, compaction, waiting, bounds."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from univrs.errors import Compacted, Unavailable
from univrs.runtime.watch import WatchHub
from univrs.sm.events import Event, EventType, ObjectKind

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
