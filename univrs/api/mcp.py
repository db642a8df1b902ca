"""The node's MCP endpoint: ``/v1/mcp`` on the API listener (streamable HTTP, the official SDK).

Theory of operation. The tools are those of ``univrs.mcp.server`` (the same as ``univrs mcp``
on stdio), over a ``NodeCluster``: each tool runs its operation in this node's ``ApiService``
(``execute(op, args, caller=...)``), exactly as a REST request for that operation would, with
the caller of the HTTP request that carries the tool call. So the rules are the REST API's:

* **Who may use it.** Whoever may use the REST API: the listener is the API's (HTTPS with the
  node certificate under ``[tls]``, a client certificate when ``tls.client_auth`` requires one,
  the same per-address connection bound). With ``[auth] enabled`` every request needs a valid
  bearer token (``Authorization: Bearer <secret>``; else 401 before the SDK sees the body), and
  each tool needs the role of its operation: the read tools ``read``, the write tools
  ``write`` (else the tool call is a ``permission-denied`` tool error and nothing is written).
  A follower forwards a write with the caller's token, and the leader checks it again.
* **What a hostile sender gets.** A body over ``limits.max_body_bytes`` is refused with 413
  before it is parsed; garbage (not JSON, not JSON-RPC, a wrong ``Accept``/``Content-Type``) is
  a 4xx answer of the SDK; neither reaches the state. Refusals at the door are counted in
  ``univrs_api_requests_total{op="mcp"}``; nothing is logged per request (a flood must not
  fill the log): an exception an SDK handler raises for a request (``prompts/get`` of an
  unknown prompt), which the SDK logs at ERROR each time, is logged once per kind at WARNING,
  then at DEBUG (``quiet_sdk_handler_errors``).
* **Stateless.** Each HTTP request is its own MCP exchange (the SDK's stateless mode, JSON
  answers): the server keeps no MCP session between requests, so nothing an agent leaves open
  holds memory, and every request is authenticated anew.

Writes. Exactly once, as with ``univrs mcp`` (stdio), and by the same code: ``CallerSessions``
keeps one ``SessionPool`` (univrs/client/sessions.py, the client's) per caller identity
(``token:<id>`` with auth on, else ``addr:<host>``); each write tool call gets the next
sequence number of one of the caller's sessions as its key (``client_id``, ``seq``). The
sessions are opened by ``session.open`` executed for the caller: through the log, owned by the
caller's identity and under the per-caller open rate limit, like those a REST or fast-protocol
client opens. ``ApiService.execute`` with a key retries the SAME numbered request after an
unknown outcome (a snapshot covered the entry, the connection to the leader broke after
sending, a leader change) until the call's deadline, and the state machine answers a repeat
with the first response (univrs/api/store.py): a write applies at most once, and
``outcome-unknown`` reaches the agent only when no attempt was confirmed before the deadline.
Bounded: at most ``SESSIONS_PER_CALLER`` sessions per caller (more concurrent writes wait for
a free number) and at most ``MAX_CALLERS`` callers, the least recently used dropped first (its
sessions idle until they expire, within the table's per-owner bound); a caller refused the
operation's role is refused before a session is opened for it. There is no caller-supplied
idempotency-key argument: a key is a sequence number the node assigns in a session; a
free-form key would need a second, replicated table (a repeated tool call is a new write; a
create with ``id`` answers ``already-exists``, scale and delete take ``expected_version``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import attrs
import trio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from univrs.api import rest
from univrs.api.auth import ANONYMOUS, Caller
from univrs.api.ops import handler
from univrs.client.sessions import SessionPool
from univrs.errors import NotFound, UnivrsError
from univrs.mcp.server import build_server
from univrs.service.declare import ANY_TOKEN

if TYPE_CHECKING:
    from univrs.api.service import ApiService

PATH = "/v1/mcp"
MAX_CALLERS = 1024  # callers whose sessions the node keeps (least recently used dropped first)
SESSIONS_PER_CALLER = 4  # each lets 32 writes be in flight; more wait for a free number

# The SDK's JSON-RPC dispatcher logs every exception a request handler raises at ERROR, with
# a traceback, once per request (``prompts/get`` of an unknown prompt raises one): anyone who
# reaches the API could fill the log. ``_OncePerKind`` keeps the first of each kind (at
# WARNING) and turns the rest into DEBUG, as the node's own refusals are logged.
SDK_DISPATCH_LOGGER = "mcp.shared.jsonrpc_dispatcher"
_MAX_KINDS = 256


class _OncePerKind(logging.Filter):
    """Lets the first ERROR record of each kind (message and method) through as a WARNING;
    later ones pass only when the logger is enabled for DEBUG, then as DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        kind = (str(record.msg), str(args[0]) if args else "")
        if kind not in self.seen and len(self.seen) < _MAX_KINDS:
            self.seen.add(kind)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{record.msg} (further ones at DEBUG)"
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_sdk_handler_errors() -> None:
    """Install ``_OncePerKind`` on the SDK's dispatcher logger (once per process)."""
    sdk = logging.getLogger(SDK_DISPATCH_LOGGER)
    if not any(isinstance(f, _OncePerKind) for f in sdk.filters):
        sdk.addFilter(_OncePerKind())


# The caller of the HTTP request a tool call arrived in: set by ``McpEndpoint`` around the
# SDK's handling of the request (its server task is spawned from the request's task, so it
# inherits the value).
CALLER: ContextVar[Caller] = ContextVar("univrs_mcp_caller", default=ANONYMOUS)


@attrs.define(eq=False)
class CallerSessions:
    """The idempotency sessions this node holds for its MCP callers: one ``SessionPool``
    (univrs/client/sessions.py, the client's own) per caller identity, at most ``max_callers``
    of them, the least recently used dropped first (see the module docstring)."""

    service: ApiService
    max_callers: int = attrs.field(factory=lambda: MAX_CALLERS)
    _pools: OrderedDict[str, SessionPool] = attrs.field(factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._pools)

    def pool_for(self, owner: str, caller: Caller) -> SessionPool:
        """The sessions of ``owner`` (the caller's identity key), opened for ``caller``."""
        pool = self._pools.get(owner)
        if pool is not None:
            self._pools.move_to_end(owner)
            return pool
        while len(self._pools) >= self.max_callers:
            # Its writes in flight finish with it; its sessions idle until they expire.
            self._pools.popitem(last=False)

        async def open_session(deadline: float) -> str:
            # Through the log, stamped with the caller's identity as owner (and rate-limited
            # per caller), like a session.open the caller sent itself.
            opened, _ = await self.service.execute(
                "session.open",
                {},
                timeout=max(0.001, deadline - trio.current_time()),
                caller=caller,
            )
            return str(opened["client_id"])

        pool = self._pools[owner] = SessionPool(open_session, max_sessions=SESSIONS_PER_CALLER)
        return pool

    async def write(self, op: str, args: dict[str, Any], caller: Caller) -> Any:
        """Run write ``op`` for ``caller`` exactly once: with the next key of the caller's
        session, retried (the same key) until the deadline when its outcome is unknown."""
        service = self.service
        declared = handler(op).declaration
        try:  # refused before a session is opened for the caller (a read token holds none)
            identity = await service.store.authority.authorize_fresh(
                caller, declared.required_role, op
            )
        except UnivrsError as exc:
            if service.metrics is not None:
                service.metrics.requests.inc(1, op, exc.code)
            raise
        deadline = trio.current_time() + service.store.timeout

        async def keyed(key: tuple[str, int]) -> Any:
            remaining = max(0.001, deadline - trio.current_time())
            result, _ = await service.execute(op, args, key=key, timeout=remaining, caller=caller)
            return result

        return await self.pool_for(identity.key, caller).write(keyed, deadline)


@attrs.define(eq=False)
class NodeCluster:
    """The ``univrs.mcp.server.Cluster`` of a node: operations run in its ``ApiService`` for
    the current HTTP request's caller; writes with a key of the caller's session."""

    service: ApiService
    sessions: CallerSessions = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.sessions = CallerSessions(self.service)

    @property
    def leader(self) -> str | None:
        return self.service.node.status().leader

    @property
    def node_id(self) -> str | None:
        return self.service.node.node_id

    async def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Run operation ``op`` (a read) for the current caller."""
        result, _ = await self.service.execute(op, dict(args or {}), caller=CALLER.get())
        return result

    async def write(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Run operation ``op`` (a write) for the current caller, exactly once (module
        docstring)."""
        return await self.sessions.write(op, dict(args or {}), CALLER.get())


@attrs.define(eq=False)
class McpEndpoint:
    """The ASGI app at ``/v1/mcp``: authenticate, then hand the request to the SDK."""

    service: ApiService
    manager: StreamableHTTPSessionManager = attrs.field(init=False)
    cluster: NodeCluster = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        quiet_sdk_handler_errors()
        self.cluster = NodeCluster(self.service)
        server = build_server(self.cluster)
        max_body = int(getattr(self.service.node.config, "max_body_bytes", rest.MAX_BODY))
        server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            max_request_body_size=max_body,
            # Any Host may name a node; authentication is the API's (module docstring).
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.manager = server.session_manager

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve while inside (the SDK's task group for the requests' server tasks)."""
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await rest.error_response(NotFound("no such endpoint"))(scope, receive, send)
            return
        try:
            caller = rest.caller_of(Request(scope))
            # A valid token of any role opens the door; each tool's operation needs its role.
            await self.service.store.authority.authorize_fresh(
                caller, ANY_TOKEN, "the MCP endpoint"
            )
        except UnivrsError as exc:
            metrics = self.service.metrics
            if metrics is not None:
                metrics.requests.inc(1, "mcp", exc.code)
            await rest.error_response(exc)(scope, receive, send)
            return
        token = CALLER.set(caller)
        try:
            await self.manager.handle_request(scope, receive, _closing_after_413(send))
        finally:
            CALLER.reset(token)


def _closing_after_413(send: Send) -> Send:
    """``send`` that adds ``Connection: close`` to a 413 answer (the SDK's, for a body over
    the limit): the rest of that body is never read, so the connection cannot carry another
    request, and a client that reused it raced the server's close ("server disconnected
    without sending a response", found by CI)."""

    async def sending(message: Any) -> None:
        if message.get("type") == "http.response.start" and message.get("status") == 413:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return sending
