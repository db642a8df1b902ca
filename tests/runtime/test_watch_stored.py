"""The watch history keeps each revision's captured changes as one ``bytes``
(univrs/runtime/captured.py, univrs/runtime/watch.py; docs/performance.md, Round 10).

The rule: events rendered from the stored form are exactly those rendered from the captured
objects (kinds, ids, before and after, a workload's instance counts as of its revision); and
the history holds no garbage-collector-tracked object per kept write, so the full collections
do not walk it.
"""

from __future__ import annotations

import gc
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sm.strategies import Client, steps
from univrs.runtime.captured import decode_changes, encode_changes
from univrs.runtime.watch import RENDERED_KEPT, YOUNG_KEPT, WatchHub
from univrs.sm.commands import (
    CreateInstance,
    CreateWorkload,
    DeregisterNode,
    Envelope,
    RegisterNode,
    ScaleWorkload,
    UpdateInstanceStatus,
    UpdateNodeStatus,
)
from univrs.sm.events import Event, ObjectKind
from univrs.sm.model import (
    InstanceSpec,
    InstanceStatus,
    NodeInfo,
    NodeStatus,
    WorkloadSpec,
)
from univrs.sm.objects import AppliedChanges
from univrs.sm.state import ClusterStateMachine

ALL = frozenset(ObjectKind)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(1, 8))
def test_events_from_the_stored_form_are_those_of_the_objects(
    script: list[Any], chunk: int
) -> None:
    """Mixed commands (workloads, instances, nodes, cascades), some as batch entries of
    ``chunk`` commands: each revision's stored form decodes to its captured changes, and the
    hub's reads render exactly the events ``last_events()`` gave at the time."""
    sm = ClusterStateMachine()
    client = Client()
    hub = WatchHub()
    stored_only = WatchHub(young=0)  # every read decodes the stored form
    eager: list[Event] = []
    captured: list[AppliedChanges] = []

    def keep(revision: int, changes: AppliedChanges) -> None:
        eager.extend(sm.last_events())
        captured.append(changes)
        hub.applied(revision, changes, 100)
        stored_only.applied(revision, changes, 100)

    for index, at in enumerate(range(0, len(script), chunk), start=1):
        part = script[at : at + chunk]
        sent = [client.envelope(command, wrap, sm) for command, wrap, _ in part]
        time_ms = client.time(part[-1][2])
        if len(sent) == 1:
            response = sm.apply(sent[0], index=index, term=1, time_ms=time_ms)
            keep(sm.revision, sm.last_changes())
            client.learn(sent[0], response)
        else:
            responses = sm.apply_batch(sent, index=index, term=1, time_ms=time_ms, each=keep)
            for envelope, answer in zip(sent, responses, strict=True):
                client.learn(envelope, answer)
    for changes in captured:
        assert decode_changes(encode_changes(changes), changes.revision) == changes
    for each in (hub, stored_only):
        read, through = each.read(ALL, 1, limit=1_000_000)
        assert (read, through) == (eager, sm.revision)


def _mixed_writes(sm: ClusterStateMachine, hub: WatchHub, writes: int) -> None:
    """Creates, scales, instance status changes and node changes, each handed to the hub."""
    index = 0

    def apply(command: Any) -> None:
        nonlocal index
        index += 1
        sm.apply(Envelope(command=command), index=index, term=1, time_ms=index)
        hub.applied(sm.revision, sm.last_changes(), 200)

    apply(RegisterNode(info=NodeInfo(id="n0")))
    apply(CreateWorkload(id="w", spec=WorkloadSpec(name="web", image="nginx:1", replicas=1)))
    for i in range(4):
        apply(CreateInstance(id=f"i{i}", spec=InstanceSpec(workload_id="w", node_id="n0")))
    statuses = list(InstanceStatus)
    for n in range(writes):
        if n % 3 == 0:
            apply(ScaleWorkload(id="w", replicas=n % 7))
        elif n % 3 == 1:
            status = statuses[n % len(statuses)]
            apply(UpdateInstanceStatus(id=f"i{n % 4}", status=status, node_id="n0"))
        else:
            apply(RegisterNode(info=NodeInfo(id=f"m{n}")))
            apply(UpdateNodeStatus(id=f"m{n}", status=NodeStatus.DOWN))
            apply(DeregisterNode(id=f"m{n}"))


def _tracked_reachable(root: object) -> int:
    """Garbage-collector-tracked objects reachable from ``root`` (itself included), not
    counting classes, modules and functions (shared with everything else)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or not gc.is_tracked(obj):
            continue
        if isinstance(obj, type) or type(obj).__name__ in ("module", "function", "method"):
            continue
        seen.add(id(obj))
        todo.extend(gc.get_referents(obj))
    return len(seen)


def test_the_history_holds_no_tracked_object_per_write() -> None:
    """Counted, not timed. Fails on the history of objects (about 18 tracked containers per
    kept write: 20,000 or so here): the stored form is one ``bytes`` per revision."""
    sm = ClusterStateMachine()
    hub = WatchHub(young=0)
    _mixed_writes(sm, hub, 1_500)
    assert hub.revision == sm.revision and hub.compacted_revision == 0  # nothing dropped
    held = _tracked_reachable(hub)
    assert held < 50, held
    # A watcher reading renders the newest revisions it reads, and only a bounded number.
    read, _ = hub.read(ALL, 1, limit=1_000_000)
    assert len(read) > 2_000
    assert _tracked_reachable(hub) < 50 + 40 * RENDERED_KEPT
    # The default hub also keeps the newest revisions' objects: a bound, whatever the writes.
    held_by = {}
    for writes in (1_500, 3_000):
        default = WatchHub()
        _mixed_writes(ClusterStateMachine(), default, writes)
        held_by[writes] = _tracked_reachable(default)
    assert held_by[1_500] < 50 + 30 * YOUNG_KEPT, held_by
    assert held_by[3_000] < held_by[1_500] * 1.1, held_by
