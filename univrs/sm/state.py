"""The cluster state machine: ``apply(command, index=, term=)`` and read-only queries.

Theory of operation
-------------------
Every replica applies the same committed commands in the same order and must end in the same
state, so ``apply`` is deterministic (no clock, no randomness, no iteration over hash-ordered
sets: the object tables iterate in id order, the other collections are dicts, whose order is
insertion order; both are the same on every replica) and total (every command gets a
response; a rejected command changes nothing but ``last_applied`` and, for session commands,
the session's activity).

Each handler first validates everything (arguments, existence, versions), and only then
mutates, with no failure point in the mutation: a command is applied whole or not at all.

Versions and revisions: every command applies at a *revision*, and a successful command sets
the version of every object it changes to that revision (cascades included: instances turned
``unknown`` when their node goes down get it too); session ids (``c<revision>``), the objects'
``created_index``, session activity and the watch history's revisions are revisions as well.
A log entry carries one command (``apply``) or a batch of them (``apply_batch``, payload
version 2: univrs/runtime/payload.py). Each command, and each entry without one
(``mark_applied``), takes revision ``max(last revision + 1, its entry's index)``, so the
commands of one batch entry take consecutive revisions and revisions only grow. While every
entry carries one command (all logs written before batch entries existed) the revision *is*
the log index, exactly as before: old logs and snapshots give the same versions, ids and
digests. A snapshot stores the last revision when it differs from the last index.

Cost: O(log n) table operations per command (the tables are ordered by id:
``univrs.sm.tables``), except the cascades (DeleteWorkload, DeregisterNode, UpdateNodeStatus to
``down``), which are O(instances affected) thanks to the secondary indexes workload ->
instances and node -> instances, and visit the instances in id order. Reads that list are range
scans in id order: a page of ``limit`` objects after an id costs O(log n + limit).

Watch events: ``last_events()`` describes what the last applied command changed
(``univrs.sm.events``), for the runtime's watch history; it is derived from the changes the
object tables recorded during that command, so it costs nothing unless somebody asks.

The object tables and their indexes live in ``univrs.sm.objects``; the ledger in
``credits``; the session table in ``sessions``. ``problems()`` checks all their invariants
(the property tests call it after every command).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import attrs

from univrs.sm import objects as _objects_module
from univrs.sm.commands import (
    BootstrapToken,
    CloseSession,
    Command,
    CreateInstance,
    CreateToken,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    Envelope,
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
from univrs.sm.errors import AppliedOutOfOrder, DecodeError
from univrs.sm.events import Event, ObjectKind
from univrs.sm.model import (
    TERMINAL_INSTANCE_STATUSES,
    UNSCHEDULABLE_NODE_STATUSES,
    Instance,
    InstanceStatus,
    Node,
    NodeStatus,
    Workload,
)
from univrs.sm.objects import AppliedChanges, Objects, StoredWorkload
from univrs.sm.responses import Created, ErrorCode, Failure, Response, Success
from univrs.sm.sessions import Session, SessionPolicy, SessionTable
from univrs.sm.tables import RawRows
from univrs.sm.tokens import Token, TokenTable
from univrs.sm.validate import (
    MAX_VERSION,
    id_problem,
    instance_spec_problem,
    is_int,
    node_info_problem,
    replicas_problem,
    shown,
    text_problem,
    version_problem,
    workload_spec_problem,
)


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


MAX_OWNER_LEN = 256


def _invalid(message: str) -> Failure:
    return Failure(code=ErrorCode.INVALID_ARGUMENT, message=message)


def _not_found(what: str, ident: str) -> Failure:
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
        return None, _invalid(problem)
    assert isinstance(ident, str)
    found = lookup(ident)
    if found is None:
        return None, _not_found(what, ident)
    return found, _conflict(expected, found.version)


@attrs.define(eq=False)
class ClusterStateMachine:
    """The replicated cluster state: workloads, instances, nodes, credits and client sessions."""

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
    # The revision of the last applied command or entry (see the module docstring); equal to
    # _last_index until a batch entry applies, never below it.
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

    # ---------------------------------------------------------------- apply

    def apply(
        self, command: Envelope | Command, *, index: int, term: int, time_ms: int | None = None
    ) -> Response:
        """Apply the one committed command of log position (index, term); never raises for a
        bad command. Raises ``AppliedOutOfOrder`` if ``index`` is not after the last applied one.

        The changes of one command are made in one ``batch`` (a write transaction for a
        persistent backend), or in the caller's batch if one is open."""
        with self._objects.batch():
            self.mark_applied(index=index, term=term, time_ms=time_ms)
            return self._command(command, self._revision)

    def apply_batch(
        self,
        commands: Sequence[Envelope | Command | Failure],
        *,
        index: int,
        term: int,
        time_ms: int | None = None,
        each: Callable[[int, AppliedChanges], None] | None = None,
    ) -> list[Response]:
        """Apply the commands of the batch entry at log position (index, term), in order, at
        consecutive revisions (see the module docstring): one response each, as if each were
        the one command of its own entry. A ``Failure`` in ``commands`` (a command its replica
        could not decode, the same on every replica) is that command's response and takes its
        revision too. ``each(revision, changes)`` is called after each command with what it
        changed (``last_changes``), before the next one applies. Raises
        ``AppliedOutOfOrder`` like ``apply``; ``commands`` must not be empty."""
        if not commands:
            raise ValueError("a batch entry carries at least one command")
        self._enter(index, term, time_ms)
        responses: list[Response] = []
        for command in commands:
            with self._objects.batch():
                revision = self._next_revision()
                if isinstance(command, Failure):
                    response: Response = command
                else:
                    response = self._command(command, revision)
            responses.append(response)
            if each is not None:
                each(revision, self.last_changes())
        return responses

    def _command(self, command: Envelope | Command, index: int) -> Response:
        if isinstance(command, Envelope):
            cmd: object = command.command
            client_id, seq = command.client_id, command.seq
        else:
            cmd, client_id, seq = command, None, None
        if client_id is None and seq is None:
            return self._dispatch(cmd, index)
        if client_id is None or seq is None:
            return _invalid("client_id and seq must be given together")
        problem = id_problem("client_id", client_id)
        if problem:
            return _invalid(problem)
        if not is_int(seq) or not 1 <= seq <= MAX_VERSION:
            return _invalid("seq must be a positive integer")
        if isinstance(cmd, OpenSession | CloseSession):
            return _invalid("session commands are sent without a client id and seq")
        session = self._sessions.get(client_id)
        if session is None:
            return Failure(
                code=ErrorCode.SESSION_EXPIRED, message=f"session {client_id!r} is unknown"
            )
        self._sessions.touch(session, index, self._clock_ms)
        if self._sessions.is_stale(session, seq):
            return Failure(
                code=ErrorCode.STALE_SEQUENCE,
                message=f"seq {seq} is older than the window of session {client_id!r}",
            )
        cached = session.responses.get(seq)
        if cached is not None:
            return cached  # a retry: answered, not applied again
        response = self._dispatch(cmd, index)
        self._sessions.record(session, seq, response)
        return response

    def mark_applied(self, *, index: int, term: int, time_ms: int | None = None) -> None:
        """Advance to log position (index, term) without a command (a no-op or configuration
        entry), so ``last_applied`` and snapshots follow the log; it takes a revision (the
        index, while no batch entry applied) and expires sessions."""
        with self._objects.batch():
            self._enter(index, term, time_ms)
            self._next_revision()

    def batch(self) -> AbstractContextManager[object]:
        """A context in which every change is made in one batch: one write transaction for a
        persistent backend, committed with the applied index, revision, term and clock when
        the block ends (the runtime applies a chunk of entries in one). Nothing in memory. If
        the block raises, a persistent state is left as it was before it, but this object is
        not: the caller must drop it (the node stops) and open the state again."""
        return self._objects.batch()

    def _enter(self, index: int, term: int, time_ms: int | None) -> None:
        """Start applying the entry at (index, term)."""
        if index <= self._last_index:
            raise AppliedOutOfOrder(
                f"index {index} is not after the last applied index {self._last_index}"
            )
        self._last_index, self._last_term = index, term
        if time_ms is not None and time_ms > self._clock_ms:
            self._clock_ms = time_ms

    def _next_revision(self) -> int:
        """Take the next revision in the current entry: ``max(last + 1, the entry's index)``."""
        revision = self._revision + 1
        if revision < self._last_index:
            revision = self._last_index
        self._revision = revision
        self._objects.changes.clear()  # last_events() describes this revision only
        self._sessions.expire(revision, self._clock_ms)
        return revision

    def _dispatch(self, cmd: object, index: int) -> Response:
        handler = _HANDLERS.get(type(cmd))
        if handler is None:
            return _invalid(f"unknown command type {type(cmd).__name__}")
        return handler(self, cmd, index)

    # ---------------------------------------------------------------- workloads

    def _create_workload(self, cmd: CreateWorkload, index: int) -> Response:
        problem = id_problem("workload id", cmd.id) or workload_spec_problem(cmd.spec)
        if problem:
            return _invalid(problem)
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
            return _invalid(problem)
        stored, failure = _find("workload", self._objects.workload, cmd.id, cmd.expected_version)
        if failure or stored is None:
            return failure or _not_found("workload", cmd.id)
        self._objects.put_workload(attrs.evolve(stored, spec=cmd.spec, version=index))
        return Success(version=index)

    def _scale_workload(self, cmd: ScaleWorkload, index: int) -> Response:
        problem = replicas_problem(cmd.replicas)
        if problem:
            return _invalid(problem)
        stored, failure = _find("workload", self._objects.workload, cmd.id, cmd.expected_version)
        if failure or stored is None:
            return failure or _not_found("workload", cmd.id)
        spec = attrs.evolve(stored.spec, replicas=cmd.replicas)
        self._objects.put_workload(attrs.evolve(stored, spec=spec, version=index))
        return Success(version=index)

    def _delete_workload(self, cmd: DeleteWorkload, index: int) -> Response:
        stored, failure = _find("workload", self._objects.workload, cmd.id, cmd.expected_version)
        if failure or stored is None:
            return failure or _not_found("workload", cmd.id)
        self._objects.delete_workload(cmd.id)  # cascade: its instances go with it (no orphans)
        return Success(version=index)

    # ---------------------------------------------------------------- instances

    def _schedulable_node(self, node_id: str) -> Failure | None:
        node = self._objects.node(node_id)
        if node is None:
            return _not_found("node", node_id)
        if node.status in UNSCHEDULABLE_NODE_STATUSES:
            return _invalid(f"node {node_id!r} is {node.status.value} and accepts no instances")
        return None

    def _fenced(self, fence_term: object) -> Failure | None:
        """The failure of a command fenced by a term other than its entry's (or None)."""
        if fence_term is None:
            return None
        problem = version_problem(fence_term)  # the same range as a version: 1 .. MAX
        if problem:
            return _invalid(problem.replace("expected_version", "fence_term"))
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
            return _invalid(problem)
        fenced = self._fenced(cmd.fence_term)
        if fenced:
            return fenced
        if self._objects.instance(cmd.id) is not None:
            return Failure(
                code=ErrorCode.ALREADY_EXISTS, message=f"instance {cmd.id!r} already exists"
            )
        workload_id, node_id = cmd.spec.workload_id, cmd.spec.node_id
        if self._objects.workload(workload_id) is None:
            return _not_found("workload", workload_id)
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
            return _invalid(f"status {shown(cmd.status)} is not an instance status")
        problem = text_problem("message", cmd.message)
        if problem is None and cmd.node_id is not None:
            problem = id_problem("node_id", cmd.node_id)
        if problem:
            return _invalid(problem)
        instance, failure = _find("instance", self._objects.instance, cmd.id, cmd.expected_version)
        if failure or instance is None:
            return failure or _not_found("instance", cmd.id)
        if instance.status in TERMINAL_INSTANCE_STATUSES and cmd.status != instance.status:
            return _invalid(
                f"instance {cmd.id!r} is {instance.status.value}, a terminal status; "
                "create a new instance instead"
            )
        bind = False
        if cmd.node_id is not None and cmd.node_id != instance.node_id:
            if instance.node_id is not None:
                return _invalid(
                    f"instance {cmd.id!r} is on node {instance.node_id!r}; instances do not move"
                )
            failure = self._schedulable_node(cmd.node_id)
            if failure:
                return failure
            bind = True
        node_id = cmd.node_id if bind else instance.node_id
        if node_id is None and cmd.status in (InstanceStatus.RUNNING, InstanceStatus.SUCCEEDED):
            return _invalid(f"instance {cmd.id!r} is not on a node and cannot be {cmd.status}")
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
            return failure or _not_found("instance", cmd.id)
        self._objects.delete_instance(cmd.id)
        return Success(version=index)

    # ---------------------------------------------------------------- nodes

    def _register_node(self, cmd: RegisterNode, index: int) -> Response:
        problem = node_info_problem(cmd.info)
        if problem:
            return _invalid(problem)
        if not isinstance(cmd.status, NodeStatus):
            return _invalid(f"status {shown(cmd.status)} is not a node status")
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
            return _invalid(f"status {shown(cmd.status)} is not a node status")
        node, failure = _find("node", self._objects.node, cmd.id, cmd.expected_version)
        if failure or node is None:
            return failure or _not_found("node", cmd.id)
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
            return failure or _not_found("node", cmd.id)
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
            return _invalid(problem)
        client_id = f"c{index}"  # from the log position: unique, the same on every replica
        self._sessions.open(client_id, index, self._clock_ms, owner)
        return Created(id=client_id, version=index)

    def _close_session(self, cmd: CloseSession, index: int) -> Response:
        problem = id_problem("client_id", cmd.client_id)
        if problem:
            return _invalid(problem)
        session = self._sessions.get(cmd.client_id)
        if session is not None and cmd.owner is not None and session.owner != cmd.owner:
            # Another caller's session (ids are log positions: easy to guess): closing it
            # would take that writer's exactly-once guarantee away (red team).
            return _not_found("session", cmd.client_id)
        self._sessions.close(cmd.client_id)  # idempotent: closing an unknown session succeeds
        return Success(version=index)

    # ---------------------------------------------------------------- watch events

    def last_events(self) -> tuple[Event, ...]:
        """The events of the last applied command or entry (empty if it changed no object), in
        the order the changes were made. Call it before applying the next one: a workload's
        status is derived from the instances as they are when this is called."""
        return self.last_changes().events()

    def last_changes(self) -> AppliedChanges:
        """``last_events()`` captured, not rendered: the changed objects (immutable) and each
        changed workload's instance counts as they are now, so the events can be rendered
        later, after other entries applied, exactly as ``last_events()`` renders them now.
        Cheap (no views built): the runtime's watch history keeps these and renders only the
        revisions a watcher reads (issue 14)."""
        changes = self._objects.changes
        if not changes:
            return AppliedChanges(self._revision, ())
        counts = self._objects.instance_counts
        items: list[tuple[ObjectKind, str, Any, Any]] = []
        for kind, ident, before, after in changes:
            was: Any = before
            now: Any = after
            if isinstance(before, StoredWorkload):
                was = (before, counts(before.id))
            if isinstance(after, StoredWorkload):
                now = (after, counts(after.id))
            items.append((kind, ident, was, now))
        return AppliedChanges(self._revision, tuple(items))

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
            return _invalid(problem)
        return self._tokens.revoke(cmd.id) or Success(version=index)

    # ---------------------------------------------------------------- queries

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

    # ---------------------------------------------------------------- snapshot support

    def stored_workloads(self) -> Iterator[StoredWorkload]:
        """Stored workloads in storage (id) order (for snapshots)."""
        return self._objects.stored_workloads()

    def stored_instances(self) -> Iterator[Instance]:
        """Instances in storage (id) order (for snapshots)."""
        return self._objects.stored_instances()

    def stored_nodes(self) -> Iterator[Node]:
        """Nodes in storage (id) order (for snapshots)."""
        return self._objects.stored_nodes()

    def stored_views(
        self,
    ) -> tuple[
        Callable[[], Iterator[StoredWorkload]],
        Callable[[], Iterator[Instance]],
        Callable[[], Iterator[Node]],
    ]:
        """Point-in-time views of the workloads, instances and nodes: cheap to take now,
        iterated in storage (id) order later, from another thread (for snapshots)."""
        return self._objects.views()

    def stored_raw_views(self) -> tuple[RawRows, RawRows, RawRows] | None:
        """Point-in-time views of the workload, instance and node rows already encoded for a
        snapshot (a persistent backend stores them so), or None (in memory): a snapshot of
        them copies bytes instead of encoding objects. Taken between batches."""
        return self._objects.raw_views()

    def ledger_items(self) -> Iterator[tuple[str, int]]:
        """(peer, balance) in storage order (for snapshots)."""
        return self._ledger.items()

    def stored_sessions(self) -> Iterator[Session]:
        """Sessions, least recently active first (for snapshots)."""
        return iter(self._sessions)

    def stored_tokens(self) -> Iterator[Token]:
        """API tokens in storage order (for snapshots)."""
        return iter(self._tokens)

    @classmethod
    def from_parts(
        cls,
        *,
        policy: SessionPolicy,
        last_index: int,
        last_term: int,
        clock_ms: int,
        workloads: Iterable[StoredWorkload],
        instances: Iterable[Instance],
        nodes: Iterable[Node],
        balances: list[tuple[str, int]],
        sessions: list[Session],
        tokens: list[Token] | None = None,
        tokens_bootstrapped: bool = False,
        revision: int | None = None,
        objects: Objects | None = None,
    ) -> ClusterStateMachine:
        """Rebuild a state machine (and its indexes) from snapshot parts, in their order, in
        ``objects`` (empty tables; default: new ones), all in one batch. ``revision`` is the
        last revision (None: ``last_index``, all a snapshot taken before batch entries existed
        can say).

        Raises ``DecodeError`` if the parts break an invariant (a corrupt snapshot)."""
        sm = cls(policy) if objects is None else cls(policy, objects=objects)
        sm._revision = last_index if revision is None else revision
        if sm._revision < last_index:
            raise DecodeError(
                f"snapshot: revision {sm._revision} is below the last index {last_index}"
            )
        with sm.batch():
            sm._last_index, sm._last_term, sm._clock_ms = last_index, last_term, clock_ms
            found = sm._objects.load(workloads, instances, nodes)
            sm._ledger.restore(balances)
            sm._sessions.restore(sessions)
            sm._tokens.restore(tokens or [], tokens_bootstrapped)
            found += sm._ledger.problems() + sm._sessions.problems() + sm._tokens.problems()
            if found:
                raise DecodeError(f"snapshot: {'; '.join(found)}")
            sm._objects.journal.rewrite()
        return sm

    @classmethod
    def resume(
        cls,
        objects: Objects,
        *,
        policy: SessionPolicy,
        last_index: int,
        last_term: int,
        clock_ms: int,
        balances: list[tuple[str, int]],
        sessions: list[Session],
        tokens: list[Token],
        tokens_bootstrapped: bool,
        revision: int,
    ) -> ClusterStateMachine:
        """A state machine on object tables that already hold its objects (a persistent
        backend opened again), with the small tables read back from it. Nothing is written.

        Raises ``DecodeError`` if the small tables break an invariant."""
        sm = cls(policy, objects=objects)
        sm._last_index, sm._last_term, sm._clock_ms = last_index, last_term, clock_ms
        if revision < last_index:
            raise DecodeError(f"stored state: revision {revision} is below index {last_index}")
        sm._revision = revision
        sm._ledger.restore(balances)
        sm._sessions.restore(sessions)
        sm._tokens.restore(tokens, tokens_bootstrapped)
        found = sm._ledger.problems() + sm._sessions.problems() + sm._tokens.problems()
        if found:
            raise DecodeError(f"stored state: {'; '.join(found)}")
        return sm

    def problems(self) -> list[str]:
        """Violated invariants (empty when the state is sound); for tests and debugging."""
        return (
            self._objects.problems()
            + self._ledger.problems()
            + self._sessions.problems()
            + self._tokens.problems()
        )


_HANDLERS: dict[type, Callable[[ClusterStateMachine, Any, int], Response]] = {
    CreateWorkload: ClusterStateMachine._create_workload,
    UpdateWorkload: ClusterStateMachine._update_workload,
    DeleteWorkload: ClusterStateMachine._delete_workload,
    ScaleWorkload: ClusterStateMachine._scale_workload,
    CreateInstance: ClusterStateMachine._create_instance,
    UpdateInstanceStatus: ClusterStateMachine._update_instance_status,
    DeleteInstance: ClusterStateMachine._delete_instance,
    RegisterNode: ClusterStateMachine._register_node,
    UpdateNodeStatus: ClusterStateMachine._update_node_status,
    DeregisterNode: ClusterStateMachine._deregister_node,
    TransferCredits: ClusterStateMachine._transfer_credits,
    MintCredits: ClusterStateMachine._mint_credits,
    OpenSession: ClusterStateMachine._open_session,
    CloseSession: ClusterStateMachine._close_session,
    CreateToken: ClusterStateMachine._create_token,
    BootstrapToken: ClusterStateMachine._bootstrap_token,
    RevokeToken: ClusterStateMachine._revoke_token,
}
