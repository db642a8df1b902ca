"""The read side of the cluster state machine: ``StateQueries``, the queries of
``ClusterStateMachine`` (``univrs.sm.state``), and ``SmStatistics``.

Every query reads and never changes the state: the applied position (index, revision, term,
clock), the objects (one by id, pages and lazy scans in id order, a workload's derived status),
the ledger, the sessions, the API tokens, and the counts of everything. The state machine
derives from ``StateQueries``, which derives from ``CommandHandlers`` (``univrs.sm.handlers``:
the fields and the command handlers); ``univrs.sm.state`` keeps apply, revisions, watch events,
snapshot parts and the invariants.

A lazy ``iter_*`` (or ``*_ids``, ``workload_rows``) must be consumed before the next command
applies; a run of reads that should share one read transaction of a persistent backend goes
in ``reading()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import attrs

from univrs.sm.handlers import CommandHandlers
from univrs.sm.model import Instance, Node, Workload, WorkloadStatus
from univrs.sm.objects import StoredWorkload
from univrs.sm.sessions import Session
from univrs.sm.tokens import Token


@attrs.frozen(kw_only=True, slots=True)
class SmStatistics:
    """Counts for metrics and tests."""

    last_applied_index: int
    last_applied_term: int
    clock_ms: int
    workloads: int
    instances: int
    nodes: int
    accounts: int
    total_supply: int
    sessions: int
    tokens: int = 0


@attrs.define(eq=False)
class StateQueries(CommandHandlers):
    """The read-only queries of the cluster state machine (``ClusterStateMachine``)."""

    def reading(self) -> AbstractContextManager[object]:
        """A context in which a run of reads (a page: its scan and every lookup behind its
        rows) shares one read transaction of a persistent backend, instead of one per lookup;
        nothing in memory. Nothing may be applied in it; consume lazy ``iter_*`` inside it."""
        return self._objects.pinned_read()

    @property
    def last_applied_index(self) -> int:
        """The log index of the last applied entry (0 before any)."""
        return self._last_index

    @property
    def revision(self) -> int:
        """The revision of the last applied command or entry (0 before any): what versions,
        session ids and watch revisions are made of. Equal to ``last_applied_index`` until a
        batch entry applies, never below it (see the module docstring)."""
        return self._revision

    @property
    def last_applied_term(self) -> int:
        """The term of the last applied entry (0 before any)."""
        return self._last_term

    @property
    def clock_ms(self) -> int:
        """The largest leader-stamped time applied so far (0 if none)."""
        return self._clock_ms

    def get_workload(self, workload_id: str) -> Workload | None:
        """The workload with its derived status, or None."""
        stored = self._objects.workload(workload_id)
        return None if stored is None else self._objects.workload_view(stored)

    def workload_with_status(
        self, workload_id: str
    ) -> tuple[StoredWorkload, WorkloadStatus] | None:
        """(the stored workload, its derived status), or None: ``get_workload``'s parts,
        without building the ``Workload`` (a write's answer renders them directly)."""
        stored = self._objects.workload(workload_id)
        return None if stored is None else (stored, self._objects.workload_status(stored))

    def list_workloads(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[Workload]:
        """Workloads sorted by id: every one, or those after the id ``after`` and at most
        ``limit`` of them (O(log n + page): a range scan of the table, no sort)."""
        return self._objects.list_workloads(after=after, limit=limit)

    def iter_workloads(self, *, after: str | None = None) -> Iterator[Workload]:
        """Workloads in id order from the first id after ``after`` (lazy; for filtered pages).
        Consume it before the next command is applied."""
        return self._objects.iter_workloads(after)

    def iter_stored_workloads(self, *, after: str | None = None) -> Iterator[StoredWorkload]:
        """Stored workloads (without their status) in id order from the first id after
        ``after`` (lazy; a page filters and looks ahead on these, then asks
        ``workload_status`` for the rows it shows). Consume it before the next command."""
        return self._objects.iter_stored_workloads(after)

    def workload_status(self, stored: StoredWorkload) -> WorkloadStatus:
        """The status of a stored workload (its instances' counts: one lookup)."""
        return self._objects.workload_status(stored)

    def workload_rows(self, *, after: str | None = None) -> Iterator[list[Any]] | None:
        """Stored workloads as their snapshot rows (not built into objects) in id order from
        the first id after ``after``, on a backend that stores rows (LMDB); None in memory.
        Lazy; a page renders from these (``univrs.api.convert.workload_row_doc``)."""
        return self._objects.workload_rows(after)

    def counts_status(self, workload_id: str, desired: int) -> WorkloadStatus:
        """The status of workload ``workload_id`` if it wants ``desired`` instances."""
        return self._objects.counts_status(workload_id, desired)

    def workload_ids(self, *, after: str | None = None) -> Iterator[str]:
        """Workload ids in order from the first id after ``after`` (lazy; nothing decoded)."""
        return self._objects.workload_ids(after)

    def instance_ids(
        self,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        after: str | None = None,
    ) -> Iterator[str]:
        """The ids of what ``iter_instances`` gives, without reading the instances (lazy)."""
        return self._objects.instance_ids(workload_id=workload_id, node_id=node_id, after=after)

    def get_instance(self, instance_id: str) -> Instance | None:
        """The instance, or None."""
        return self._objects.instance(instance_id)

    def list_instances(
        self,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        """Instances sorted by id, optionally only those of a workload and/or on a node, after
        the id ``after`` and at most ``limit`` of them if given (a range scan of the table or
        of the workload's or node's index)."""
        return self._objects.list_instances(
            workload_id=workload_id, node_id=node_id, after=after, limit=limit
        )

    def iter_instances(
        self,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        after: str | None = None,
    ) -> Iterator[Instance]:
        """``list_instances`` without the limit, lazily (consume it before the next apply)."""
        return self._objects.iter_instances(workload_id=workload_id, node_id=node_id, after=after)

    def get_node(self, node_id: str) -> Node | None:
        """The node, or None."""
        return self._objects.node(node_id)

    def list_nodes(self, *, after: str | None = None, limit: int | None = None) -> list[Node]:
        """Nodes sorted by id (after the id ``after``, at most ``limit`` of them if given)."""
        return self._objects.list_nodes(after=after, limit=limit)

    def iter_nodes(self, *, after: str | None = None) -> Iterator[Node]:
        """Nodes in id order from the first id after ``after`` (lazy)."""
        return self._objects.iter_nodes(after)

    def balance(self, peer: str) -> int:
        """A peer's credit balance (0 if it has none)."""
        return self._ledger.balance(peer)

    def balances(self) -> dict[str, int]:
        """Every positive balance, sorted by peer id."""
        return dict(sorted(self._ledger.items()))

    @property
    def total_supply(self) -> int:
        """All credits in existence (the sum of the balances)."""
        return self._ledger.total_supply

    def has_session(self, client_id: str) -> bool:
        """True if the client session is open."""
        return self._sessions.get(client_id) is not None

    def session(self, client_id: str) -> Session | None:
        """The open session of ``client_id`` (for storage: never change it), or None."""
        return self._sessions.get(client_id)

    def sessions_of(self, owner: str) -> int:
        """How many open sessions ``owner`` holds."""
        return self._sessions.owned(owner)

    def token(self, token_id: str) -> Token | None:
        """The API token with this id, or None."""
        return self._tokens.get(token_id)

    def token_by_hash(self, secret_hash: str) -> Token | None:
        """The API token whose secret has this SHA-256 (hex), or None (unknown, revoked)."""
        return self._tokens.by_hash(secret_hash)

    def tokens(self) -> list[Token]:
        """Every API token, sorted by id."""
        return sorted(self._tokens, key=lambda t: t.id)

    @property
    def tokens_bootstrapped(self) -> bool:
        """True once an admin token was ever created (``token.bootstrap`` is refused)."""
        return self._tokens.bootstrapped

    def statistics(self) -> SmStatistics:
        """Counts of everything held."""
        workloads, instances, nodes = self._objects.counts()
        return SmStatistics(
            last_applied_index=self._last_index,
            last_applied_term=self._last_term,
            clock_ms=self._clock_ms,
            workloads=workloads,
            instances=instances,
            nodes=nodes,
            accounts=len(self._ledger),
            total_supply=self._ledger.total_supply,
            sessions=len(self._sessions),
            tokens=len(self._tokens),
        )
