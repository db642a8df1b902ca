"""The object tables (workloads, instances, nodes) and the secondary indexes that keep them cheap.

``Objects`` knows nothing about commands: it stores, replaces and removes objects and keeps the
two secondary indexes (workload -> instances, node -> instances) exact, so the state machine's
handlers stay O(1) and its cascades O(instances affected). Callers validate first (ids exist,
references resolve); these methods assume it and never fail half-way.

Invariants (``problems()`` checks them):

* every instance's workload exists, and its node is None or exists;
* ``_by_workload`` holds exactly the pairs (workload id, instance id) of the instances, and
  ``_by_node`` exactly the pairs (node id, instance id) of the instances placed on a node;
* ``_counts`` holds, for exactly the workloads that have instances, how many are in each
  status (``Counts``): derived data, kept by the same changes in the same batch, so a
  workload's status is one lookup, never a scan of its instances (docs/state-at-scale.md,
  s14-page). It is not in snapshots or digests: a restore (``load``) or a staged install
  rebuilds it from the instances.

Every table is ordered by key (``univrs.sm.tables``): iteration is in id order, the same on
every replica whatever the order the objects were created in, never a hash order. Lists are
range scans from an ``after`` id, so a page costs O(log n + page), not a sort of every id.

``changes`` lists what the changing methods did since the state machine last cleared it (it
does so before each command): ``(kind, id, before, after)``, with None for "absent"; the
state machine turns them into watch events (``univrs.sm.events``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from itertools import islice
from typing import Any

import attrs

from univrs.sm.events import Event, EventType, ObjectKind, WatchedObject
from univrs.sm.model import Instance, InstanceStatus, Node, Workload, WorkloadStatus
from univrs.sm.status import COUNT_SLOT as COUNT_SLOT
from univrs.sm.status import ZERO_COUNTS as ZERO_COUNTS
from univrs.sm.status import Counts as Counts
from univrs.sm.status import StoredWorkload as StoredWorkload
from univrs.sm.status import status_for as status_for
from univrs.sm.status import status_of as status_of
from univrs.sm.status import view_of as view_of
from univrs.sm.status import workload_status as workload_status
from univrs.sm.tables import (
    NO_JOURNAL,
    MemoryPairIndex,
    MemoryTable,
    PairIndex,
    RawRows,
    StateJournal,
    Table,
)

Stored = StoredWorkload | Instance | Node


@attrs.frozen
class StagedRows:
    """In place of a table's parts for ``Objects.load``: ``count`` rows that a reader has
    already written into the (persistent) table, with their index pairs, and checked as
    ``load`` checks them (row form, no repeated id, every instance's workload and node
    exist): ``univrs.storage.sm_ingest``, a staged install."""

    count: int


Change = tuple[ObjectKind, str, Stored | None, Stored | None]
# The kinds as module globals: ``ObjectKind.WORKLOAD`` goes through the enum's class each
# time (about 60 ns in 3.11; s31: every write's change), a global is one dict look-up.
_WORKLOAD, _INSTANCE, _NODE = ObjectKind.WORKLOAD, ObjectKind.INSTANCE, ObjectKind.NODE


def new_objects() -> Objects:
    """The tables a new state machine gets: in memory. (Tests may replace this function to run
    the state machine on another backend: tests/sm/conftest.py, ``UNIVRS_SM_BACKEND``.)"""
    return Objects()


@attrs.define(eq=False)
class Objects:
    """Workloads, instances and nodes, with the workload -> instances and node -> instances
    indexes; every table ordered by id."""

    _workloads: Table[StoredWorkload] = attrs.field(factory=MemoryTable)
    _instances: Table[Instance] = attrs.field(factory=MemoryTable)
    _nodes: Table[Node] = attrs.field(factory=MemoryTable)
    _by_workload: PairIndex = attrs.field(factory=MemoryPairIndex)
    _by_node: PairIndex = attrs.field(factory=MemoryPairIndex)
    # workload id -> its instances' ``Counts``, for the workloads that have instances (a
    # workload without a row has none: no all-zero row is kept). See the module docstring.
    _counts: Table[Counts] = attrs.field(factory=MemoryTable)
    # (kind, id, before, after) of every change since the last clear (see the docstring).
    changes: list[Change] = attrs.field(factory=list)
    # A context in which one command's changes are made: one write transaction for a
    # persistent backend (all or nothing), nothing in memory.
    batch: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    # A context in which a run of reads (a page) shares one read transaction of a persistent
    # backend (``LmdbStore.pinned_read``); nothing in memory. No write may happen in it.
    pinned_read: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    # Told which sessions, balances and tokens change (``StateJournal``): a persistent backend
    # writes them in the same batch; nothing in memory.
    journal: StateJournal = NO_JOURNAL

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
        old = self._workloads.put(workload.id, workload)
        self.changes.append((_WORKLOAD, workload.id, old, workload))

    def delete_workload(self, workload_id: str) -> None:
        """Remove a workload and, with it, every instance of it (no orphans), in id order."""
        had_instances = False
        for instance_id in list(self._by_workload.seconds(workload_id)):
            instance = self._instances.pop(instance_id)
            self._by_workload.remove(workload_id, instance_id)
            if instance.node_id is not None:
                self._by_node.remove(instance.node_id, instance_id)
            self.changes.append((_INSTANCE, instance_id, instance, None))
            had_instances = True
        if had_instances:
            self._counts.pop(workload_id)
        old = self._workloads.pop(workload_id)
        self.changes.append((_WORKLOAD, workload_id, old, None))

    def put_instance(self, instance: Instance) -> None:
        """Add an instance or replace it. Its workload and node must exist; an instance keeps
        its workload, and its node once it has one (binding None -> node is allowed)."""
        old = self._instances.put(instance.id, instance)
        if old is None:
            self._count(instance.workload_id, None, instance.status)
            self._by_workload.add(instance.workload_id, instance.id)
        elif old.status is not instance.status:
            self._count(instance.workload_id, old.status, instance.status)
        assert old is None or old.workload_id == instance.workload_id
        assert old is None or old.node_id in (None, instance.node_id)
        if instance.node_id is not None and (old is None or old.node_id is None):
            self._by_node.add(instance.node_id, instance.id)
        self.changes.append((_INSTANCE, instance.id, old, instance))

    def delete_instance(self, instance_id: str) -> None:
        """Remove an instance."""
        instance = self._instances.pop(instance_id)
        self._by_workload.remove(instance.workload_id, instance_id)
        self._count(instance.workload_id, instance.status, None)
        if instance.node_id is not None:
            self._by_node.remove(instance.node_id, instance_id)
        self.changes.append((_INSTANCE, instance_id, instance, None))

    def put_node(self, node: Node) -> None:
        """Add a node or replace it (same id)."""
        old = self._nodes.put(node.id, node)
        self.changes.append((_NODE, node.id, old, node))

    def delete_node(self, node_id: str) -> None:
        """Remove a node and, with it, every instance placed on it, in id order."""
        for instance_id in list(self._by_node.seconds(node_id)):
            instance = self._instances.pop(instance_id)
            self._by_node.remove(node_id, instance_id)
            self._by_workload.remove(instance.workload_id, instance_id)
            self._count(instance.workload_id, instance.status, None)
            self.changes.append((_INSTANCE, instance_id, instance, None))
        old = self._nodes.pop(node_id)
        self.changes.append((_NODE, node_id, old, None))

    def _count(
        self, workload_id: str, was: InstanceStatus | None, now: InstanceStatus | None
    ) -> None:
        """One instance of the workload moves from status ``was`` to ``now`` (None: it is
        new, or gone) in the workload's counts row; a row that comes to all zeros goes."""
        counts = list(self._counts.get(workload_id) or ZERO_COUNTS)
        if was is not None:
            counts[COUNT_SLOT[was]] -= 1
        if now is not None:
            counts[COUNT_SLOT[now]] += 1
        if any(counts):
            self._counts.put(workload_id, tuple(counts))  # type: ignore[arg-type]
        else:
            self._counts.pop(workload_id)

    def instances_on(self, node_id: str) -> list[Instance]:
        """The instances placed on a node, in id order."""
        get = self._instances.get
        return [i for i in map(get, self._by_node.seconds(node_id)) if i is not None]

    # ------------------------------------------------------------ views

    def workload_view(self, stored: StoredWorkload) -> Workload:
        """The workload with its status derived from its instances (none, once deleted)."""
        return view_of(stored, self.instance_counts(stored.id))

    def workload_status(self, stored: StoredWorkload) -> WorkloadStatus:
        """``workload_view(stored).status``, without building the view."""
        return status_of(stored, self.instance_counts(stored.id))

    def instance_counts(self, workload_id: str) -> Counts:
        """How many instances of the workload are in each status now (``Counts``): one
        lookup of its counts row."""
        return self._counts.get(workload_id) or ZERO_COUNTS

    def _count_instances(self, workload_id: str) -> Counts:
        """``instance_counts`` the slow way, from the instances (``problems`` checks them)."""
        counts = [0, 0, 0, 0, 0]
        get = self._instances.get
        for instance_id in self._by_workload.seconds(workload_id):
            instance = get(instance_id)
            if instance is not None:
                counts[COUNT_SLOT[instance.status]] += 1
        return tuple(counts)  # type: ignore[return-value]

    def iter_workloads(self, after: str | None = None) -> Iterator[Workload]:
        """Workloads (with their status) in id order, from the first id after ``after``:
        lazy, so a page costs O(log n + page)."""
        return map(self.workload_view, self._workloads.values(after))

    def iter_stored_workloads(self, after: str | None = None) -> Iterator[StoredWorkload]:
        """Stored workloads (no status: their counts are not looked up) in id order, from the
        first id after ``after`` (lazy): a page filters and looks ahead on these."""
        return self._workloads.values(after)

    def workload_rows(self, after: str | None = None) -> Iterator[list[Any]] | None:
        """The stored workloads' snapshot rows (``univrs.sm.snapshot._workload_row``) in id
        order from the first id after ``after``, not built into objects, when the backend
        stores rows (LMDB); None in memory (lazy)."""
        return self._workloads.rows(after)

    def counts_status(self, workload_id: str, desired: int) -> WorkloadStatus:
        """The status of the workload ``workload_id`` that wants ``desired`` instances."""
        return status_for(desired, self.instance_counts(workload_id))

    def workload_ids(self, after: str | None = None) -> Iterator[str]:
        """Workload ids in order, from the first id after ``after`` (lazy; nothing decoded)."""
        return self._workloads.keys(after)

    def instance_ids(
        self,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        after: str | None = None,
    ) -> Iterator[str]:
        """The ids ``iter_instances`` gives the instances of, without reading an instance
        (index or table keys only; lazy)."""
        if workload_id is not None:
            ids = self._by_workload.seconds(workload_id, after)
            if node_id is not None:
                ids = (i for i in ids if (node_id, i) in self._by_node)
            return ids
        if node_id is not None:
            return self._by_node.seconds(node_id, after)
        return self._instances.keys(after)

    def iter_instances(
        self,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        after: str | None = None,
    ) -> Iterator[Instance]:
        """Instances in id order from the first id after ``after``, optionally only those of a
        workload and/or on a node (a range scan of the matching index; lazy)."""
        if workload_id is not None:
            ids = self._by_workload.seconds(workload_id, after)
            if node_id is not None:
                ids = (i for i in ids if (node_id, i) in self._by_node)
        elif node_id is not None:
            ids = self._by_node.seconds(node_id, after)
        else:
            return self._instances.values(after)
        get: Callable[[str], Instance | None] = self._instances.get
        return (i for i in map(get, ids) if i is not None)

    def iter_nodes(self, after: str | None = None) -> Iterator[Node]:
        """Nodes in id order from the first id after ``after`` (lazy)."""
        return self._nodes.values(after)

    def list_workloads(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[Workload]:
        """Workloads sorted by id (after ``after``, at most ``limit`` if given)."""
        return list(islice(self.iter_workloads(after), limit))

    def list_instances(
        self,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        """Instances sorted by id, optionally only those of a workload and/or on a node (after
        ``after``, at most ``limit`` if given)."""
        found = self.iter_instances(workload_id=workload_id, node_id=node_id, after=after)
        return list(islice(found, limit))

    def list_nodes(self, *, after: str | None = None, limit: int | None = None) -> list[Node]:
        """Nodes sorted by id (after ``after``, at most ``limit`` if given)."""
        return list(islice(self.iter_nodes(after), limit))

    # ------------------------------------------------------------ snapshots

    def stored_workloads(self) -> Iterator[StoredWorkload]:
        """Stored workloads in storage (id) order."""
        return self._workloads.values()

    def stored_instances(self) -> Iterator[Instance]:
        """Instances in storage (id) order."""
        return self._instances.values()

    def stored_nodes(self) -> Iterator[Node]:
        """Nodes in storage (id) order."""
        return self._nodes.values()

    def views(
        self,
    ) -> tuple[
        Callable[[], Iterator[StoredWorkload]],
        Callable[[], Iterator[Instance]],
        Callable[[], Iterator[Node]],
    ]:
        """Point-in-time views of the three tables (``Table.view``): cheap to take, iterated in
        id order later, from another thread (a snapshot's encoder)."""
        return self._workloads.view(), self._instances.view(), self._nodes.view()

    def raw_views(self) -> tuple[RawRows, RawRows, RawRows] | None:
        """Point-in-time views of the three tables as encoded snapshot rows
        (``Table.raw_view``), or None if a table's backend has none (in memory)."""
        w, i, n = self._workloads.raw_view(), self._instances.raw_view(), self._nodes.raw_view()
        if w is None or i is None or n is None:
            for view in (w, i, n):
                if view is not None:
                    view.close()
            return None
        return w, i, n

    def load(
        self,
        workloads: Iterable[StoredWorkload] | StagedRows,
        instances: Iterable[Instance] | StagedRows,
        nodes: Iterable[Node] | StagedRows,
    ) -> list[str]:
        """Fill empty tables from snapshot parts (in any order: the tables order them); returns
        what is wrong with them (duplicates, dangling references), empty if they were sound.
        Parts given as ``StagedRows`` (all three or none) are in the tables already.

        Bulk: one pass over the parts and one sort per table (linear when the parts come in id
        order, as a snapshot's rows do); the puts run once per command. The counts rows are
        built on the way (staged parts: the stager built them, ``sm_ingest``)."""
        if isinstance(workloads, StagedRows):
            assert isinstance(instances, StagedRows) and isinstance(nodes, StagedRows)
            staged = (workloads.count, instances.count, nodes.count)
            # The stager checked every row; a mismatch here is a bug in it, not bad data.
            assert self.counts() == staged, f"staged {staged}, tables hold {self.counts()}"
            self.changes.clear()
            return []
        assert not isinstance(instances, StagedRows) and not isinstance(nodes, StagedRows)
        # One batch for the whole fill: an LMDB backend's tables share its write transaction
        # (outside one, reading a part while a put began its own transaction failed).
        with self.batch():
            return self._load_parts(workloads, instances, nodes)

    def _load_parts(
        self,
        workloads: Iterable[StoredWorkload],
        instances: Iterable[Instance],
        nodes: Iterable[Node],
    ) -> list[str]:
        """``load`` of parts that are not staged (in the caller's batch)."""
        found: list[str] = []
        found += [
            f"workload {k!r} appears twice"
            for k in self._workloads.load((w.id, w) for w in workloads)
        ]
        found += [
            f"node {k!r} appears twice" for k in self._nodes.load((n.info.id, n) for n in nodes)
        ]
        if found:
            return found
        table_w, table_n = self._workloads, self._nodes
        # The instances go straight into their table as they come (a streamed snapshot holds
        # one row at a time: nothing here keeps the instances themselves), checked on the way;
        # their index pairs too when the indexes take them one by one as cheaply (LMDB).
        by_w, by_n = self._by_workload, self._by_node
        incremental = by_w.incremental and by_n.incremental and not by_w and not by_n
        pairs_w: list[tuple[str, str]] = []
        pairs_n: list[tuple[str, str]] = []
        add_w = by_w.add if incremental else lambda first, second: pairs_w.append((first, second))
        add_n = by_n.add if incremental else lambda first, second: pairs_n.append((first, second))
        # The counts of every workload with instances (a dict of at most a row per workload,
        # as the in-memory tables hold anyway; a persistent backend's install takes the
        # staged path, whose stager builds them with bounded memory).
        counts: dict[str, list[int]] = {}
        slot = COUNT_SLOT

        def checked() -> Iterator[tuple[str, Instance]]:
            for i in instances:
                ident, node_id = i.id, i.node_id
                if i.workload_id not in table_w:
                    found.append(f"instance {ident!r} has no workload")
                    return
                if node_id is not None and node_id not in table_n:
                    found.append(f"instance {ident!r} is on an unknown node")
                    return
                add_w(i.workload_id, ident)
                if node_id is not None:
                    add_n(node_id, ident)
                row = counts.get(i.workload_id)
                if row is None:
                    row = counts[i.workload_id] = [0, 0, 0, 0, 0]
                row[slot[i.status]] += 1
                yield ident, i

        repeated = self._instances.load(checked())
        found += [f"instance {k!r} appears twice" for k in repeated[:1]]
        if found:
            return found
        if not incremental:
            by_w.load(pairs_w)
            by_n.load(pairs_n)
        self._counts.load((w, tuple(counts.pop(w))) for w in sorted(counts))  # type: ignore[misc]
        self.changes.clear()  # a restore is not a change
        return found

    def problems(self) -> list[str]:
        """Violated invariants (empty when the tables are sound)."""
        found: list[str] = []
        expect_w: set[tuple[str, str]] = set()
        expect_n: set[tuple[str, str]] = set()
        for i in self._instances.values():
            if i.workload_id not in self._workloads:
                found.append(f"instance {i.id} is an orphan of workload {i.workload_id}")
            else:
                expect_w.add((i.workload_id, i.id))
            if i.node_id is not None:
                if i.node_id not in self._nodes:
                    found.append(f"instance {i.id} is on unknown node {i.node_id}")
                else:
                    expect_n.add((i.node_id, i.id))
        if set(self._by_workload) != expect_w or len(self._by_workload) != len(expect_w):
            found.append("workload -> instances index is out of date")
        if set(self._by_node) != expect_n or len(self._by_node) != len(expect_n):
            found.append("node -> instances index is out of date")
        if list(self._by_workload) != sorted(self._by_workload):
            found.append("workload -> instances index is not in order")
        expect_counts: dict[str, list[int]] = {}
        for workload_id, _instance_id in self._by_workload:
            expect_counts.setdefault(workload_id, [0, 0, 0, 0, 0])
        for workload_id in expect_counts:
            expect_counts[workload_id] = list(self._count_instances(workload_id))
        stored = dict(zip(self._counts.keys(), map(list, self._counts.values()), strict=True))
        if stored != expect_counts:
            keys = stored.keys() | expect_counts.keys()
            wrong = sorted(k for k in keys if stored.get(k) != expect_counts.get(k))
            found.append(f"the instance counts of {wrong[:3]} are out of date")
        if list(self._counts.keys()) != sorted(self._counts.keys()):
            found.append("the instance counts are not in order")
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
