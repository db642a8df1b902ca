"""The server half of every operation: what a node does with it, by name.

The operations are declared once in ``univrs.service.operations`` (name, arguments, routes,
client method, CLI command). Here each gets what only a node can do:

* a write: ``build(args)`` checks the arguments and returns the state-machine command plus the
  *normalized* arguments (with the object id the serving node assigned, so a node forwarding
  the write to the leader sends exactly what it checked and the leader assigns nothing new);
  ``render(command, response, state)`` turns the applied command's response into the result
  document, reading the object back from the executing node's state.
* a read: ``read(args, state)`` returns the result document from a state machine that is
  already safe to read at the requested consistency.

Before either runs, the arguments are checked against the declaration: every required one
present, none undeclared (``InvalidArgument`` names the field); the argument readers are in
``univrs.api.opargs``. Nothing here does I/O; ``univrs.api.service`` runs the operations
against a node, and ``univrs.api.forward.request_of`` maps a command back to its operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from univrs.api import convert as cv
from univrs.api import opargs as oa
from univrs.api.answers import WorkloadAnswers
from univrs.api.token_ops import (
    _build_bootstrap_token,
    _build_create_token,
    _build_revoke_token,
    _finish_token,
    _read_tokens,
    _render_revoked,
    _render_token,
)
from univrs.errors import (
    InvalidArgument,
    NotFound,
)
from univrs.service.operations import OPERATIONS, Kind
from univrs.service.operations import Operation as Declaration
from univrs.service.reconcile import status_of
from univrs.service.schemas import DEFAULT_LIMIT, MAX_LIMIT
from univrs.sm.builders import slot_builder
from univrs.sm.commands import (
    CloseSession,
    Command,
    CreateInstance,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    MintCredits,
    OpenSession,
    RegisterNode,
    ScaleWorkload,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    UpdateWorkload,
)
from univrs.sm.credits import MAX_REASON_LEN
from univrs.sm.model import Instance, InstanceSpec, InstanceStatus, Node, NodeStatus
from univrs.sm.objects import StoredWorkload
from univrs.sm.responses import Created, Response
from univrs.sm.state import ClusterStateMachine
from univrs.sm.validate import MAX_REPLICAS, VALID_IDS, id_problem, text_problem

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

__all__ = [
    "DEFAULT_LIMIT",
    "HANDLERS",
    "MAX_LIMIT",
    "UNKEYED",
    "Handler",
    "handler",
]

Build = Callable[[dict[str, Any]], tuple[Command, dict[str, Any]]]
# On the leader, right before proposing: (the command to propose, or None to propose nothing
# and render from the current state; fields to add to the result). It may raise (NotFound).
LeaderStep = Callable[
    [Any, ClusterStateMachine, "NodeHandle"], tuple[Command | None, dict[str, Any]]
]
Render = Callable[[Any, Response, ClusterStateMachine], Any]
Read = Callable[[dict[str, Any], ClusterStateMachine], Any]
# After ``render``: adds what only the built arguments know (a new token's secret, which the
# command does not carry) to the result.
Finish = Callable[[dict[str, Any], Any, ClusterStateMachine], Any]


@attrs.frozen(kw_only=True)
class Handler:
    """The server half of one operation: a write (``build`` + ``render``) or a read
    (``read``); ``declaration`` is the operation it serves."""

    declaration: Declaration
    build: Build | None = None
    render: Render | None = None
    read: Read | None = None
    leader_step: LeaderStep | None = None  # a write that the leader may answer itself
    watch: bool = False  # served from the node's event history (univrs.api.watch)
    finish: Finish | None = None
    # Its result is ``_render_workload``'s: the fast protocol may take it encoded
    # (``render_workload_encoded``).
    workload_answer: bool = False
    # The declaration's, read once here: every request reads them (they are properties there).
    name: str = attrs.field(init=False)
    is_write: bool = attrs.field(init=False)
    required_role: str = attrs.field(init=False)
    allowed_when_full: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        declaration = self.declaration
        object.__setattr__(self, "name", declaration.name)
        object.__setattr__(self, "is_write", declaration.is_write)
        object.__setattr__(self, "required_role", declaration.required_role)
        object.__setattr__(self, "allowed_when_full", declaration.allowed_when_full)


# ------------------------------------------------------------------ workloads


def _build_create_workload(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident = oa.id_or_new(args)
    spec = cv.read_workload_spec(args["spec"])
    return CreateWorkload(id=ident, spec=spec), {"id": ident, "spec": args["spec"]}


def _build_update_workload(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident = oa.existing_id(args, "workload")
    spec = cv.read_workload_spec(args["spec"])
    return UpdateWorkload(id=ident, spec=spec, expected_version=oa.version(args)), args


def _build_scale_workload(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    # ``existing_id``'s and ``read_int``'s passing cases written out (a remembered valid id,
    # an int in range: the value itself), in their order; anything else goes to them, for
    # the same value or error (every scale request: a call and a keyword call less, s31).
    ident = args["id"]
    if type(ident) is not str or ident not in VALID_IDS:
        ident = oa.existing_id(args, "workload")
    replicas = args["replicas"]
    if type(replicas) is not int or not 0 <= replicas <= MAX_REPLICAS:
        replicas = cv.read_int(replicas, "replicas", maximum=MAX_REPLICAS)
    expected = oa.version(args) if "expected_version" in args else None
    return _new_scale(ident, replicas, expected), args


# ``ScaleWorkload(id=, replicas=, expected_version=)`` built slot by slot (univrs/sm/builders.py):
# the same frozen object, half the cost (every scale request builds one: s18-ingress).
_new_scale = slot_builder(ScaleWorkload)


def _build_delete(cls: Any, what: str) -> Build:
    def build(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
        ident = oa.existing_id(args, what)
        command: Command = cls(id=ident, expected_version=oa.version(args))
        return command, args

    return build


def _render_workload(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    ident = response.id if isinstance(response, Created) else cmd.id
    found = state.workload_with_status(ident)  # no Workload built: its parts rendered
    if found is None:
        return oa.gone(ident, response)
    return cv.stored_workload_doc(*found)


def render_workload_encoded(
    cmd: Any, response: Response, state: ClusterStateMachine, answers: WorkloadAnswers
) -> Any:
    """``_render_workload``'s document already encoded for the fast protocol (``Encoded``:
    the same bytes, univrs/api/answers.py); a gone workload's error as ``_render_workload``."""
    ident = response.id if isinstance(response, Created) else cmd.id
    found = state.workload_with_status(ident)
    if found is None:
        return oa.gone(ident, response)
    return answers.encode(*found)


def render_minimal(cmd: Any, response: Response) -> dict[str, Any]:
    """An ``OBJECT_WRITES`` write's minimal answer (``"answer": "minimal"``, s18-answers): its
    object's id and the version the write gave it, from the applied response alone (never a
    ``Failure`` here: raised before rendering), so it is the committed version even when a
    later write already changed the object, and no document is rendered."""
    ident = response.id if type(response) is Created else cmd.id
    return {"id": ident, "version": response.version}  # type: ignore[union-attr]


def _render_deleted(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    return {"id": cmd.id, "deleted": True, "version": getattr(response, "version", None)}


def _read_get_workload(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    return cv.workload_doc(oa.read_object(args, state, "workload"))


def _read_list_workloads(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    selector = cv.read_labels_filter(args["labels"]) if "labels" in args else ()
    name = cv.read_str(args["name"], "name") if "name" in args else None

    # The stored workloads are scanned and filtered (their specs); only the page's rows get
    # a status (one counts lookup each), the look-ahead none (s14-page).
    def items_after(after: str | None) -> Iterable[StoredWorkload]:
        items: Iterable[StoredWorkload] = state.iter_stored_workloads(after=after)
        if name is not None:
            items = (w for w in items if w.spec.name == name)
        if selector:
            items = (w for w in items if set(selector) <= set(w.spec.labels))
        return items

    def show(stored: StoredWorkload) -> Any:
        return cv.stored_workload_doc(stored, state.workload_status(stored))

    def ids_after(after: str) -> Iterable[str]:
        return state.workload_ids(after=after)

    unfiltered = name is None and not selector
    if state.workload_rows() is not None:  # stored as rows (LMDB): rendered from them
        return oa.page_scan(
            _rows_after(state, name, selector),
            _row_id,
            args,
            state,
            ids_after=ids_after if unfiltered else None,
            show=lambda row: cv.workload_row_doc(row, state.counts_status(row[0], row[5])),
        )
    return oa.page_scan(
        items_after,
        _id_of,
        args,
        state,
        ids_after=ids_after if unfiltered else None,
        show=show,
    )


def _rows_after(
    state: ClusterStateMachine, name: str | None, selector: tuple[tuple[str, str], ...]
) -> Callable[[str | None], Iterable[list[Any]]]:
    """``workload.list``'s items on a backend that stores rows: the stored rows from a
    cursor, filtered on their name and labels as the objects would be."""

    def rows_after(after: str | None) -> Iterable[list[Any]]:
        rows: Iterable[list[Any]] | None = state.workload_rows(after=after)
        assert rows is not None
        if name is not None:
            rows = (row for row in rows if row[3] == name)
        if selector:
            wanted = set(selector)
            rows = (row for row in rows if wanted <= _label_pairs(row))
        return rows

    return rows_after


def _label_pairs(row: list[Any]) -> set[tuple[str, str]]:
    labels = cv.workload_row_parts(row)[2]
    return set(zip(labels[::2], labels[1::2], strict=True))


def _row_id(row: list[Any]) -> str:
    return row[0]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ instances


def _build_create_instance(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident = oa.id_or_new(args)
    workload_id = cv.read_id(args["workload_id"], "workload_id")
    spec = InstanceSpec(workload_id=workload_id, node_id=oa.opt_id(args, "node_id"))
    return CreateInstance(id=ident, spec=spec), {**args, "id": ident}


def _build_update_instance_status(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident = oa.existing_id(args, "instance")
    status = cv.read_enum(InstanceStatus, args["status"], "status")
    message = cv.read_str(args.get("message", ""), "message")
    problem = text_problem("message", message)
    if problem:
        raise InvalidArgument(problem, field="message")
    command = UpdateInstanceStatus(
        id=ident,
        status=status,
        message=message,
        node_id=oa.opt_id(args, "node_id"),
        expected_version=oa.version(args),
    )
    return command, args


def _render_instance(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    ident = response.id if isinstance(response, Created) else cmd.id
    instance = state.get_instance(ident)
    if instance is None:
        return oa.gone(ident, response)
    return cv.instance_doc(instance)


def _read_get_instance(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    return cv.instance_doc(oa.read_object(args, state, "instance"))


def _read_list_instances(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    workload_id = cv.read_str(args["workload_id"], "workload_id") if "workload_id" in args else None
    node_id = cv.read_str(args["node_id"], "node_id") if "node_id" in args else None
    status = cv.read_enum(InstanceStatus, args["status"], "status") if "status" in args else None

    def items_after(after: str | None) -> Iterable[Instance]:
        items = state.iter_instances(workload_id=workload_id, node_id=node_id, after=after)
        return items if status is None else (i for i in items if i.status is status)

    def ids_after(after: str) -> Iterable[str]:  # the look-ahead without an instance read
        return state.instance_ids(workload_id=workload_id, node_id=node_id, after=after)

    return oa.page_scan(
        items_after,
        _id_of,
        args,
        state,
        ids_after=ids_after if status is None else None,
        show=cv.instance_doc,
    )


def _id_of(item: Any) -> str:
    return item.id  # type: ignore[no-any-return]


# ------------------------------------------------------------------ nodes


def _build_register_node(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident = cv.read_id(args["id"], "id")
    info = cv.read_node_info(args, ident)
    status = cv.read_enum(NodeStatus, args.get("status", "ready"), "status")
    return RegisterNode(info=info, status=status), args


def _build_update_node_status(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident = oa.existing_id(args, "node")
    status = cv.read_enum(NodeStatus, args["status"], "status")
    return UpdateNodeStatus(id=ident, status=status, expected_version=oa.version(args)), args


def _render_node(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    ident = response.id if isinstance(response, Created) else cmd.id
    node = state.get_node(ident)
    if node is None:
        return oa.gone(ident, response)
    return cv.node_doc(node)


def _read_get_node(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    return cv.node_doc(oa.read_object(args, state, "node"))


def _read_list_nodes(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    selector = cv.read_labels_filter(args["labels"]) if "labels" in args else ()
    status = cv.read_enum(NodeStatus, args["status"], "status") if "status" in args else None

    def items_after(after: str | None) -> Iterable[Node]:
        items: Iterable[Node] = state.iter_nodes(after=after)
        if status is not None:
            items = (n for n in items if n.status is status)
        if selector:
            items = (n for n in items if set(selector) <= set(n.info.labels))
        return items

    return oa.page_scan(items_after, lambda n: n.id, args, state, show=cv.node_doc)


def _build_heartbeat(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident = oa.existing_id(args, "node")
    return UpdateNodeStatus(id=ident, status=NodeStatus.READY), args


def _heartbeat_step(
    cmd: Any, state: ClusterStateMachine, node: NodeHandle
) -> tuple[Command | None, dict[str, Any]]:
    """Note the heartbeat in the leader's liveness tracker; a down node is proposed back to
    ready (only if still at the version seen here, so a newer status change wins)."""
    found = state.get_node(cmd.id)
    if found is None:
        raise NotFound(f"node {cmd.id!r} not found")
    node.liveness.heartbeat(cmd.id)
    extra = {"ttl_ms": node.liveness.ttl_ms}
    if found.status is not NodeStatus.DOWN:
        return None, extra
    return attrs.evolve(cmd, expected_version=found.version), extra


def _render_heartbeat(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    node = state.get_node(cmd.id)
    if node is None:
        return oa.gone(cmd.id, response)
    return {"id": node.id, "status": node.status.value, "version": node.version}


# ------------------------------------------------------------------ credits, sessions


def _amount(args: dict[str, Any]) -> int:
    return cv.read_int(args["amount"], "amount", minimum=1)


def _build_mint(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    to_peer = cv.read_id(args["to_peer"], "to_peer")
    amount = _amount(args)
    reason = cv.read_str(args["reason"], "reason")
    problem = text_problem("reason", reason, MAX_REASON_LEN)
    if problem is None and not reason.strip():
        problem = "reason must not be blank: a mint needs a reason"
    if problem:
        raise InvalidArgument(problem, field="reason")
    return MintCredits(to_peer=to_peer, amount=amount, reason=reason), args


def _build_transfer(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    from_peer = cv.read_id(args["from_peer"], "from_peer")
    to_peer = cv.read_id(args["to_peer"], "to_peer")
    amount = _amount(args)
    if from_peer == to_peer:
        raise InvalidArgument("cannot transfer credits to the same peer", field="to_peer")
    return TransferCredits(from_peer=from_peer, to_peer=to_peer, amount=amount), args


def _balance(state: ClusterStateMachine, peer: str) -> dict[str, Any]:
    return {"peer": peer, "balance": state.balance(peer)}


def _render_mint(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    return {**_balance(state, cmd.to_peer), "version": getattr(response, "version", None)}


def _render_transfer(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    return {
        "from": _balance(state, cmd.from_peer),
        "to": _balance(state, cmd.to_peer),
        "amount": cmd.amount,
        "version": getattr(response, "version", None),
    }


def _read_balance(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    return _balance(state, cv.read_str(args["peer"], "peer"))


def _read_balances(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    items = [{"peer": p, "balance": b} for p, b in state.balances().items()]
    page = oa.page(items, lambda i: i["peer"], args, state)
    page["total_supply"] = state.total_supply
    return page


def _build_open_session(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    return OpenSession(), args


def _render_session(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    assert isinstance(response, Created)
    return {"client_id": response.id, "version": response.version}


def _build_close_session(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    client_id = cv.read_str(args["client_id"], "client_id")
    if id_problem("client_id", client_id) is not None:
        raise NotFound(f"session {client_id!r} not found")
    return CloseSession(client_id=client_id), args


def _render_closed(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    return {"client_id": cmd.client_id, "closed": True}


# ------------------------------------------------------------------ the table

F = TypeVar("F", Build, Read)


def _checked(declaration: Declaration, fn: F, write: bool) -> F:
    """``fn`` after checking the arguments against the declaration: every required one is
    there, no other than those declared. ``write``: ``fn`` is a ``Build`` (one argument), else
    a ``Read``."""
    required = tuple(p.name for p in declaration.params if p.required)
    optional = tuple(p.name for p in declaration.params if not p.required)
    allowed = frozenset(required) | frozenset(optional)
    needed = frozenset(required)

    # Arguments that pass (a map, every key allowed, every required one there) in two C
    # passes, with the sets made once here (s18-ingress; ``keys() >= needed``, not ``all``
    # over a ``map``: half the time, s31); any other is ``read_object``'s to refuse, with its
    # error. A build's wrapper takes its one argument as it is (no ``*rest`` tuple).
    def build(args: dict[str, Any]) -> Any:
        if not (type(args) is dict and allowed.issuperset(args) and args.keys() >= needed):
            cv.read_object(args, "", required=required, optional=optional)
        return fn(args)  # type: ignore[call-arg]

    def read(args: dict[str, Any], state: ClusterStateMachine) -> Any:
        if not (type(args) is dict and allowed.issuperset(args) and args.keys() >= needed):
            cv.read_object(args, "", required=required, optional=optional)
        return fn(args, state)  # type: ignore[call-arg]

    return build if write else read  # type: ignore[return-value]


def _write(name: str, build: Build, render: Render, finish: Finish | None = None) -> Handler:
    declaration = OPERATIONS[name]
    assert declaration.is_write, name
    return Handler(
        declaration=declaration,
        build=_checked(declaration, build, True),
        render=render,
        finish=finish,
    )


def _workload_write(name: str, build: Build) -> Handler:
    return attrs.evolve(_write(name, build, _render_workload), workload_answer=True)


def _watcher(name: str) -> Handler:
    declaration = OPERATIONS[name]
    assert not declaration.is_write, name
    return Handler(declaration=declaration, watch=True)


def _reader(name: str, read: Read) -> Handler:
    declaration = OPERATIONS[name]
    assert not declaration.is_write, name
    return Handler(declaration=declaration, read=_checked(declaration, read, False))


HANDLERS: dict[str, Handler] = {
    h.name: h
    for h in (
        _workload_write("workload.create", _build_create_workload),
        _workload_write("workload.update", _build_update_workload),
        _workload_write("workload.scale", _build_scale_workload),
        _write("workload.delete", _build_delete(DeleteWorkload, "workload"), _render_deleted),
        _reader("workload.get", _read_get_workload),
        _reader("workload.list", _read_list_workloads),
        _write("instance.create", _build_create_instance, _render_instance),
        _write("instance.update_status", _build_update_instance_status, _render_instance),
        _write("instance.delete", _build_delete(DeleteInstance, "instance"), _render_deleted),
        _reader("instance.get", _read_get_instance),
        _reader("instance.list", _read_list_instances),
        _write("node.register", _build_register_node, _render_node),
        _write("node.update_status", _build_update_node_status, _render_node),
        _write("node.deregister", _build_delete(DeregisterNode, "node"), _render_deleted),
        _reader("node.get", _read_get_node),
        _reader("node.list", _read_list_nodes),
        attrs.evolve(
            _write("node.heartbeat", _build_heartbeat, _render_heartbeat),
            leader_step=_heartbeat_step,
        ),
        _watcher("events.poll"),
        _reader("reconcile.status", lambda args, state: status_of(state)),
        _write("credits.mint", _build_mint, _render_mint),
        _write("credits.transfer", _build_transfer, _render_transfer),
        _reader("credits.balance", _read_balance),
        _reader("credits.list", _read_balances),
        _write("session.open", _build_open_session, _render_session),
        _write("session.close", _build_close_session, _render_closed),
        _write("token.bootstrap", _build_bootstrap_token, _render_token, _finish_token),
        _write("token.create", _build_create_token, _render_token, _finish_token),
        _reader("token.list", _read_tokens),
        _write("token.revoke", _build_revoke_token, _render_revoked),
    )
}

# Session commands are sent without an idempotency key (the state machine refuses one).
UNKEYED = frozenset(op.name for op in OPERATIONS.values() if op.kind is Kind.SESSION)


def handler(name: str) -> Handler:
    """The server half of operation ``name``; NotFound for an unknown one."""
    found = HANDLERS.get(name)
    if found is None:
        raise NotFound(f"unknown operation {name!r} (known: {', '.join(sorted(HANDLERS))})")
    return found
