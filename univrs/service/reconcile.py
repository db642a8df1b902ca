"""The reconciler: a leader-only task that drives instances toward each workload's replicas.

Theory of operation (docs/orchestrator.md, "The reconciler"). Level-triggered, like a
Kubernetes controller: each pass reads the whole state (linearizable: on the leader that is a
ReadIndex, which also waits until the entries of earlier terms are applied here), computes a
``Plan`` with the pure function ``plan`` and carries it out through the ``StateStore``
(removals, then placements, ``IN_FLIGHT`` writes at a time: the runtime batches them); then it
waits for a change of workloads, instances or nodes (the watch) or for ``resync`` seconds, and
passes again. Nothing is remembered between passes, so a new leader's reconciler simply
continues from the state its predecessor left.

Placement (``plan``) is deterministic given the same state: workloads, nodes and instances are
walked in id order, nothing random is drawn. For each workload:

* **live** instances are those not terminal (``succeeded``/``failed``) and not on a ``down``
  node; instances on a ``down`` node are **lost**: deleted (each with its expected version),
  and replaced, because they no longer count;
* fewer live than ``replicas``: each missing one goes to the ``ready`` node that matches the
  workload's placement labels (a workload label ``placement/KEY=VALUE`` requires the node
  label ``KEY=VALUE``) and has room for the workload's resources (a capacity of 0 in a
  dimension means "not declared": unbounded), choosing the one with the fewest live instances
  (all workloads), then the smallest id: instances spread by load. One that fits nowhere is
  **pending** (counted, with the reason, until a node can take it);
* more live than ``replicas``: the surplus is deleted, unscheduled and pending ones first,
  then those on the most loaded nodes, newest first.

Fencing. Only the leader runs the task (``run`` starts it when this node becomes leader and
cancels it when the role or the term changes, before any new one starts: never two at once on
a node). Its writes are fenced: ``CreateInstance`` and ``DeleteInstance`` carry the term the
pass decided in (``fence_term``: the state machine refuses them unless their entry was
appended in that term), and deletes carry the instance's expected version. A deposed
leader's decision therefore never lands on state it did not see; a new leader's pass reads
only after its own term's first entry applied, which includes everything its predecessor
committed.

Who may use it: nobody calls the reconciler; it is a task of the node. Its status is the
read ``reconcile.status`` (what the plan would do now, from the state), its counters are in
``/metrics``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import aclosing
from functools import partial
from typing import Any, Protocol

import attrs
import trio

from univrs.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    Unavailable,
    UnivrsError,
    VersionConflict,
)
from univrs.sm.commands import CreateInstance, DeleteInstance
from univrs.sm.events import ObjectKind
from univrs.sm.model import (
    TERMINAL_INSTANCE_STATUSES,
    Instance,
    InstanceSpec,
    InstanceStatus,
    Node,
    NodeStatus,
    Resources,
    Workload,
)
from univrs.sm.state import ClusterStateMachine
from univrs.sm.store import ReadConsistency, StateStore

log = logging.getLogger("univrs.reconcile")

PLACEMENT_PREFIX = "placement/"  # a workload label placement/KEY=VALUE: the node needs KEY=VALUE
RESYNC = 10.0  # seconds between passes when nothing changes (a safety net, not the trigger)
RETRY_PAUSE = 0.2  # seconds before a pass retries after a failure (no quorum, a conflict)
IN_FLIGHT = 8  # writes of one pass in flight at once
# Pacing (the reconciler is on by default): after a change wakes it, a pass waits at least
# BATCH seconds (a burst of writes makes one pass, not one each) and PACE times the CPU its
# last plan took (planning, O(state), then holds the event loop at most 1/(1 + PACE) of the
# time).
BATCH = 0.05
PACE = 4.0
# What a pass waits for: any change it plans from, or (no machine registered) a machine's.
ALL_KINDS = frozenset({ObjectKind.WORKLOAD, ObjectKind.INSTANCE, ObjectKind.NODE})
NODE_KINDS = frozenset({ObjectKind.NODE})


# ------------------------------------------------------------------ the plan (pure)


@attrs.frozen(kw_only=True)
class Place:
    """Create an instance of ``workload_id`` on ``node_id``."""

    workload_id: str
    node_id: str


@attrs.frozen(kw_only=True)
class Remove:
    """Delete instance ``instance_id`` at ``version``; ``lost``: its node is down."""

    instance_id: str
    workload_id: str
    version: int
    lost: bool


@attrs.frozen(kw_only=True)
class WorkloadPlan:
    """What one workload needs: its desired and live counts, and what the plan does."""

    workload_id: str
    desired: int
    live: int
    place: tuple[Place, ...] = ()
    remove: tuple[Remove, ...] = ()
    pending: int = 0  # missing instances no node can take now
    reason: str = ""  # why they are pending

    def to_plain(self) -> dict[str, Any]:
        """JSON-able form (``reconcile.status``)."""
        return {
            "workload": self.workload_id,
            "desired": self.desired,
            "live": self.live,
            "to_place": len(self.place),
            "to_remove": len(self.remove),
            "lost": sum(1 for r in self.remove if r.lost),
            "pending": self.pending,
            "reason": self.reason,
        }


@attrs.frozen(kw_only=True)
class Plan:
    """Every workload's plan, in workload id order."""

    workloads: tuple[WorkloadPlan, ...]

    @property
    def places(self) -> list[Place]:
        return [p for w in self.workloads for p in w.place]

    @property
    def removes(self) -> list[Remove]:
        return [r for w in self.workloads for r in w.remove]

    @property
    def pending(self) -> int:
        return sum(w.pending for w in self.workloads)

    @property
    def converged(self) -> bool:
        """Nothing to place or remove (pending ones may remain: no node can take them)."""
        return not any(w.place or w.remove for w in self.workloads)


def placement_labels(workload: Workload) -> dict[str, str]:
    """The node labels a workload requires (its ``placement/KEY=VALUE`` labels)."""
    return {
        key[len(PLACEMENT_PREFIX) :]: value
        for key, value in workload.spec.labels
        if key.startswith(PLACEMENT_PREFIX) and len(key) > len(PLACEMENT_PREFIX)
    }


def _fits(capacity: Resources, used: Resources, need: Resources) -> bool:
    cpu_ok = capacity.cpu_millis == 0 or used.cpu_millis + need.cpu_millis <= capacity.cpu_millis
    mem_ok = (
        capacity.memory_bytes == 0 or used.memory_bytes + need.memory_bytes <= capacity.memory_bytes
    )
    return cpu_ok and mem_ok


def _add(a: Resources, b: Resources) -> Resources:
    return Resources(
        cpu_millis=a.cpu_millis + b.cpu_millis, memory_bytes=a.memory_bytes + b.memory_bytes
    )


def _is_live(instance: Instance, down: set[str]) -> bool:
    return instance.status not in TERMINAL_INSTANCE_STATUSES and instance.node_id not in down


def plan(
    workloads: Iterable[Workload], instances: Iterable[Instance], nodes: Iterable[Node]
) -> Plan:
    """What the reconciler does next, from the state alone (deterministic: see the module
    docstring)."""
    workload_list = sorted(workloads, key=lambda w: w.id)
    node_list = sorted(nodes, key=lambda n: n.id)
    by_id = {w.id: w for w in workload_list}
    down = {n.id for n in node_list if n.status is NodeStatus.DOWN}
    load: dict[str, int] = {n.id: 0 for n in node_list}
    used: dict[str, Resources] = {n.id: Resources() for n in node_list}
    mine: dict[str, list[Instance]] = {w.id: [] for w in workload_list}
    for instance in sorted(instances, key=lambda i: i.id):
        if instance.workload_id in mine:
            mine[instance.workload_id].append(instance)
        node_id = instance.node_id
        if node_id in load and _is_live(instance, down):
            load[node_id] += 1
            workload = by_id.get(instance.workload_id)
            if workload is not None:
                used[node_id] = _add(used[node_id], workload.spec.resources)

    plans = []
    for workload in workload_list:
        own = mine[workload.id]
        lost = [
            Remove(instance_id=i.id, workload_id=workload.id, version=i.version, lost=True)
            for i in own
            if i.node_id in down and i.status not in TERMINAL_INSTANCE_STATUSES
        ]
        live = [i for i in own if _is_live(i, down)]
        desired = workload.spec.replicas
        places: list[Place] = []
        removes = list(lost)
        pending, reason = 0, ""
        if len(live) > desired:
            surplus = sorted(
                live,
                key=lambda i: (
                    i.node_id is not None,
                    i.status is not InstanceStatus.PENDING,
                    -load.get(i.node_id or "", 0),
                    -i.created_index,
                    i.id,
                ),
            )[: len(live) - desired]
            for instance in surplus:
                removes.append(
                    Remove(
                        instance_id=instance.id,
                        workload_id=workload.id,
                        version=instance.version,
                        lost=False,
                    )
                )
                if instance.node_id in load:
                    load[instance.node_id] -= 1
        elif len(live) < desired:
            required = placement_labels(workload)
            need = workload.spec.resources
            candidates = [
                n
                for n in node_list
                if n.status is NodeStatus.READY
                and all(dict(n.info.labels).get(k) == v for k, v in required.items())
            ]
            for _ in range(desired - len(live)):
                fitting = [n for n in candidates if _fits(n.info.capacity, used[n.id], need)]
                if not fitting:
                    pending = desired - len(live) - len(places)
                    if not candidates:
                        reason = (
                            "no ready node matches the placement labels"
                            if required
                            else ("no ready node")
                        )
                    else:
                        reason = "no ready node has room for the workload's resources"
                    break
                best = min(fitting, key=lambda n: (load[n.id], n.id))
                places.append(Place(workload_id=workload.id, node_id=best.id))
                load[best.id] += 1
                used[best.id] = _add(used[best.id], need)
        plans.append(
            WorkloadPlan(
                workload_id=workload.id,
                desired=desired,
                live=len(live),
                place=tuple(places),
                remove=tuple(removes),
                pending=pending,
                reason=reason,
            )
        )
    return Plan(workloads=tuple(plans))


def plan_of(state: ClusterStateMachine) -> Plan:
    """The plan for a state machine as it is now."""
    return plan(state.list_workloads(), state.list_instances(), state.list_nodes())


def status_of(state: ClusterStateMachine) -> dict[str, Any]:
    """``reconcile.status``: what the reconciler has left to do, from the state alone."""
    p = plan_of(state)
    return {
        "revision": state.revision,
        "converged": p.converged and p.pending == 0,
        "to_place": len(p.places),
        "to_remove": len(p.removes),
        "pending": p.pending,
        "workloads": [w.to_plain() for w in p.workloads],
    }


# ------------------------------------------------------------------ the task


class Leadership(Protocol):
    """What the reconciler needs to know of this node's role (the runtime satisfies it
    through ``runtime_leadership``)."""

    def leading_term(self) -> int | None:
        """The current term if this node leads, else None."""
        ...

    async def wait_changed(self) -> None:
        """Return when the role, term or anything else of the status may have changed."""
        ...


@attrs.define(eq=False)
class ReconcilerMetrics:
    """Counters of one node's reconciler (since start) and the pending gauge."""

    placed: int = 0
    removed: int = 0
    replaced: int = 0  # removals of instances lost with their node
    failed: int = 0  # placement or removal writes refused (conflicts, stale term, no quorum)
    pending: int = 0  # missing instances no node could take, at the last pass
    passes: int = 0


@attrs.define(eq=False)
class Reconciler:
    """The leader-only reconciliation task (see the module docstring)."""

    store: StateStore
    leadership: Leadership
    resync: float = RESYNC
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex
    metrics: ReconcilerMetrics = attrs.field(factory=ReconcilerMetrics)
    active_term: int | None = attrs.field(default=None, init=False)
    last_plan_seconds: float = attrs.field(default=0.0, init=False)

    async def run(self) -> None:
        """Run the task whenever this node leads (until cancelled)."""
        while True:
            term = self.leadership.leading_term()
            if term is None:
                await self.leadership.wait_changed()
                continue
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._lead, term)
                while self.leadership.leading_term() == term:
                    await self.leadership.wait_changed()
                nursery.cancel_scope.cancel()
            self.active_term = None
            log.info("reconciler stopped", extra={"term": term})

    async def _lead(self, term: int) -> None:
        self.active_term = term
        log.info("reconciler started", extra={"term": term})
        while True:
            try:
                revision, outcome = await self.reconcile_once(term)
            except UnivrsError as exc:  # no quorum, a deadline: try again shortly
                log.info("reconcile pass failed", extra={"term": term, "error": exc.code})
                await trio.sleep(RETRY_PAUSE)
                continue
            if outcome == "acted":
                continue  # check the result: the next pass reads what the writes did
            if outcome == "refused":
                await trio.sleep(RETRY_PAUSE)  # the state moved under the pass: plan again
                continue
            # No machine registered: only a machine's registration can give a pass anything
            # to do, so a bare key-value cluster's writes wake nothing here.
            await self._wait_for_change(revision, NODE_KINDS if outcome == "idle" else ALL_KINDS)
            await trio.sleep(max(BATCH, PACE * self.last_plan_seconds))

    async def reconcile_once(self, term: int) -> tuple[int, str]:
        """One pass: read, plan, act. Returns the revision planned at and ``converged``
        (nothing to do), ``idle`` (nothing to do until a machine registers: none is),
        ``acted`` (every write of the plan applied) or ``refused`` (one was refused: the state
        or the term moved)."""
        local = await self.store.read_state(ReadConsistency.LOCAL)
        if not local.list_nodes(limit=1):
            # No machine registered in this node's applied state: nothing can be placed,
            # nothing is lost. A cluster that does not orchestrate (a bare key-value use, a
            # benchmark) pays neither a plan nor a ReadIndex round per change, and (``idle``)
            # is not woken by its writes. Safe on a stale state: a machine registered since is
            # applied here later, past this revision, and that wakes the watch the caller
            # starts from it.
            return local.revision, "idle"
        state = await self.store.read_state(ReadConsistency.LINEARIZABLE)
        revision = state.revision
        if not state.list_nodes(limit=1):
            return revision, "idle"
        began = time.perf_counter()
        current = plan_of(state)  # synchronous: one consistent view of the state
        self.last_plan_seconds = time.perf_counter() - began
        self.metrics.passes += 1
        self.metrics.pending = current.pending
        if current.converged:
            return revision, "converged"
        log.info(
            "reconcile pass",
            extra={
                "term": term,
                "revision": revision,
                "place": len(current.places),
                "remove": len(current.removes),
                "pending": current.pending,
            },
        )
        removed = await self._all([partial(self._remove, r, term) for r in current.removes])
        placed = await self._all([partial(self._place, p, term) for p in current.places])
        return revision, "acted" if removed and placed else "refused"

    async def _all(self, writes: list[Callable[[], Awaitable[bool]]]) -> bool:
        """Run ``writes`` concurrently, ``IN_FLIGHT`` at most (the runtime batches concurrent
        proposals into one append): True if every one applied. A failure that is not a
        refusal (no quorum, a deadline) is raised once all have finished."""
        limiter = trio.CapacityLimiter(IN_FLIGHT)
        results: list[bool] = []
        errors: list[UnivrsError] = []

        async def one(write: Callable[[], Awaitable[bool]]) -> None:
            async with limiter:
                try:
                    results.append(await write())
                except UnivrsError as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for write in writes:
                nursery.start_soon(one, write)
        if errors:
            raise errors[0]
        return all(results)

    async def _place(self, place: Place, term: int) -> bool:
        command = CreateInstance(
            id=self.new_id(),
            spec=InstanceSpec(workload_id=place.workload_id, node_id=place.node_id),
            fence_term=term,
        )
        try:
            await self.store.run(command)
        except (VersionConflict, NotFound, AlreadyExists, InvalidArgument) as exc:
            # The state moved (a node went down, the workload was deleted) or the term did.
            self.metrics.failed += 1
            log.info(
                "placement refused",
                extra={"workload": place.workload_id, "node": place.node_id, "error": exc.code},
            )
            return False
        except UnivrsError:
            self.metrics.failed += 1
            raise
        self.metrics.placed += 1
        return True

    async def _remove(self, remove: Remove, term: int) -> bool:
        command = DeleteInstance(
            id=remove.instance_id, expected_version=remove.version, fence_term=term
        )
        try:
            await self.store.run(command)
        except (VersionConflict, NotFound, InvalidArgument) as exc:
            self.metrics.failed += 1
            log.info("removal refused", extra={"instance": remove.instance_id, "error": exc.code})
            return False
        except UnivrsError:
            self.metrics.failed += 1
            raise
        self.metrics.removed += 1
        if remove.lost:
            self.metrics.replaced += 1
        return True

    async def _wait_for_change(self, revision: int, kinds: frozenset[ObjectKind]) -> None:
        """Return after the next change of one of ``kinds`` beyond ``revision``, or ``resync``
        seconds (or at once if the history no longer holds ``revision + 1``)."""
        with trio.move_on_after(self.resync):
            try:
                async with aclosing(self.store.watch(kinds, revision + 1)) as events:
                    async for _event in events:
                        return
            except (Unavailable, UnivrsError):
                return  # compacted (or the history is busy): a pass reads everything anyway
