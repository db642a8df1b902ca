"""The watch history's bounds (univrs/runtime/watch.py, round 18): a trim bisects the running
totals of events and estimated bytes instead of dropping the oldest revisions one by one, and
the young revisions leave in order through a deque. The rule: the same history as the loop it
replaced (a reference written out here, as main had it): the same revisions kept, the same
compacted revision and dropped count after every hand-over, whatever the bounds, the sizes and
the empty revisions; and the young revisions are the newest ``young`` kept."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from univrs.runtime.watch import EVENT_OVERHEAD, WatchHub
from univrs.sm.events import Event, EventType, ObjectKind
from univrs.sm.objects import AppliedChanges


class _LoopHistory:
    """The trim of main before round 18: drop the head while over either bound."""

    def __init__(self, capacity: int, max_bytes: int, revision: int) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self.kept: list[tuple[int, int, int]] = []  # (revision, count, cost)
        self.held = self.bytes = self.dropped = 0
        self.compacted = revision

    def applied(self, revision: int, count: int, size: int) -> None:
        if count:
            cost = 2 * size + EVENT_OVERHEAD * count
            self.kept.append((revision, count, cost))
            self.held += count
            self.bytes += cost
        while (self.held > self.capacity or self.bytes > self.max_bytes) and self.kept:
            gone, count, cost = self.kept.pop(0)
            self.held -= count
            self.bytes -= cost
            self.compacted = gone
            self.dropped += count


def _events(revision: int, count: int) -> tuple[Event, ...]:
    return tuple(
        Event(
            revision=revision,
            type=EventType.DELETE,
            kind=ObjectKind.NODE,
            id=f"n{k}",
            object=None,
            prev=None,
        )
        for k in range(count)
    )


def _captured(revision: int, count: int) -> AppliedChanges:
    return AppliedChanges(
        revision, tuple((ObjectKind.NODE, f"n{k}", None, None) for k in range(count))
    )


entries = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 3)), min_size=1, max_size=6)


@settings(max_examples=300)
@given(
    st.integers(0, 12),
    st.integers(0, 4_000),
    st.lists(st.tuples(entries, st.integers(0, 900), st.booleans()), max_size=30),
    st.integers(0, 3),
)
def test_a_trim_keeps_what_the_loop_kept(
    capacity: int, max_bytes: int, script: list[Any], young: int
) -> None:
    hub = WatchHub(capacity=capacity, max_bytes=max_bytes, young=young)
    hub.reset(5)
    reference = _LoopHistory(capacity, max_bytes, 5)
    revision = 5
    captured_revisions: list[int] = []
    for commands, size, as_batch in script:
        if as_batch:  # a batch entry's captured changes, handed over at once
            batch = []
            for step, count in commands:
                revision += step
                batch.append((revision, _captured(revision, count)))
                if count:
                    captured_revisions.append(revision)
            hub.applied_many(batch, size)
        else:  # one by one, as events (tests) or captured changes
            for step, count in commands:
                revision += step
                if revision % 2:
                    hub.applied(revision, _events(revision, count), size)
                else:
                    hub.applied(revision, _captured(revision, count), size)
                    if count:
                        captured_revisions.append(revision)
        # the reference trims after each command: the same history (watch.py's docstring)
        for step_count in _flatten(commands, revision):
            reference.applied(*step_count, size)
        live = hub._revisions[hub._head :]
        assert live == [r for r, _, _ in reference.kept]
        assert hub.compacted_revision == reference.compacted
        assert hub.dropped_events == reference.dropped
        assert hub.revision == revision
        newest = captured_revisions[-young:] if young else []
        assert list(hub._young) == list(hub._young_order) == newest


def _flatten(commands: list[tuple[int, int]], last: int) -> list[tuple[int, int]]:
    """(revision, count) of each command of an entry that ended at revision ``last``."""
    revisions = []
    revision = last - sum(step for step, _ in commands)
    for step, count in commands:
        revision += step
        revisions.append((revision, count))
    return revisions


def test_a_long_history_compacts_its_lists_and_keeps_its_totals() -> None:
    hub = WatchHub(capacity=100, max_bytes=10**9, young=4)
    hub.reset(0)
    reference = _LoopHistory(100, 10**9, 0)
    for revision in range(1, 5_000):
        count = revision % 3
        hub.applied_many([(revision, _captured(revision, count))], 10)
        reference.applied(revision, count, 10)
    assert hub._head <= 1024 + 100  # the dropped revisions' slots were given back
    assert hub._revisions[hub._head :] == [r for r, _, _ in reference.kept]
    assert (hub.compacted_revision, hub.dropped_events) == (reference.compacted, reference.dropped)
    read, through = hub.read(frozenset(ObjectKind), hub.compacted_revision + 1, 10**6)
    assert len(read) == reference.held and through == 4_999
