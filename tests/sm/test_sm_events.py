"""Watch events of the state machine: revisions, order, before/after, and completeness.

* each applied command's events carry its log index and describe exactly what changed;
* a watcher that replays the events onto an empty mirror ends with the state machine's own
  objects (nothing missed, nothing invented), for any command sequence;
* two replicas produce the same events (apply is deterministic).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from tests.sm.helpers import Log, spec
from tests.sm.strategies import Client, steps
from univrs.sm import (
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    DeleteWorkload,
    DeregisterNode,
    EventType,
    Instance,
    InstanceSpec,
    InstanceStatus,
    NodeInfo,
    NodeStatus,
    ObjectKind,
    RegisterNode,
    ScaleWorkload,
    UpdateNodeStatus,
    parse_kinds,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def brief(sm: ClusterStateMachine) -> list[tuple[int, str, str, str]]:
    return [(e.revision, e.type.value, e.kind.value, e.id) for e in sm.last_events()]


def test_each_change_is_an_event_at_the_commands_index() -> None:
    log = Log()
    log(CreateWorkload(id="w", spec=spec(replicas=1)))
    [created] = log.sm.last_events()
    assert (created.revision, created.type, created.kind, created.id) == (
        1,
        EventType.PUT,
        ObjectKind.WORKLOAD,
        "w",
    )
    assert created.prev is None and created.object == log.sm.get_workload("w")

    log(ScaleWorkload(id="w", replicas=3))
    [scaled] = log.sm.last_events()
    assert scaled.revision == 2
    assert scaled.prev is not None and scaled.prev.spec.replicas == 1  # type: ignore[union-attr]
    assert scaled.object == log.sm.get_workload("w")


def test_a_node_going_down_lists_its_instances_turned_unknown_then_the_node() -> None:
    log = Log()
    log(CreateWorkload(id="w", spec=spec()))
    log(RegisterNode(info=NodeInfo(id="n")))
    log(CreateInstance(id="i1", spec=InstanceSpec(workload_id="w", node_id="n")))
    log(CreateInstance(id="i2", spec=InstanceSpec(workload_id="w", node_id="n")))
    log(UpdateNodeStatus(id="n", status=NodeStatus.DOWN))
    assert brief(log.sm) == [
        (5, "put", "instance", "i1"),
        (5, "put", "instance", "i2"),
        (5, "put", "node", "n"),
    ]
    first = log.sm.last_events()[0]
    assert isinstance(first.prev, Instance) and first.prev.status is InstanceStatus.PENDING
    assert isinstance(first.object, Instance) and first.object.status is InstanceStatus.UNKNOWN


def test_cascading_deletes_list_the_dependents_first() -> None:
    log = Log()
    log(CreateWorkload(id="w", spec=spec()))
    log(RegisterNode(info=NodeInfo(id="n")))
    log(CreateInstance(id="i1", spec=InstanceSpec(workload_id="w", node_id="n")))
    log(CreateInstance(id="i2", spec=InstanceSpec(workload_id="w")))
    log(DeregisterNode(id="n"))
    assert brief(log.sm) == [(5, "delete", "instance", "i1"), (5, "delete", "node", "n")]
    log(DeleteWorkload(id="w"))
    assert brief(log.sm) == [(6, "delete", "instance", "i2"), (6, "delete", "workload", "w")]
    deleted = log.sm.last_events()[-1]
    assert deleted.object is None and deleted.prev is not None


def test_a_refused_command_and_a_no_op_entry_make_no_event() -> None:
    log = Log()
    log(CreateWorkload(id="w", spec=spec()))
    log(CreateWorkload(id="w", spec=spec()))  # already exists
    assert log.sm.last_events() == ()
    log.sm.mark_applied(index=3, term=1)
    assert log.sm.last_events() == ()


def test_parse_kinds_takes_singular_or_plural_and_refuses_others() -> None:
    assert parse_kinds(["workloads", "node"]) == frozenset({ObjectKind.WORKLOAD, ObjectKind.NODE})
    assert parse_kinds([]) == frozenset(ObjectKind)
    assert isinstance(parse_kinds(["pods"]), str)
    assert isinstance(parse_kinds("workloads"), str)
    assert isinstance(parse_kinds([1]), str)


def comparable(kind: str, obj: Any) -> Any:
    """A workload's status is derived from its instances: compare the rest of it."""
    return (obj.spec, obj.version) if kind == "workload" and obj is not None else obj


def mirror_apply(mirror: dict[tuple[str, str], Any], sm: ClusterStateMachine) -> None:
    for event in sm.last_events():
        key = (event.kind.value, event.id)
        seen = comparable(key[0], mirror.get(key))
        assert seen == comparable(key[0], event.prev), f"prev of {key} is not what was seen"
        if event.type is EventType.DELETE:
            del mirror[key]
        else:
            mirror[key] = event.object


def own_objects(sm: ClusterStateMachine) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for i in sm.list_instances():
        out[("instance", i.id)] = i
    for n in sm.list_nodes():
        out[("node", n.id)] = n
    for w in sm.list_workloads():
        out[("workload", w.id)] = w
    return out


def without_status(objects: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    return {k: comparable(k[0], v) for k, v in objects.items()}


@SETTINGS
@given(steps)
def test_a_watcher_replaying_the_events_ends_with_the_same_objects(script: list[Any]) -> None:
    a, b = ClusterStateMachine(), ClusterStateMachine()
    client = Client()
    mirror: dict[tuple[str, str], Any] = {}
    for index, (command, wrap, delta) in enumerate(script, start=1):
        time_ms = client.time(delta)
        sent = client.envelope(command, wrap, a)
        response = a.apply(sent, index=index, term=1, time_ms=time_ms)
        b.apply(sent, index=index, term=1, time_ms=time_ms)
        client.learn(sent, response)
        assert a.last_events() == b.last_events()
        assert all(e.revision == index for e in a.last_events())
        mirror_apply(mirror, a)
        assert without_status(mirror) == without_status(own_objects(a))
