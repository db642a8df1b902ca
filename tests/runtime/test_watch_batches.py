"""Round 14 (s14-cpu): a batch entry's changes reach the watch history once per entry
(``ClusterStateMachine.apply_batch(captured=...)``, ``WatchHub.applied_many``). (A stored
workload's row, built once per object since round 14, is now its CBOR bytes, encoded once:
``univrs.storage.sm_row_bytes``, tests/storage/test_row_bytes.py.)

The rules: handing a batch entry's changes over at once leaves exactly the history that
handing them over one by one leaves (the same events, the same compacted revision, the same
dropped count, trimmed to the same bounds).
"""

from __future__ import annotations

from typing import Any

import pytest

from univrs.errors import Compacted
from univrs.runtime.watch import WatchHub
from univrs.sm.commands import CreateWorkload, Envelope, OpenSession, ScaleWorkload
from univrs.sm.events import ObjectKind
from univrs.sm.model import WorkloadSpec
from univrs.sm.objects import AppliedChanges
from univrs.sm.state import ClusterStateMachine

ALL = frozenset(ObjectKind)
SPEC = WorkloadSpec(name="web", image="nginx:1.27", replicas=2, labels={"tier": "web"})


def _entries() -> tuple[ClusterStateMachine, list[list[Any]]]:
    """A state with a session and two workloads, and three batch entries of scales (a
    refused one among them: a workload that does not exist)."""
    sm = ClusterStateMachine()
    client = sm.apply(OpenSession(), index=1, term=1).id  # type: ignore[union-attr]
    sm.apply_batch(
        [CreateWorkload(id="a", spec=SPEC), CreateWorkload(id="b", spec=SPEC)], index=2, term=1
    )
    seq = 0
    entries: list[list[Any]] = []
    for n in range(3):
        batch: list[Any] = []
        for k in range(5):
            seq += 1
            target = "nope" if (n, k) == (1, 2) else "ab"[k % 2]
            batch.append(
                Envelope(
                    command=ScaleWorkload(id=target, replicas=n + k), client_id=client, seq=seq
                )
            )
        entries.append(batch)
    return sm, entries


def _history(hub: WatchHub, start: int) -> Any:
    try:
        events, through = hub.read(ALL, start, limit=1000)
    except Compacted:
        events, through = [], -1
    return (
        [(e.revision, e.type, e.kind, e.id, e.object, e.prev) for e in events],
        through,
        hub.revision,
        hub.compacted_revision,
        hub.dropped_events,
    )


@pytest.mark.parametrize("capacity", [1000, 7, 3, 1])
def test_a_batch_entry_handed_over_at_once_leaves_the_history_one_by_one_leaves(
    capacity: int,
) -> None:
    one_sm, entries = _entries()
    many_sm, _ = _entries()
    one, many = WatchHub(capacity=capacity), WatchHub(capacity=capacity)
    one.reset(one_sm.revision)
    many.reset(many_sm.revision)
    start = one_sm.revision + 1
    for index, commands in enumerate(entries, start=3):
        seen: list[tuple[int, AppliedChanges]] = []

        def each(revision: int, changes: AppliedChanges, seen: list[Any] = seen) -> None:
            one.applied(revision, changes, 10)
            seen.append((revision, changes))

        one_responses = one_sm.apply_batch(commands, index=index, term=1, each=each)
        captured: list[tuple[int, AppliedChanges]] = []
        many_responses = many_sm.apply_batch(commands, index=index, term=1, captured=captured)
        many.applied_many(captured, 10)
        assert one_responses == many_responses
        assert [r for r, _ in captured] == [r for r, _ in seen]
        assert [c.items for _, c in captured] == [c.items for _, c in seen]
        for first in range(start, one_sm.revision + 2):
            assert _history(one, first) == _history(many, first)
    # The small capacities dropped revisions (the bound is exercised, not only the happy case).
    assert (many.dropped_events > 0) == (capacity < 15)
