"""The application layer's view of the cluster state: ``StateStore`` (async) and an in-memory one.

``StateStore`` is the interface of the design document's RaftStateStore section: create, get,
list, update, scale and delete workloads; the same for instances and nodes; credits. Every
method is implemented here on top of two hooks, so a store only supplies transport:

* ``execute(command)``: get the command (or envelope) applied to the replicated state machine
  and return its response; when it returns, ``read_state(LOCAL)`` must reflect the command.
* ``read_state(consistency)``: the state machine to read from, once it is safe to read at the
  requested consistency (``LINEARIZABLE``: ReadIndex, wait until applied; ``LOCAL``: now, stale
  allowed).

The Raft-backed store (``univrs.api.store.RaftStateStore``, on any node: it forwards writes
to the leader) implements the hooks with propose/ReadIndex; the ``InMemoryStateStore`` below
applies directly (one process, no Raft) for tests and for the application layer to develop
against (``univrs.service.memory.MemoryStateStore`` adds ``watch``). ``watch(kinds,
from_revision)`` follows the changes (docs/orchestrator.md).

Failures come back as the product's errors, the same classes the API answers and the Python
client raises (``univrs.errors``, mapped in one place:
``univrs.sm.errors.failure_to_exception``): ``NotFound``, ``AlreadyExists``,
``InvalidArgument``, ``InsufficientCredits``, ``VersionConflict``, ``SessionExpired``,
``StaleSequence``.

Writes that return an object read it back after the command applied: if a concurrent command
deleted it in between, they raise ``NotFound``; if one changed it, they return the newer object.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncGenerator, Callable

import attrs

from univrs.sm.commands import (
    CloseSession,
    Command,
    CreateInstance,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    Envelope,
    MintCredits,
    OpenSession,
    RegisterNode,
    ScaleWorkload,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    UpdateWorkload,
)
from univrs.sm.errors import NotFound, failure_to_exception
from univrs.sm.events import Event, ObjectKind
from univrs.sm.model import (
    Instance,
    InstanceSpec,
    InstanceStatus,
    Node,
    NodeInfo,
    NodeStatus,
    Workload,
    WorkloadSpec,
)
from univrs.sm.responses import Created, Failure, Response, Success
from univrs.sm.state import ClusterStateMachine


class ReadConsistency(enum.StrEnum):
    """How fresh a read must be."""

    LINEARIZABLE = "linearizable"  # reflects every write acknowledged before the read began
    LOCAL = "local"  # this replica's applied state: may be stale (explicitly allowed)


LINEARIZABLE = ReadConsistency.LINEARIZABLE


def _gone(what: str, ident: str) -> NotFound:
    return NotFound(f"{what} {ident!r} not found")


class StateStore(abc.ABC):
    """The cluster state as the application sees it (async; see the module docstring)."""

    @abc.abstractmethod
    async def execute(self, command: Command | Envelope) -> Response:
        """Apply a command through the replicated log and return its response."""

    @abc.abstractmethod
    async def read_state(self, consistency: ReadConsistency) -> ClusterStateMachine:
        """The state machine to read, once reading it gives ``consistency``."""

    def watch(
        self, kinds: frozenset[ObjectKind] = frozenset(ObjectKind), from_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        """The change events of ``kinds`` from ``from_revision`` on (default: the next
        revision), in order, forever; ``Compacted`` when that revision is no longer kept (read
        the state again and watch from its ``revision`` + 1). Iterate it inside
        ``contextlib.aclosing`` so that leaving the loop ends the watch at once."""
        raise NotImplementedError(f"{type(self).__name__} does not watch")

    async def run(self, command: Command | Envelope) -> Success | Created:
        """``execute``, raising the product's error for a refused command."""
        response = await self.execute(command)
        if isinstance(response, Failure):
            raise failure_to_exception(response)
        return response

    _run = run

    # ------------------------------------------------------------ workloads

    async def create_workload(self, workload_id: str, spec: WorkloadSpec) -> Workload:
        """Create a workload with an id the caller chose (e.g. a uuid)."""
        await self._run(CreateWorkload(id=workload_id, spec=spec))
        return await self._written_workload(workload_id)

    async def get_workload(
        self, workload_id: str, *, consistency: ReadConsistency = LINEARIZABLE
    ) -> Workload | None:
        """The workload, or None."""
        return (await self.read_state(consistency)).get_workload(workload_id)

    async def list_workloads(
        self, *, consistency: ReadConsistency = LINEARIZABLE
    ) -> list[Workload]:
        """Every workload, sorted by id."""
        return (await self.read_state(consistency)).list_workloads()

    async def update_workload(
        self, workload_id: str, spec: WorkloadSpec, *, expected_version: int | None = None
    ) -> Workload:
        """Replace a workload's spec (conditionally on its version)."""
        await self._run(
            UpdateWorkload(id=workload_id, spec=spec, expected_version=expected_version)
        )
        return await self._written_workload(workload_id)

    async def scale_workload(
        self, workload_id: str, replicas: int, *, expected_version: int | None = None
    ) -> Workload:
        """Set a workload's replica count (conditionally on its version)."""
        await self._run(
            ScaleWorkload(id=workload_id, replicas=replicas, expected_version=expected_version)
        )
        return await self._written_workload(workload_id)

    async def delete_workload(
        self, workload_id: str, *, expected_version: int | None = None
    ) -> None:
        """Delete a workload and its instances (conditionally on its version)."""
        await self._run(DeleteWorkload(id=workload_id, expected_version=expected_version))

    async def _written_workload(self, workload_id: str) -> Workload:
        workload = (await self.read_state(ReadConsistency.LOCAL)).get_workload(workload_id)
        if workload is None:
            raise _gone("workload", workload_id)
        return workload

    # ------------------------------------------------------------ instances

    async def create_instance(self, instance_id: str, spec: InstanceSpec) -> Instance:
        """Create an instance of an existing workload (id chosen by the caller)."""
        await self._run(CreateInstance(id=instance_id, spec=spec))
        return await self._written_instance(instance_id)

    async def get_instance(
        self, instance_id: str, *, consistency: ReadConsistency = LINEARIZABLE
    ) -> Instance | None:
        """The instance, or None."""
        return (await self.read_state(consistency)).get_instance(instance_id)

    async def list_instances(
        self,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        consistency: ReadConsistency = LINEARIZABLE,
    ) -> list[Instance]:
        """Instances sorted by id, optionally of one workload and/or on one node."""
        state = await self.read_state(consistency)
        return state.list_instances(workload_id=workload_id, node_id=node_id)

    async def update_instance_status(
        self,
        instance_id: str,
        status: InstanceStatus,
        *,
        message: str = "",
        node_id: str | None = None,
        expected_version: int | None = None,
    ) -> Instance:
        """Report an instance's status (and bind an unscheduled one to ``node_id``)."""
        await self._run(
            UpdateInstanceStatus(
                id=instance_id,
                status=status,
                message=message,
                node_id=node_id,
                expected_version=expected_version,
            )
        )
        return await self._written_instance(instance_id)

    async def delete_instance(
        self, instance_id: str, *, expected_version: int | None = None
    ) -> None:
        """Delete an instance (conditionally on its version)."""
        await self._run(DeleteInstance(id=instance_id, expected_version=expected_version))

    async def _written_instance(self, instance_id: str) -> Instance:
        instance = (await self.read_state(ReadConsistency.LOCAL)).get_instance(instance_id)
        if instance is None:
            raise _gone("instance", instance_id)
        return instance

    # ------------------------------------------------------------ nodes

    async def register_node(self, info: NodeInfo, *, status: NodeStatus = NodeStatus.READY) -> Node:
        """Register a node."""
        await self._run(RegisterNode(info=info, status=status))
        return await self._written_node(info.id)

    async def get_node(
        self, node_id: str, *, consistency: ReadConsistency = LINEARIZABLE
    ) -> Node | None:
        """The node, or None."""
        return (await self.read_state(consistency)).get_node(node_id)

    async def list_nodes(self, *, consistency: ReadConsistency = LINEARIZABLE) -> list[Node]:
        """Every node, sorted by id."""
        return (await self.read_state(consistency)).list_nodes()

    async def update_node_status(
        self, node_id: str, status: NodeStatus, *, expected_version: int | None = None
    ) -> Node:
        """Set a node's status (``down`` turns its live instances ``unknown``)."""
        await self._run(
            UpdateNodeStatus(id=node_id, status=status, expected_version=expected_version)
        )
        return await self._written_node(node_id)

    async def deregister_node(self, node_id: str, *, expected_version: int | None = None) -> None:
        """Remove a node and delete the instances placed on it."""
        await self._run(DeregisterNode(id=node_id, expected_version=expected_version))

    async def _written_node(self, node_id: str) -> Node:
        node = (await self.read_state(ReadConsistency.LOCAL)).get_node(node_id)
        if node is None:
            raise _gone("node", node_id)
        return node

    # ------------------------------------------------------------ credits, sessions

    async def mint_credits(self, to_peer: str, amount: int, reason: str) -> None:
        """Create ``amount`` credits for ``to_peer``."""
        await self._run(MintCredits(to_peer=to_peer, amount=amount, reason=reason))

    async def transfer_credits(self, from_peer: str, to_peer: str, amount: int) -> None:
        """Move ``amount`` credits between peers, atomically."""
        await self._run(TransferCredits(from_peer=from_peer, to_peer=to_peer, amount=amount))

    async def get_balance(self, peer: str, *, consistency: ReadConsistency = LINEARIZABLE) -> int:
        """A peer's balance (0 if none)."""
        return (await self.read_state(consistency)).balance(peer)

    async def open_session(self) -> str:
        """Open a client session for exactly-once commands; returns its client id."""
        response = await self._run(OpenSession())
        assert isinstance(response, Created)
        return response.id

    async def close_session(self, client_id: str) -> None:
        """Close a client session."""
        await self._run(CloseSession(client_id=client_id))


@attrs.define(eq=False)
class InMemoryStateStore(StateStore):
    """A ``StateStore`` applying straight to a local state machine: no Raft, one process.

    Each command gets the next log index and term ``term``. ``clock_ms``, if given, stamps
    each command with a time (as a leader would) so time-based session expiry can be tested;
    inject a fake clock, the state machine never reads one.
    """

    state_machine: ClusterStateMachine = attrs.field(factory=ClusterStateMachine)
    clock_ms: Callable[[], int] | None = None
    term: int = 1

    async def execute(self, command: Command | Envelope) -> Response:
        """Apply at the next index; the response is final at once."""
        index = self.state_machine.last_applied_index + 1
        time_ms = None if self.clock_ms is None else self.clock_ms()
        response = self.state_machine.apply(command, index=index, term=self.term, time_ms=time_ms)
        self.applied(self.state_machine.last_events())
        return response

    def applied(self, events: tuple[Event, ...]) -> None:
        """Hook: the last command made these events (a watching subclass keeps them)."""

    async def read_state(self, consistency: ReadConsistency) -> ClusterStateMachine:
        """The local state machine: with one replica every read is linearizable."""
        return self.state_machine
