"""Watch events are captured at apply and rendered only when read (``last_changes``,
univrs/sm/objects.py ``AppliedChanges``; univrs/runtime/watch.py; issue 14).

The rule: rendering a captured entry later, after any number of other entries applied, gives
exactly the events ``last_events()`` gave right after that entry; and applying builds no
workload view when nobody reads.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings

import univrs.sm.objects as objects_module
from tests.runtime.memcluster import create, start_cluster, wait_until
from tests.sm.strategies import Client, steps
from univrs.runtime.watch import WatchHub
from univrs.sm.commands import (
    CreateInstance,
    Envelope,
    ScaleWorkload,
    UpdateInstanceStatus,
)
from univrs.sm.events import Event, ObjectKind
from univrs.sm.model import InstanceSpec, InstanceStatus
from univrs.sm.state import ClusterStateMachine

IDS = ["a", "b", "c"]
ALL = frozenset(ObjectKind)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_captured_changes_render_later_as_the_events_of_their_time(script: list[Any]) -> None:
    sm = ClusterStateMachine()
    client = Client()
    eager: list[tuple[Event, ...]] = []
    captured = []
    for index, (command, wrap, delta) in enumerate(script, start=1):
        sent = client.envelope(command, wrap, sm)
        response = sm.apply(sent, index=index, term=1, time_ms=client.time(delta))
        client.learn(sent, response)
        eager.append(sm.last_events())
        captured.append(sm.last_changes())
    assert [c.events() for c in captured] == eager
    assert [len(c) for c in captured] == [len(e) for e in eager]


def test_a_status_change_after_capture_does_not_reach_the_captured_view() -> None:
    """The workload's status comes from its instances as they were at capture."""
    sm = ClusterStateMachine()
    sm.apply(Envelope(command=create("w").command), index=1, term=1, time_ms=1)
    spec = InstanceSpec(workload_id="w")
    sm.apply(Envelope(command=CreateInstance(id="i", spec=spec)), index=2, term=1, time_ms=1)
    sm.apply(Envelope(command=ScaleWorkload(id="w", replicas=1)), index=3, term=1, time_ms=1)
    scaled = sm.last_changes()
    before = sm.last_events()
    running = UpdateInstanceStatus(id="i", status=InstanceStatus.RUNNING)
    sm.apply(Envelope(command=running), index=4, term=1, time_ms=1)
    assert scaled.events() == before
    view = before[0].object
    assert view is not None and view.status.pending == 1 and view.status.running == 0  # type: ignore[union-attr]


def test_the_hub_renders_a_revision_once_when_first_read() -> None:
    sm = ClusterStateMachine()
    hub = WatchHub()
    sm.apply(Envelope(command=create("w").command), index=1, term=1, time_ms=1)
    expected = sm.last_events()
    hub.applied(1, sm.last_changes())
    first, through = hub.read(ALL, 1, limit=10)
    assert (tuple(first), through) == (expected, 1)
    again, _ = hub.read(ALL, 1, limit=10)
    assert again[0] is first[0]  # rendered once, shared by later reads


async def test_applying_builds_no_workload_view_until_a_watcher_reads(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the old apply loop: it rendered every event (two workload views per scale) on
    every replica, watched or not."""
    views: list[str] = []
    real = objects_module.view_of

    def counting(stored: Any, counts: Any) -> Any:
        views.append(stored.id)
        return real(stored, counts)

    monkeypatch.setattr(objects_module, "view_of", counting)
    cluster, leader = await start_cluster(nursery, IDS)
    await leader.propose(create("w"))
    for replicas in range(1, 4):
        await leader.propose(Envelope(command=ScaleWorkload(id="w", replicas=replicas)))
    runtimes = list(cluster.runtimes.values())
    last = leader.applied_index
    await wait_until(lambda: all(r.applied_index >= last for r in runtimes), "all applied")
    assert views == []
    reads = [r.watch_hub.read(ALL, 1, limit=100) for r in runtimes]
    assert reads[0] == reads[1] == reads[2]
    assert [e.object.status.desired for e in reads[0][0]] == [1, 1, 2, 3]  # type: ignore[union-attr]
