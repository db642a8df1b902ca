"""The reconciler: placement (pure, deterministic), the fence by term, and the task against an
in-memory store (leadership faked)."""

from __future__ import annotations

import itertools
import random

import attrs
import pytest
import trio

from univrs.service.memory import MemoryStateStore as InMemoryStateStore
from univrs.service.reconcile import Place, Reconciler, plan, plan_of, status_of
from univrs.sm.commands import (
    CreateInstance,
    CreateWorkload,
    DeleteInstance,
    RegisterNode,
    ScaleWorkload,
    UpdateNodeStatus,
)
from univrs.sm.model import (
    InstanceSpec,
    InstanceStatus,
    NodeInfo,
    NodeStatus,
    Resources,
    WorkloadSpec,
)
from univrs.sm.responses import Created, Failure, Success
from univrs.sm.state import ClusterStateMachine
from univrs.sm.store import ReadConsistency


def build(*commands: object, term: int = 1) -> ClusterStateMachine:
    sm = ClusterStateMachine()
    for i, command in enumerate(commands, start=1):
        response = sm.apply(command, index=i, term=term)  # type: ignore[arg-type]
        assert not isinstance(response, Failure), (command, response)
    return sm


def node(ident: str, *, cpu: int = 0, labels: dict[str, str] | None = None) -> RegisterNode:
    return RegisterNode(
        info=NodeInfo(id=ident, capacity=Resources(cpu_millis=cpu), labels=labels or {})
    )


def workload(ident: str, replicas: int, *, cpu: int = 0, **labels: str) -> CreateWorkload:
    return CreateWorkload(
        id=ident,
        spec=WorkloadSpec(
            name=ident,
            image="img",
            replicas=replicas,
            resources=Resources(cpu_millis=cpu),
            labels={k.replace("__", "/"): v for k, v in labels.items()},
        ),
    )


def targets(places: list[Place]) -> list[str]:
    return [p.node_id for p in places]


def test_new_instances_spread_by_load_then_id() -> None:
    sm = build(node("b"), node("a"), node("c"), workload("w", 5))
    assert targets(plan_of(sm).places) == ["a", "b", "c", "a", "b"]


def test_placement_is_deterministic_whatever_the_order_of_the_input() -> None:
    sm = build(
        node("n1"),
        node("n2", cpu=1000),
        node("n3"),
        workload("w1", 4, cpu=300),
        workload("w2", 3),
        CreateInstance(id="x", spec=InstanceSpec(workload_id="w2", node_id="n3")),
    )
    expected = plan_of(sm)
    rng = random.Random(7)
    for _ in range(20):
        ws, inst, ns = sm.list_workloads(), sm.list_instances(), sm.list_nodes()
        for items in (ws, inst, ns):
            rng.shuffle(items)
        assert plan(ws, inst, ns) == expected


def test_only_ready_nodes_with_room_and_matching_labels_are_chosen() -> None:
    sm = build(
        node("a", cpu=1000, labels={"zone": "eu"}),
        node("b", cpu=1000, labels={"zone": "us"}),
        node("c", labels={"zone": "eu"}),
        UpdateNodeStatus(id="c", status=NodeStatus.NOT_READY),
        workload("w", 5, cpu=400, placement__zone="eu"),
    )
    p = plan_of(sm)
    assert targets(p.places) == ["a", "a"]  # 2 x 400m fit in a's 1000m; b is in the wrong zone
    (w,) = p.workloads
    assert w.pending == 3 and "room" in w.reason
    sm2 = build(node("b", labels={"zone": "us"}), workload("w", 1, placement__zone="eu"))
    (w2,) = plan_of(sm2).workloads
    assert w2.pending == 1 and "placement labels" in w2.reason
    assert status_of(sm2)["converged"] is False


def test_instances_on_a_down_node_are_removed_and_replaced_elsewhere() -> None:
    sm = build(
        node("a"),
        node("b"),
        workload("w", 2),
        CreateInstance(id="i1", spec=InstanceSpec(workload_id="w", node_id="a")),
        CreateInstance(id="i2", spec=InstanceSpec(workload_id="w", node_id="b")),
        UpdateNodeStatus(id="a", status=NodeStatus.DOWN),
    )
    p = plan_of(sm)
    assert [(r.instance_id, r.lost) for r in p.removes] == [("i1", True)]
    assert targets(p.places) == ["b"]


def test_surplus_goes_unscheduled_first_then_from_the_most_loaded_node_newest_first() -> None:
    sm = build(
        node("a"),
        node("b"),
        workload("w", 1),
        CreateInstance(id="i1", spec=InstanceSpec(workload_id="w", node_id="a")),
        CreateInstance(id="i2", spec=InstanceSpec(workload_id="w", node_id="b")),
        CreateInstance(id="i3", spec=InstanceSpec(workload_id="w", node_id="b")),
        CreateInstance(id="i4", spec=InstanceSpec(workload_id="w")),
    )
    assert [r.instance_id for r in plan_of(sm).removes] == ["i4", "i3", "i2"]
    assert plan_of(sm).places == []


def test_terminal_instances_do_not_count() -> None:
    sm = build(node("a"), workload("w", 1))
    sm.apply(
        CreateInstance(id="i1", spec=InstanceSpec(workload_id="w", node_id="a")), index=3, term=1
    )
    from univrs.sm.commands import UpdateInstanceStatus

    sm.apply(UpdateInstanceStatus(id="i1", status=InstanceStatus.FAILED), index=4, term=1)
    assert targets(plan_of(sm).places) == ["a"]


# ------------------------------------------------------------------ the fence by term


def test_a_fenced_write_applies_only_in_the_term_it_was_decided_in() -> None:
    sm = build(node("a"), workload("w", 1), term=3)
    stale = sm.apply(
        CreateInstance(id="i1", spec=InstanceSpec(workload_id="w"), fence_term=2), index=3, term=3
    )
    assert isinstance(stale, Failure) and stale.code == "version-conflict"
    assert sm.get_instance("i1") is None
    ok = sm.apply(
        CreateInstance(id="i1", spec=InstanceSpec(workload_id="w"), fence_term=3), index=4, term=3
    )
    assert isinstance(ok, Created)
    refused = sm.apply(DeleteInstance(id="i1", fence_term=3), index=5, term=4)
    assert isinstance(refused, Failure) and sm.get_instance("i1") is not None
    assert isinstance(sm.apply(DeleteInstance(id="i1", fence_term=4), index=6, term=4), Success)


# ------------------------------------------------------------------ the task


class FakeLeadership:
    def __init__(self) -> None:
        self.term: int | None = None
        self._changed = trio.Event()

    def set(self, term: int | None) -> None:
        self.term = term
        self._changed.set()
        self._changed = trio.Event()

    def leading_term(self) -> int | None:
        return self.term

    async def wait_changed(self) -> None:
        await self._changed.wait()


async def converged(store: InMemoryStateStore, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not plan_of(store.state_machine).converged:
            await trio.sleep(0.01)


async def test_the_task_scales_up_and_down_and_replaces_lost_instances_only_while_leading() -> None:
    store = InMemoryStateStore(term=1)
    for n in ("a", "b", "c"):
        await store.run(node(n))
    await store.run(workload("w", 0))
    leadership = FakeLeadership()
    counter = itertools.count()
    reconciler = Reconciler(store, leadership, resync=0.05, new_id=lambda: f"i{next(counter):03}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconciler.run)
        await store.run(ScaleWorkload(id="w", replicas=6))
        await trio.sleep(0.1)  # not leading: nothing may happen (a wait, not a sync point)
        assert store.state_machine.list_instances() == []
        leadership.set(1)
        await converged(store)
        placed = store.state_machine.list_instances(workload_id="w")
        assert len(placed) == 6
        assert sorted(i.node_id or "" for i in placed) == ["a", "a", "b", "b", "c", "c"]
        await store.run(UpdateNodeStatus(id="c", status=NodeStatus.DOWN))
        await converged(store)
        live = store.state_machine.list_instances(workload_id="w")
        assert len(live) == 6 and all(i.node_id in ("a", "b") for i in live)
        await store.run(ScaleWorkload(id="w", replicas=2))
        await converged(store)
        assert len(store.state_machine.list_instances(workload_id="w")) == 2
        assert reconciler.metrics.placed == 8 and reconciler.metrics.replaced == 2
        leadership.set(None)
        with trio.fail_after(5):
            while reconciler.active_term is not None:
                await trio.sleep(0.01)
        await store.run(ScaleWorkload(id="w", replicas=4))
        await trio.sleep(0.1)
        assert len(store.state_machine.list_instances(workload_id="w")) == 2
        nursery.cancel_scope.cancel()


async def test_writes_decided_in_an_old_term_are_refused() -> None:
    """The in-memory store appends at term 2 while the reconciler believes term 1: every
    write is refused by the fence, nothing is created."""
    store = InMemoryStateStore(term=2)
    await store.run(node("a"))
    await store.run(workload("w", 3))
    reconciler = Reconciler(store, FakeLeadership(), new_id=lambda: "x")
    _revision, outcome = await reconciler.reconcile_once(term=1)
    assert outcome == "refused"
    assert store.state_machine.list_instances() == []
    assert reconciler.metrics.failed == 3 and reconciler.metrics.placed == 0


@pytest.mark.parametrize("replicas", [0, 1, 50])
async def test_one_pass_reaches_the_replicas(replicas: int) -> None:
    store = InMemoryStateStore()
    for n in ("a", "b"):
        await store.run(node(n))
    await store.run(workload("w", replicas))
    counter = itertools.count()
    reconciler = Reconciler(store, FakeLeadership(), new_id=lambda: f"i{next(counter)}")
    await reconciler.reconcile_once(term=1)
    assert len(store.state_machine.list_instances()) == replicas
    assert plan_of(store.state_machine).converged


async def test_without_machines_a_pass_plans_nothing() -> None:
    """On by default, the reconciler costs a cluster that registers no machines no plan."""
    store = InMemoryStateStore()
    for i in range(20):
        await store.run(workload(f"w{i}", 3))
    reconciler = Reconciler(store, FakeLeadership())
    _revision, outcome = await reconciler.reconcile_once(term=1)
    assert outcome == "idle" and reconciler.metrics.passes == 0
    assert store.state_machine.list_instances() == []
    await store.run(node("a"))  # a machine: now it plans, and places
    _revision, outcome = await reconciler.reconcile_once(term=1)
    assert outcome == "acted" and reconciler.metrics.passes == 1
    assert len(store.state_machine.list_instances()) == 60


@attrs.define(eq=False)
class _CountingStore(InMemoryStateStore):
    """Counts the reads of the state by consistency."""

    reads: list[ReadConsistency] = attrs.field(factory=list, init=False)

    async def read_state(self, consistency: ReadConsistency) -> ClusterStateMachine:
        self.reads.append(consistency)
        return await super().read_state(consistency)


async def test_without_machines_a_pass_asks_the_leader_nothing() -> None:
    """A machine-less pass decides on the local state: no linearizable read (a ReadIndex
    round to a quorum on a real node) per change of a bare key-value cluster."""
    store = _CountingStore()
    await store.run(workload("w", 3))
    reconciler = Reconciler(store, FakeLeadership())
    _revision, outcome = await reconciler.reconcile_once(term=1)
    assert outcome == "idle"
    assert ReadConsistency.LINEARIZABLE not in store.reads
    await store.run(node("a"))
    _revision, outcome = await reconciler.reconcile_once(term=1)
    assert outcome == "acted"
    assert store.reads.count(ReadConsistency.LINEARIZABLE) == 1  # the plan's read


async def test_without_machines_writes_do_not_wake_it(autojump_clock: trio.abc.Clock) -> None:
    """Idle (no machine registered), the reconciler waits for a machine's registration only:
    a bare key-value cluster's writes do not wake it (on a node, each wake-up was a watch,
    a state read and a task step on the leader per batch of writes). A registration does."""
    store = _CountingStore(term=1)
    await store.run(workload("w", 2))
    leadership = FakeLeadership()
    reconciler = Reconciler(store, leadership, resync=600.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconciler.run)
        leadership.set(1)
        with trio.fail_after(5):
            while not store.reads:
                await trio.sleep(0.001)
        for i in range(20):
            await store.run(workload(f"other{i}", 1))
            await trio.sleep(0.2)  # past BATCH: each would make a pass of its own
        assert store.reads == [ReadConsistency.LOCAL]  # the first pass only
        await store.run(node("a"))
        with trio.fail_after(5):
            while len(store.state_machine.list_instances()) < 22:
                await trio.sleep(0.01)
        assert reconciler.metrics.placed == 22
        nursery.cancel_scope.cancel()


async def test_a_burst_of_changes_makes_few_passes(autojump_clock: trio.abc.Clock) -> None:
    """Pacing: 100 changes 1 ms apart wake the reconciler once per BATCH, not 100 times."""
    store = InMemoryStateStore(term=1)
    await store.run(node("a"))
    await store.run(workload("w", 0))
    leadership = FakeLeadership()
    reconciler = Reconciler(store, leadership, resync=60.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconciler.run)
        leadership.set(1)
        with trio.fail_after(5):
            while reconciler.metrics.passes == 0:
                await trio.sleep(0.001)
        before = reconciler.metrics.passes
        for i in range(100):
            await store.run(workload(f"other{i}", 0))
            await trio.sleep(0.001)
        await trio.sleep(1.0)
        during = reconciler.metrics.passes - before
        assert 1 <= during <= 100 * 0.001 / 0.05 + 2, during
        nursery.cancel_scope.cancel()
