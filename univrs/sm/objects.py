"""The object tables (workloads, instances, nodes) and the secondary indexes that keep them cheap.

``Objects`` knows nothing about commands: it stores, replaces and removes objects and keeps the
two secondary indexes (workload -> instances, node -> instances) exact, so the state machine's
handlers stay O(1) and its cascades O(instances affected). Callers validate first (ids exist,
references resolve); these methods assume it and never fail half-way.

Invariants (``problems()`` checks them):

* every instance's workload exists, and its node is None or exists;
* ``_by_workload`` has one entry per workload holding exactly the ids of its instances, and
  ``_by_node`` one entry per node holding exactly the ids of the instances placed on it.

Every table is a dict (used as an ordered set where the value is None): iteration follows
insertion order, which is the same on every replica, never a hash order.

``changes`` lists what the changing methods did since the state machine last cleared it (it
does so before each command): ``(kind, id, before, after)``, with None for "absent"; the
state machine turns them into watch events (``univrs.sm.events``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from univrs.sm.events import Event, EventType, ObjectKind, WatchedObject
from univrs.sm.model import (
    Instance,
    InstanceStatus,
    Node,
    Workload,
    WorkloadPhase,
    WorkloadSpec,
    WorkloadStatus,
)

_ZERO_COUNTS: dict[InstanceStatus, int] = dict.fromkeys(InstanceStatus, 0)


@attrs.frozen(kw_only=True, slots=True)
class StoredWorkload:
    """A workload as stored (its status is derived from its instances when read)."""

    id: str
    spec: WorkloadSpec
    version: int
    created_index: int


Stored = StoredWorkload | Instance | Node
Change = tuple[ObjectKind, str, Stored | None, Stored | None]


def view_of(stored: StoredWorkload, counts: Mapping[InstanceStatus, int]) -> Workload:
    """The workload with the status its instance counts (``Objects.instance_counts``) give."""
    desired, running = stored.spec.replicas, counts[InstanceStatus.RUNNING]
    if running >= desired:
        phase = WorkloadPhase.READY
    elif counts[InstanceStatus.FAILED] or counts[InstanceStatus.UNKNOWN]:
        phase = WorkloadPhase.DEGRADED
    else:
        phase = WorkloadPhase.PROGRESSING
    status = WorkloadStatus(
        phase=phase,
        desired=desired,
        pending=counts[InstanceStatus.PENDING],
        running=running,
        succeeded=counts[InstanceStatus.SUCCEEDED],
        failed=counts[InstanceStatus.FAILED],
        unknown=counts[InstanceStatus.UNKNOWN],
    )
    return Workload(
        id=stored.id,
        spec=stored.spec,
        status=status,
        version=stored.version,
        created_index=stored.created_index,
    )


@attrs.define(eq=False)
class Objects:
    """Workloads, instances and nodes, with the workload -> instances and node -> instances
    indexes."""

    _workloads: dict[str, StoredWorkload] = attrs.field(factory=dict)
    _instances: dict[str, Instance] = attrs.field(factory=dict)
    _nodes: dict[str, Node] = attrs.field(factory=dict)
    _by_workload: dict[str, dict[str, None]] = attrs.field(factory=dict)
    _by_node: dict[str, dict[str, None]] = attrs.field(factory=dict)
    # (kind, id, before, after) of every change since the last clear (see the docstring).
    changes: list[Change] = attrs.field(factory=list)

    # ------------------------------------------------------------ lookups

    def workload(self, workload_id: str) -> StoredWorkload | None:
        """The stored workload, or None."""
        return self._workloads.get(workload_id)

    def instance(self, instance_id: str) -> Instance | None:
        """The instance, or None."""
        return self._instances.get(instance_id)

    def node(self, node_id: str) -> Node | None:
        """The node, or None."""
        return self._nodes.get(node_id)

    def counts(self) -> tuple[int, int, int]:
        """(workloads, instances, nodes)."""
        return len(self._workloads), len(self._instances), len(self._nodes)

    # ------------------------------------------------------------ changes

    def put_workload(self, workload: StoredWorkload) -> None:
        """Add a workload or replace it (same id)."""
        if workload.id not in self._by_workload:
            self._by_workload[workload.id] = {}
        old = self._workloads.get(workload.id)
        self._workloads[workload.id] = workload
        self.changes.append((ObjectKind.WORKLOAD, workload.id, old, workload))

    def delete_workload(self, workload_id: str) -> None:
        """Remove a workload and, with it, every instance of it (no orphans)."""
        for instance_id in self._by_workload.pop(workload_id):
            instance = self._instances.pop(instance_id)
            if instance.node_id is not None:
                del self._by_node[instance.node_id][instance_id]
            self.changes.append((ObjectKind.INSTANCE, instance_id, instance, None))
        old = self._workloads.pop(workload_id)
        self.changes.append((ObjectKind.WORKLOAD, workload_id, old, None))

    def put_instance(self, instance: Instance) -> None:
        """Add an instance or replace it. Its workload and node must exist; an instance keeps
        its workload, and its node once it has one (binding None -> node is allowed)."""
        old = self._instances.get(instance.id)
        self._instances[instance.id] = instance
        if old is None:
            self._by_workload[instance.workload_id][instance.id] = None
        assert old is None or old.workload_id == instance.workload_id
        assert old is None or old.node_id in (None, instance.node_id)
        if instance.node_id is not None and (old is None or old.node_id is None):
            self._by_node[instance.node_id][instance.id] = None
        self.changes.append((ObjectKind.INSTANCE, instance.id, old, instance))

    def delete_instance(self, instance_id: str) -> None:
        """Remove an instance."""
        instance = self._instances.pop(instance_id)
        del self._by_workload[instance.workload_id][instance_id]
        if instance.node_id is not None:
            del self._by_node[instance.node_id][instance_id]
        self.changes.append((ObjectKind.INSTANCE, instance_id, instance, None))

    def put_node(self, node: Node) -> None:
        """Add a node or replace it (same id)."""
        if node.id not in self._by_node:
            self._by_node[node.id] = {}
        old = self._nodes.get(node.id)
        self._nodes[node.id] = node
        self.changes.append((ObjectKind.NODE, node.id, old, node))

    def delete_node(self, node_id: str) -> None:
        """Remove a node and, with it, every instance placed on it."""
        for instance_id in self._by_node.pop(node_id):
            instance = self._instances.pop(instance_id)
            del self._by_workload[instance.workload_id][instance_id]
            self.changes.append((ObjectKind.INSTANCE, instance_id, instance, None))
        old = self._nodes.pop(node_id)
        self.changes.append((ObjectKind.NODE, node_id, old, None))

    def instances_on(self, node_id: str) -> list[Instance]:
        """The instances placed on a node, in placement order."""
        return [self._instances[i] for i in self._by_node.get(node_id, {})]

    # ------------------------------------------------------------ views

    def workload_view(self, stored: StoredWorkload) -> Workload:
        """The workload with its status derived from its instances (none, once deleted)."""
        return view_of(stored, self.instance_counts(stored.id))

    def instance_counts(self, workload_id: str) -> Mapping[InstanceStatus, int]:
        """How many instances of the workload are in each status now (a read-only mapping:
        the shared zero table when it has none)."""
        ids = self._by_workload.get(workload_id)
        if not ids:
            return _ZERO_COUNTS
        counts = _ZERO_COUNTS.copy()  # not dict.fromkeys(InstanceStatus): iterating an enum
        for instance_id in ids:  # costs more than the copy
            counts[self._instances[instance_id].status] += 1
        return counts

    def list_workloads(self) -> list[Workload]:
        """Every workload, sorted by id."""
        return [self.workload_view(self._workloads[k]) for k in sorted(self._workloads)]

    def list_instances(
        self, *, workload_id: str | None = None, node_id: str | None = None
    ) -> list[Instance]:
        """Instances sorted by id, optionally only those of a workload and/or on a node."""
        if workload_id is not None:
            ids: Iterable[str] = self._by_workload.get(workload_id, {})
            if node_id is not None:
                on_node = self._by_node.get(node_id, {})
                ids = [i for i in ids if i in on_node]
        elif node_id is not None:
            ids = self._by_node.get(node_id, {})
        else:
            ids = self._instances
        return [self._instances[i] for i in sorted(ids)]

    def list_nodes(self) -> list[Node]:
        """Every node, sorted by id."""
        return [self._nodes[k] for k in sorted(self._nodes)]

    # ------------------------------------------------------------ snapshots

    def stored_workloads(self) -> Iterator[StoredWorkload]:
        """Stored workloads in storage order."""
        return iter(self._workloads.values())

    def stored_instances(self) -> Iterator[Instance]:
        """Instances in storage order."""
        return iter(self._instances.values())

    def stored_nodes(self) -> Iterator[Node]:
        """Nodes in storage order."""
        return iter(self._nodes.values())

    def load(
        self,
        workloads: Iterable[StoredWorkload],
        instances: Iterable[Instance],
        nodes: Iterable[Node],
    ) -> list[str]:
        """Fill an empty table from snapshot parts, in their order; returns what is wrong with
        them (duplicates, dangling references), empty if they were sound.

        What ``put_workload``, ``put_node`` and ``put_instance`` do, inlined: this loop runs
        once per object of a snapshot (millions), the puts once per command."""
        found: list[str] = []
        table_w, by_workload = self._workloads, self._by_workload
        for w in workloads:
            ident = w.id
            if ident in table_w:
                found.append(f"workload {ident!r} appears twice")
            else:
                by_workload[ident] = {}
            table_w[ident] = w
        table_n, by_node = self._nodes, self._by_node
        for n in nodes:
            ident = n.info.id
            if ident in table_n:
                found.append(f"node {ident!r} appears twice")
            else:
                by_node[ident] = {}
            table_n[ident] = n
        table_i = self._instances
        for i in instances:
            ident, node_id = i.id, i.node_id
            if ident in table_i:
                found.append(f"instance {ident!r} appears twice")
            elif i.workload_id not in table_w:
                found.append(f"instance {ident!r} has no workload")
            elif node_id is not None and node_id not in table_n:
                found.append(f"instance {ident!r} is on an unknown node")
            else:
                table_i[ident] = i
                by_workload[i.workload_id][ident] = None
                if node_id is not None:
                    by_node[node_id][ident] = None
            if found:
                break
        self.changes.clear()  # a restore is not a change
        return found

    def problems(self) -> list[str]:
        """Violated invariants (empty when the tables are sound)."""
        found: list[str] = []
        expect_w: dict[str, set[str]] = {w: set() for w in self._workloads}
        expect_n: dict[str, set[str]] = {n: set() for n in self._nodes}
        for i in self._instances.values():
            if i.workload_id not in expect_w:
                found.append(f"instance {i.id} is an orphan of workload {i.workload_id}")
            else:
                expect_w[i.workload_id].add(i.id)
            if i.node_id is not None:
                if i.node_id not in expect_n:
                    found.append(f"instance {i.id} is on unknown node {i.node_id}")
                else:
                    expect_n[i.node_id].add(i.id)
        if {k: set(v) for k, v in self._by_workload.items()} != expect_w:
            found.append("workload -> instances index is out of date")
        if {k: set(v) for k, v in self._by_node.items()} != expect_n:
            found.append("node -> instances index is out of date")
        return found


_Item = tuple[ObjectKind, str, Any, Any]


@attrs.frozen
class AppliedChanges:
    """The changes of one applied entry, captured by ``last_changes``: objects are immutable
    and a workload carries its instance counts as they were, so ``events()`` renders the
    same events whenever it is called."""

    revision: int
    items: tuple[_Item, ...]

    def __len__(self) -> int:
        return len(self.items)

    def events(self) -> tuple[Event, ...]:
        """The watch events (``ClusterStateMachine.last_events`` at the time of capture)."""
        revision = self.revision
        return tuple(
            Event(
                revision=revision,
                type=EventType.DELETE if after is None else EventType.PUT,
                kind=kind,
                id=ident,
                object=_render(after),
                prev=_render(before),
            )
            for kind, ident, before, after in self.items
        )


def _render(captured: Any) -> WatchedObject | None:
    if type(captured) is tuple:
        return view_of(captured[0], captured[1])
    return captured  # type: ignore[no-any-return]
