"""The command handlers of the cluster state machine: one method per command, found by type.

Theory of operation
-------------------
``CommandHandlers`` holds the state machine's fields (declared here once, with their
invariants) and the handlers; ``ClusterStateMachine`` (univrs/sm/state.py) extends it with
``apply``, the revisions, the queries and the snapshot parts. As in RaftNode's chain of layers
(univrs/raft/base.py), the handlers call only this class and the tables below it, never up into
``ClusterStateMachine``.

``_dispatch(command, revision)`` runs the handler of the command's type; every handler is
given the revision the command applies at (see state.py, "Versions and revisions") and answers
with a ``Response``, never an exception. Each handler first validates everything (arguments,
existence, versions), and only then mutates, with no failure point in the mutation: a command
is applied whole or not at all. The cascades (DeleteWorkload, DeregisterNode, UpdateNodeStatus
to ``down``) cost O(instances affected): the object tables' secondary indexes
(``univrs.sm.objects``) give a workload's or a node's instances in id order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs

from univrs.sm import objects as _objects_module
from univrs.sm.builders import slot_builder
from univrs.sm.commands import (
    BootstrapToken,
    CloseSession,
    CreateInstance,
    CreateToken,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    MintCredits,
    OpenSession,
    RegisterNode,
    RevokeToken,
    ScaleWorkload,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    UpdateWorkload,
)
from univrs.sm.credits import Ledger
from univrs.sm.model import (
    TERMINAL_INSTANCE_STATUSES,
    UNSCHEDULABLE_NODE_STATUSES,
    Instance,
    InstanceStatus,
    Node,
    NodeStatus,
    with_replicas,
)
from univrs.sm.objects import Objects, StoredWorkload
from univrs.sm.responses import Created, ErrorCode, Failure, Response, Success
from univrs.sm.sessions import SessionPolicy, SessionTable
from univrs.sm.tokens import TokenTable
from univrs.sm.validate import (
    MAX_REPLICAS,
    MAX_VERSION,
    id_problem,
    instance_spec_problem,
    node_info_problem,
    replicas_problem,
    shown,
    text_problem,
    version_problem,
    workload_spec_problem,
)

MAX_OWNER_LEN = 256
_stored_workload = slot_builder(StoredWorkload)  # (id, spec, version, created_index)
_success: Callable[[int], Success] = slot_builder(
    Success
)  # ``Success(version=)``, built slot by slot (round 18)


def invalid(message: str) -> Failure:
    return Failure(code=ErrorCode.INVALID_ARGUMENT, message=message)


def not_found(what: str, ident: str) -> Failure:
    return Failure(code=ErrorCode.NOT_FOUND, message=f"{what} {ident!r} not found")


def _conflict(expected: int | None, current: int) -> Failure | None:
    if expected is None or expected == current:
        return None
    return Failure(
        code=ErrorCode.VERSION_CONFLICT,
        message=f"expected version {expected}, current version is {current}",
        current_version=current,
    )


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=_Versioned)


def _find(
    what: str, lookup: Callable[[str], V | None], ident: object, expected: int | None
) -> tuple[V | None, Failure | None]:
    """The object an update/scale/delete addresses, or the failure to answer: invalid
    argument, not found, or a version conflict (checked in that order)."""
    problem = version_problem(expected)
    if type(ident) is not str:
        problem = "the id must be a string"
    if problem:
        return None, invalid(problem)
    assert isinstance(ident, str)
    found = lookup(ident)
    if found is None:
        return None, not_found(what, ident)
    return found, _conflict(expected, found.version)


@attrs.define(eq=False)
class CommandHandlers:
    """The fields of the cluster state machine and the handler of each command."""

    policy: SessionPolicy = attrs.field(factory=SessionPolicy)
    # The object tables (and, through their journal, where the small tables are written):
    # in memory by default; ``univrs.storage.sm_tables`` gives persistent ones.
    _objects: Objects = attrs.field(
        factory=lambda: _objects_module.new_objects(), alias="objects", kw_only=True
    )
    _ledger: Ledger = attrs.field(init=False)
    _sessions: SessionTable = attrs.field(init=False)
    _tokens: TokenTable = attrs.field(init=False)
    _last_index: int = attrs.field(default=0, init=False)
    _last_term: int = attrs.field(default=0, init=False)
    # The revision of the last applied command or entry (state.py's module docstring, "Versions
    # and revisions"); equal to _last_index until a batch entry applies, never below it.
    _revision: int = attrs.field(default=0, init=False)
    # The largest leader-stamped time carried by an applied entry (monotone even if a new
    # leader's clock is behind); 0 until an entry carries one.
    _clock_ms: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        journal = self._objects.journal
        self._sessions = SessionTable(self.policy, journal=journal)
        self._ledger = Ledger(journal=journal)
        self._tokens = TokenTable(journal=journal)
        journal.attach(self)

    def _dispatch(self, cmd: object, index: int) -> Response:
        handler = _HANDLERS.get(type(cmd))
        if handler is None:
            return invalid(f"unknown command type {type(cmd).__name__}")
        return handler(self, cmd, index)

    # ---------------------------------------------------------------- workloads

    def _create_workload(self, cmd: CreateWorkload, index: int) -> Response:
        problem = id_problem("workload id", cmd.id) or workload_spec_problem(cmd.spec)
        if problem:
            return invalid(problem)
        if self._objects.workload(cmd.id) is not None:
            return Failure(
                code=ErrorCode.ALREADY_EXISTS, message=f"workload {cmd.id!r} already exists"
            )
        self._objects.put_workload(
            StoredWorkload(id=cmd.id, spec=cmd.spec, version=index, created_index=index)
        )
        return Created(id=cmd.id, version=index)

    def _update_workload(self, cmd: UpdateWorkload, index: int) -> Response:
        problem = workload_spec_problem(cmd.spec)
        if problem:
            return invalid(problem)
        stored, failure = _find("workload", self._objects.workload, cmd.id, cmd.expected_version)
        if failure or stored is None:
            return failure or not_found("workload", cmd.id)
        self._objects.put_workload(attrs.evolve(stored, spec=cmd.spec, version=index))
        return Success(version=index)

    def _scale_workload(self, cmd: ScaleWorkload, index: int) -> Response:
        replicas, ident, expected = cmd.replicas, cmd.id, cmd.expected_version
        if (
            type(replicas) is int
            and 0 <= replicas <= MAX_REPLICAS
            and type(ident) is str
            and (expected is None or (type(expected) is int and 0 <= expected <= MAX_VERSION))
        ):
            # Every write of a scale load (round 18): the checks of the general path below
            # (``replicas_problem``, then ``_find``'s) written out, here all passing, so the
            # same answer; the rest as there.
            stored = self._objects.workload(ident)
            if stored is not None and (expected is None or expected == stored.version):
                spec = with_replicas(stored.spec, replicas)
                # ``StoredWorkload(id=, spec=, version=, created_index=)``, slot by slot
                self._objects.put_workload(
                    _stored_workload(stored.id, spec, index, stored.created_index)
                )
                return _success(index)
        problem = replicas_problem(replicas)
        if problem:
            return invalid(problem)
        stored, failure = _find("workload", self._objects.workload, ident, expected)
        if failure or stored is None:
            return failure or not_found("workload", cmd.id)
        spec = with_replicas(stored.spec, cmd.replicas)
        self._objects.put_workload(_stored_workload(stored.id, spec, index, stored.created_index))
        return Success(version=index)

    def _delete_workload(self, cmd: DeleteWorkload, index: int) -> Response:
        stored, failure = _find("workload", self._objects.workload, cmd.id, cmd.expected_version)
        if failure or stored is None:
            return failure or not_found("workload", cmd.id)
        self._objects.delete_workload(cmd.id)  # cascade: its instances go with it (no orphans)
        return Success(version=index)

    # ---------------------------------------------------------------- instances

    def _schedulable_node(self, node_id: str) -> Failure | None:
        node = self._objects.node(node_id)
        if node is None:
            return not_found("node", node_id)
        if node.status in UNSCHEDULABLE_NODE_STATUSES:
            return invalid(f"node {node_id!r} is {node.status.value} and accepts no instances")
        return None

    def _fenced(self, fence_term: object) -> Failure | None:
        """The failure of a command fenced by a term other than its entry's (or None)."""
        if fence_term is None:
            return None
        problem = version_problem(fence_term)  # the same range as a version: 1 .. MAX
        if problem:
            return invalid(problem.replace("expected_version", "fence_term"))
        if fence_term != self._last_term:
            return Failure(
                code=ErrorCode.VERSION_CONFLICT,
                message=(
                    f"decided in term {fence_term} but appended in term {self._last_term}: "
                    "a stale leader's decision is not applied"
                ),
            )
        return None

    def _create_instance(self, cmd: CreateInstance, index: int) -> Response:
        problem = id_problem("instance id", cmd.id) or instance_spec_problem(cmd.spec)
        if problem:
            return invalid(problem)
        fenced = self._fenced(cmd.fence_term)
        if fenced:
            return fenced
        if self._objects.instance(cmd.id) is not None:
            return Failure(
                code=ErrorCode.ALREADY_EXISTS, message=f"instance {cmd.id!r} already exists"
            )
        workload_id, node_id = cmd.spec.workload_id, cmd.spec.node_id
        if self._objects.workload(workload_id) is None:
            return not_found("workload", workload_id)
        if node_id is not None:
            failure = self._schedulable_node(node_id)
            if failure:
                return failure
        self._objects.put_instance(
            Instance(
                id=cmd.id,
                workload_id=workload_id,
                node_id=node_id,
                status=InstanceStatus.PENDING,
                message="",
                version=index,
                created_index=index,
            )
        )
        return Created(id=cmd.id, version=index)

    def _update_instance_status(self, cmd: UpdateInstanceStatus, index: int) -> Response:
        if not isinstance(cmd.status, InstanceStatus):
            return invalid(f"status {shown(cmd.status)} is not an instance status")
        problem = text_problem("message", cmd.message)
        if problem is None and cmd.node_id is not None:
            problem = id_problem("node_id", cmd.node_id)
        if problem:
            return invalid(problem)
        instance, failure = _find("instance", self._objects.instance, cmd.id, cmd.expected_version)
        if failure or instance is None:
            return failure or not_found("instance", cmd.id)
        if instance.status in TERMINAL_INSTANCE_STATUSES and cmd.status != instance.status:
            return invalid(
                f"instance {cmd.id!r} is {instance.status.value}, a terminal status; "
                "create a new instance instead"
            )
        bind = False
        if cmd.node_id is not None and cmd.node_id != instance.node_id:
            if instance.node_id is not None:
                return invalid(
                    f"instance {cmd.id!r} is on node {instance.node_id!r}; instances do not move"
                )
            failure = self._schedulable_node(cmd.node_id)
            if failure:
                return failure
            bind = True
        node_id = cmd.node_id if bind else instance.node_id
        if node_id is None and cmd.status in (InstanceStatus.RUNNING, InstanceStatus.SUCCEEDED):
            return invalid(f"instance {cmd.id!r} is not on a node and cannot be {cmd.status}")
        self._objects.put_instance(
            attrs.evolve(
                instance, status=cmd.status, message=cmd.message, node_id=node_id, version=index
            )
        )
        return Success(version=index)

    def _delete_instance(self, cmd: DeleteInstance, index: int) -> Response:
        fenced = self._fenced(cmd.fence_term)
        if fenced:
            return fenced
        instance, failure = _find("instance", self._objects.instance, cmd.id, cmd.expected_version)
        if failure or instance is None:
            return failure or not_found("instance", cmd.id)
        self._objects.delete_instance(cmd.id)
        return Success(version=index)

    # ---------------------------------------------------------------- nodes

    def _register_node(self, cmd: RegisterNode, index: int) -> Response:
        problem = node_info_problem(cmd.info)
        if problem:
            return invalid(problem)
        if not isinstance(cmd.status, NodeStatus):
            return invalid(f"status {shown(cmd.status)} is not a node status")
        node_id = cmd.info.id
        if self._objects.node(node_id) is not None:
            return Failure(
                code=ErrorCode.ALREADY_EXISTS, message=f"node {node_id!r} is already registered"
            )
        self._objects.put_node(
            Node(info=cmd.info, status=cmd.status, version=index, created_index=index)
        )
        return Created(id=node_id, version=index)

    def _update_node_status(self, cmd: UpdateNodeStatus, index: int) -> Response:
        if not isinstance(cmd.status, NodeStatus):
            return invalid(f"status {shown(cmd.status)} is not a node status")
        node, failure = _find("node", self._objects.node, cmd.id, cmd.expected_version)
        if failure or node is None:
            return failure or not_found("node", cmd.id)
        if cmd.status is NodeStatus.DOWN and node.status is not NodeStatus.DOWN:
            # Nobody can vouch for what runs on a down node: its live instances become unknown.
            message = f"node {cmd.id} is down"
            for instance in self._objects.instances_on(cmd.id):
                if instance.status in (InstanceStatus.PENDING, InstanceStatus.RUNNING):
                    self._objects.put_instance(
                        attrs.evolve(
                            instance, status=InstanceStatus.UNKNOWN, message=message, version=index
                        )
                    )
        self._objects.put_node(attrs.evolve(node, status=cmd.status, version=index))
        return Success(version=index)

    def _deregister_node(self, cmd: DeregisterNode, index: int) -> Response:
        node, failure = _find("node", self._objects.node, cmd.id, cmd.expected_version)
        if failure or node is None:
            return failure or not_found("node", cmd.id)
        # Cascade: instances placed on the node are deleted with it (the reconciler sees the
        # workload short of replicas and creates replacements elsewhere).
        self._objects.delete_node(cmd.id)
        return Success(version=index)

    # ---------------------------------------------------------------- credits, sessions

    def _transfer_credits(self, cmd: TransferCredits, index: int) -> Response:
        failure = self._ledger.transfer(cmd.from_peer, cmd.to_peer, cmd.amount)
        return failure or Success(version=index)

    def _mint_credits(self, cmd: MintCredits, index: int) -> Response:
        failure = self._ledger.mint(cmd.to_peer, cmd.amount, cmd.reason)
        return failure or Success(version=index)

    def _open_session(self, cmd: OpenSession, index: int) -> Response:
        owner = "" if cmd.owner is None else cmd.owner
        problem = text_problem("owner", owner, MAX_OWNER_LEN)
        if problem:
            return invalid(problem)
        client_id = f"c{index}"  # from the log position: unique, the same on every replica
        self._sessions.open(client_id, index, self._clock_ms, owner)
        return Created(id=client_id, version=index)

    def _close_session(self, cmd: CloseSession, index: int) -> Response:
        problem = id_problem("client_id", cmd.client_id)
        if problem:
            return invalid(problem)
        session = self._sessions.get(cmd.client_id)
        if session is not None and cmd.owner is not None and session.owner != cmd.owner:
            # Another caller's session (ids are log positions: easy to guess): closing it
            # would take that writer's exactly-once guarantee away (red team).
            return not_found("session", cmd.client_id)
        self._sessions.close(cmd.client_id)  # idempotent: closing an unknown session succeeds
        return Success(version=index)

    # ---------------------------------------------------------------- tokens

    def _create_token(self, cmd: CreateToken, index: int) -> Response:
        failure = self._tokens.create(
            token_id=cmd.id,
            name=cmd.name,
            roles=cmd.roles,
            secret_hash=cmd.secret_hash,
            index=index,
            now_ms=self._clock_ms,
        )
        return failure or Created(id=cmd.id, version=index)

    def _bootstrap_token(self, cmd: BootstrapToken, index: int) -> Response:
        failure = self._tokens.bootstrap(
            token_id=cmd.id,
            name=cmd.name,
            secret_hash=cmd.secret_hash,
            index=index,
            now_ms=self._clock_ms,
        )
        return failure or Created(id=cmd.id, version=index)

    def _revoke_token(self, cmd: RevokeToken, index: int) -> Response:
        problem = id_problem("token id", cmd.id)
        if problem:
            return invalid(problem)
        return self._tokens.revoke(cmd.id) or Success(version=index)


_HANDLERS: dict[type, Callable[[CommandHandlers, Any, int], Response]] = {
    CreateWorkload: CommandHandlers._create_workload,
    UpdateWorkload: CommandHandlers._update_workload,
    DeleteWorkload: CommandHandlers._delete_workload,
    ScaleWorkload: CommandHandlers._scale_workload,
    CreateInstance: CommandHandlers._create_instance,
    UpdateInstanceStatus: CommandHandlers._update_instance_status,
    DeleteInstance: CommandHandlers._delete_instance,
    RegisterNode: CommandHandlers._register_node,
    UpdateNodeStatus: CommandHandlers._update_node_status,
    DeregisterNode: CommandHandlers._deregister_node,
    TransferCredits: CommandHandlers._transfer_credits,
    MintCredits: CommandHandlers._mint_credits,
    OpenSession: CommandHandlers._open_session,
    CloseSession: CommandHandlers._close_session,
    CreateToken: CommandHandlers._create_token,
    BootstrapToken: CommandHandlers._bootstrap_token,
    RevokeToken: CommandHandlers._revoke_token,
}
