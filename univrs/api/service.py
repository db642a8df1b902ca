"""``ApiService``: the operations of the REST API and the fast client protocol, by name, over
the node's ``RaftStateStore`` (univrs/api/store.py).

Theory of operation. ``execute(name, args, ...)`` is the one entry point of both the REST API
and the fast protocol (and of the node's MCP endpoint, univrs/api/mcp.py): it checks the
operation's arguments and builds its command (``univrs.api.ops``), then has the store run the
write (``RaftStateStore.submit``, through the leader) or reads the state at the requested
consistency (``read_at``), and renders the result document. The write and read rules, retries
and deadlines are the store's (univrs/api/store.py).

Callers. ``execute`` first authorizes the caller for the operation's role
(``univrs.api.auth``: 401/403 when auth is on), rate-limits ``session.open`` per caller and
stamps the session with the caller's identity as its owner (``univrs.api.limits``,
``univrs.sm.sessions``). A forwarded request carries the caller's token and address, and the
leader checks them again. On the leader, a write that would not free space is refused with
``no-space`` while the storage quota's NOSPACE alarm is raised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs.api.auth import ANONYMOUS, Caller
from univrs.api.limits import ConnectionLimiter, Quota
from univrs.api.metrics import ApiMetrics
from univrs.api.opargs import check_key
from univrs.api.ops import MAX_LIMIT, UNKEYED, Handler, handler
from univrs.api.store import MAX_TIMEOUT, RaftStateStore, Write
from univrs.api.watch import poll_events
from univrs.errors import InvalidArgument, UnivrsError
from univrs.sm.commands import CloseSession, Envelope, OpenSession
from univrs.sm.responses import Response
from univrs.sm.state import ClusterStateMachine

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

__all__ = ["MAX_LIMIT", "ApiService"]


@attrs.define(eq=False)
class ApiService:
    """Runs the operations of the REST API and the fast protocol, by name, over a
    ``RaftStateStore``: it checks the arguments, builds the command, renders the result and
    counts; the store executes (see the module docstring)."""

    store: RaftStateStore

    @property
    def node(self) -> NodeHandle:
        return self.store.node

    @property
    def metrics(self) -> ApiMetrics | None:
        return self.store.metrics

    @property
    def quota(self) -> Quota | None:
        return self.store.quota

    @property
    def fast_connections(self) -> ConnectionLimiter:
        return self.store.fast_connections

    async def execute(
        self,
        name: str,
        args: dict[str, Any],
        *,
        key: tuple[str, int] | None = None,
        consistency: str | None = None,
        timeout: float | None = None,
        hops: int = 0,
        caller: Caller = ANONYMOUS,
    ) -> tuple[Any, dict[str, Any] | None]:
        """Run operation ``name`` for ``caller``: (result document, read meta or None).
        Raises UnivrsError (``unauthenticated`` and ``permission-denied`` first)."""
        op = handler(name)
        start = trio.current_time()
        limit = self.store.timeout if timeout is None else min(timeout, MAX_TIMEOUT)
        deadline = start + max(limit, 0.001)
        outcome = "ok"
        metrics = self.store.metrics
        try:
            store = self.store
            identity = await store.authority.authorize_fresh(
                caller, op.declaration.required_role, op.name
            )
            if op.watch:  # served from this node's event history, at any consistency
                return await poll_events(self.node, args, deadline), None
            if op.is_write:
                if op.name == "session.open":
                    store.session_opens.take(identity.key, "session opens")
                return await self._write(op, args, key, deadline, hops, caller, identity.key)
            assert op.read is not None
            how = consistency or "linearizable"
            state = await self.store.read_at(how, deadline)
            return op.read(args, state), self.store.meta(how)
        except UnivrsError as exc:
            outcome = exc.code
            raise
        finally:
            if metrics is not None:
                metrics.requests.inc(1, op.name, outcome)
            if metrics is not None and not op.watch:  # a long poll is not a read's latency
                histogram = metrics.write_seconds if op.is_write else metrics.read_seconds
                histogram.observe(trio.current_time() - start)

    async def _write(
        self,
        op: Handler,
        args: dict[str, Any],
        key: tuple[str, int] | None,
        deadline: float,
        hops: int,
        caller: Caller = ANONYMOUS,
        owner: str = "",
    ) -> tuple[Any, dict[str, Any]]:
        """(result, {"index": the log index the write was applied at})."""
        assert op.build is not None and op.render is not None
        if key is not None and op.name in UNKEYED:
            raise InvalidArgument(f"{op.name} takes no idempotency key", field="key")
        check_key(key)
        command, built = op.build(args)
        if isinstance(command, OpenSession):
            command = OpenSession(owner=owner)  # bounds the sessions one caller holds
        elif isinstance(command, CloseSession):
            command = CloseSession(client_id=command.client_id, owner=owner)  # its own only
        envelope = Envelope(
            command=command,
            client_id=None if key is None else key[0],
            seq=None if key is None else key[1],
        )
        render, finish, step, node = op.render, op.finish, op.leader_step, self.node

        def rendered(response: Response, state: ClusterStateMachine) -> Any:
            result = render(command, response, state)
            return result if finish is None else finish(built, result, state)

        write = Write(
            envelope=envelope,
            op=op.name,
            args=built,
            caller=caller,
            allowed_when_full=op.declaration.allowed_when_full,
            render=rendered,
            leader_step=None if step is None else (lambda state: step(command, state, node)),
        )
        return await self.store.submit(write, key, deadline, hops)
