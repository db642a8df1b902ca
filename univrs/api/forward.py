"""How a write travels from a follower to its leader: ``Forwarder``, this node's connections
to the leader's fast-protocol endpoint, and ``request_of``, the operation whose ``build`` gives
a command back (so a ``StateStore`` write is sent as the request the leader would have built).

A forwarded request carries ``hops=1`` (a node never forwards a forwarded request again: it
answers ``not-leader``) and the caller's token and address, never the node's own: the leader
authorizes the caller again, so forwarding cannot raise anyone's rights (docs/security.md).

Per frame, not per request (issue 14): ``call_many`` forwards the writes of one client frame
as one hop: queued on the connection together (one frame to the leader, which runs them as
one frame: one task, one proposal hand-off), waited for by the caller's one task under one
cancel scope per distinct deadline, each answered on its own (its result, or its own error:
the leader's answer, ``Timeout`` at its deadline, ``ConnectionLost`` if the connection broke,
with ``outcome_unknown`` once it was sent) and reported as it comes. ``call`` is the same for
one request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from univrs.api import convert as cv
from univrs.api.auth import ANONYMOUS, Caller
from univrs.client.connection import Connection, answer_of
from univrs.client.protocol import MAX_HOPS, minimal_of
from univrs.errors import ConnectionLost, NotLeader, Timeout, Unavailable, UnivrsError
from univrs.net.tls import TlsContexts
from univrs.runtime.waiter import Waiter
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

__all__ = ["ForwardAnswer", "ForwardCall", "Forwarder", "request_of"]


@attrs.frozen
class ForwardCall:
    """One already-built request of ``Forwarder.call_many``: what ``Forwarder.call`` takes."""

    op: str
    args: dict[str, Any]
    key: tuple[str, int] | None
    deadline: float
    caller: Caller = ANONYMOUS
    minimal: bool = False  # the caller asked for a minimal answer (univrs/client/protocol.py)


# A forwarded request's answer: (result, meta), or the error ``Forwarder.call`` would raise.
ForwardAnswer = tuple[Any, dict[str, Any] | None] | UnivrsError


@attrs.define(eq=False)
class Forwarder:
    """This node's connections to the leader's fast-protocol endpoint (one per address)."""

    nursery: trio.Nursery
    node_id: str
    connect_timeout: float = 2.0
    tls: TlsContexts | None = None  # dial the leader with TLS (a fresh context per dial)
    _conns: dict[str, Connection] = attrs.field(factory=dict)
    _connecting: dict[str, trio.Event] = attrs.field(factory=dict)

    async def connection(self, address: str) -> Connection:
        """The live connection to ``address``, dialing it if needed (one dial at a time)."""
        while True:
            conn = self._conns.get(address)
            if conn is not None and not conn.closed:
                return conn
            pending = self._connecting.get(address)
            if pending is None:
                break
            await pending.wait()
            conn = self._conns.get(address)
            if conn is None or conn.closed:
                raise ConnectionLost(f"cannot connect to the leader at {address}")
        done = self._connecting[address] = trio.Event()
        try:
            conn = await Connection.open(
                self.nursery,
                address,
                timeout=self.connect_timeout,
                ssl_context=self.tls.client() if self.tls is not None else None,
            )
            self._conns[address] = conn
            self._drop_others(address)
            return conn
        finally:
            del self._connecting[address]
            done.set()

    def _drop_others(self, keep: str) -> None:
        """Close idle connections to former leaders."""
        for address, conn in list(self._conns.items()):
            if address != keep and (conn.closed or conn.in_flight == 0):
                conn.close()
                del self._conns[address]

    async def call(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        key: tuple[str, int] | None,
        deadline: float,
        caller: Caller = ANONYMOUS,
        minimal: bool = False,
    ) -> tuple[Any, dict[str, Any] | None]:
        """Send one already-built request to the leader at ``address`` (``hops=1``), with the
        caller's token and address (never this node's: forwarding must not raise rights);
        ``minimal``: asking for a minimal answer (a leader of older code: its full answer
        reduced here, ``Connection.request``)."""
        with trio.move_on_at(deadline) as scope:
            conn = await self.connection(address)
        if scope.cancelled_caught:
            raise Unavailable(f"could not reach the leader at {address} in time")
        timeout_ms = _leader_timeout_ms(deadline - trio.current_time())
        with trio.move_on_at(deadline) as scope:
            return await conn.request(
                op,
                args,
                key=key,
                timeout_ms=timeout_ms,
                hops=MAX_HOPS,
                token=caller.token,
                client=caller.address,
                answer="minimal" if minimal else None,
            )
        raise _too_late(address)

    async def call_many(
        self,
        address: str,
        calls: Sequence[ForwardCall],
        report: Callable[[list[tuple[int, ForwardAnswer]]], None],
    ) -> None:
        """Forward ``calls`` to the leader at ``address`` as one hop (see the module
        docstring): ``report`` gets (position in ``calls``, answer) of each, in groups as they
        come; every call is reported once before this returns (unless cancelled)."""
        latest = max(c.deadline for c in calls)
        try:
            with trio.move_on_at(latest) as scope:
                conn = await self.connection(address)
        except UnivrsError as exc:  # cannot connect (not sent), or refused: as ``call``
            report([(k, exc) for k in range(len(calls))])
            return
        if scope.cancelled_caught:
            report([(k, _unreachable(address)) for k in range(len(calls))])
            return
        now = trio.current_time()
        early: list[tuple[int, ForwardAnswer]] = []
        queued: list[tuple[int, int, Waiter[dict[str, Any]]]] = []
        for k, c in enumerate(calls):
            if now >= c.deadline:
                early.append((k, _unreachable(address)))
                continue
            try:
                rid, waiter = conn.queue(
                    c.op,
                    c.args,
                    key=c.key,
                    timeout_ms=_leader_timeout_ms(c.deadline - now),
                    hops=MAX_HOPS,
                    token=c.caller.token,
                    client=c.caller.address,
                    answer="minimal" if c.minimal else None,
                )
            except ConnectionLost as exc:
                early.append((k, exc))
                continue
            queued.append((k, rid, waiter))
        if early:
            report(early)
        try:
            pending = queued
            while pending:
                earliest = min(calls[k].deadline for k, _, _ in pending)
                # One bare cancel scope per distinct deadline (a frame's requests share one).
                with trio.CancelScope(deadline=earliest):
                    for _, _, waiter in pending:
                        if not waiter.done:
                            await waiter.settled()
                now = trio.current_time()
                settled: list[tuple[int, ForwardAnswer]] = []
                waiting = []
                for item in pending:
                    k, rid, waiter = item
                    if waiter.done:
                        conn.forget(rid)
                        settled.append((k, _answer(waiter, calls[k], conn)))
                    elif now >= calls[k].deadline:
                        conn.forget(rid)
                        settled.append((k, _too_late(address)))
                    else:
                        waiting.append(item)
                report(settled)
                pending = waiting
        finally:
            for _, rid, _ in queued:
                conn.forget(rid)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def _leader_timeout_ms(remaining: float) -> int:
    """The leader gets a slightly shorter deadline, so its answer (even a timeout) arrives
    before ours runs out."""
    return max(1, int(remaining * 1000) - 50)


def _unreachable(address: str) -> Unavailable:
    return Unavailable(f"could not reach the leader at {address} in time")


def _too_late(address: str) -> Timeout:
    return Timeout(
        f"the leader at {address} did not answer in time; the write may or may not have "
        "been applied: retry it with its idempotency key"
    )


def _answer(waiter: Waiter[dict[str, Any]], call: ForwardCall, conn: Connection) -> ForwardAnswer:
    try:
        result, meta = answer_of(waiter.result())
    except UnivrsError as exc:  # the leader's answer, or ConnectionLost
        return exc
    if call.minimal and not conn.hello.minimal:  # a leader of older code: its full answer
        result = minimal_of(call.op, result, meta)
    return result, meta


def _with_version(args: dict[str, Any], expected: int | None) -> dict[str, Any]:
    return args if expected is None else {**args, "expected_version": expected}


def request_of(command: Command) -> tuple[str, dict[str, Any]]:
    """The operation and normalized arguments whose ``build`` gives back ``command``: how a
    ``StateStore`` write on a follower travels to the leader (a test checks the round trip).

    A command fenced by a term (``fence_term``: a leader-only decision, the reconciler's)
    has no operation: it is never forwarded (``NotLeader``); nor is a token command (its
    secret exists only on the node that made it)."""
    match command:
        case CreateWorkload(id=ident, spec=spec):
            return "workload.create", {"id": ident, "spec": cv.spec_doc(spec)}
        case UpdateWorkload(id=ident, spec=spec, expected_version=ev):
            return "workload.update", _with_version({"id": ident, "spec": cv.spec_doc(spec)}, ev)
        case ScaleWorkload(id=ident, replicas=replicas, expected_version=ev):
            return "workload.scale", _with_version({"id": ident, "replicas": replicas}, ev)
        case DeleteWorkload(id=ident, expected_version=ev):
            return "workload.delete", _with_version({"id": ident}, ev)
        case CreateInstance(id=ident, spec=spec, fence_term=None):
            args: dict[str, Any] = {"id": ident, "workload_id": spec.workload_id}
            if spec.node_id is not None:
                args["node_id"] = spec.node_id
            return "instance.create", args
        case UpdateInstanceStatus():
            args = {"id": command.id, "status": command.status.value, "message": command.message}
            if command.node_id is not None:
                args["node_id"] = command.node_id
            return "instance.update_status", _with_version(args, command.expected_version)
        case DeleteInstance(id=ident, expected_version=ev, fence_term=None):
            return "instance.delete", _with_version({"id": ident}, ev)
        case RegisterNode(info=info, status=status):
            return "node.register", {
                "id": info.id,
                "addresses": list(info.addresses),
                "capacity": cv.resources_doc(info.capacity),
                "labels": dict(info.labels),
                "status": status.value,
            }
        case UpdateNodeStatus(id=ident, status=status, expected_version=ev):
            return "node.update_status", _with_version({"id": ident, "status": status.value}, ev)
        case DeregisterNode(id=ident, expected_version=ev):
            return "node.deregister", _with_version({"id": ident}, ev)
        case MintCredits(to_peer=to_peer, amount=amount, reason=reason):
            return "credits.mint", {"to_peer": to_peer, "amount": amount, "reason": reason}
        case TransferCredits(from_peer=from_peer, to_peer=to_peer, amount=amount):
            return "credits.transfer", {
                "from_peer": from_peer,
                "to_peer": to_peer,
                "amount": amount,
            }
        case OpenSession():
            return "session.open", {}
        case CloseSession(client_id=client_id):
            return "session.close", {"client_id": client_id}
    # A leader-only (fenced) command, decided here; or a token command, whose secret the
    # serving node makes and only its hash travels (use the token.* operations): neither is
    # forwarded as a StateStore write.
    raise NotLeader(None)
