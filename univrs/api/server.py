"""The node's client surface: the HTTP API (REST, health, status, metrics, OpenAPI) and the
fast client protocol at ``/client`` on the raft listener, and the MCP endpoint at ``/v1/mcp``
(``univrs.api.mcp``, behind the same authentication; its SDK is imported and its session
manager started at the first request to it, ``LazyMcp``: the import is more than half of a
node's start-up imports, docs/state-at-scale.md s14-page).

The HTTP API is served by hypercorn's trio worker (behind listeners that bound connections per
client address: ``univrs.api.listen``); the app is Starlette. The state endpoints
(``univrs.api.rest``) and the fast protocol (``univrs.api.fast``) both run operations through
one ``ApiService``, the adapter over the node's ``RaftStateStore`` (``node.store``), whose
``Forwarder`` sends writes from a follower to the leader. Every
handler reads the node through its public views; nothing here touches the Raft core directly.

With TLS (the node's ``[tls]``) the API is HTTPS only, with the node certificate; a client
certificate is required or optional as ``tls.client_auth`` says (a presented one must be
signed by the cluster CA). Each handshake picks up the newest certificate files (a rotated
certificate serves the next connection) and records the connection's peer certificate for
the handlers (``univrs.net.tls.current_peer``).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import ssl
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from univrs.api import admin, dashboard, rest, watch
from univrs.api.admin import client_ssl
from univrs.api.auth import Authority
from univrs.api.digest import node_digest
from univrs.api.endpoints import member_endpoints
from univrs.api.fast import serve_client
from univrs.api.health import StorageWatch, liveness, readiness
from univrs.api.limits import ConnectionLimiter
from univrs.api.listen import serve_http
from univrs.api.openapi import openapi_document
from univrs.api.service import ApiService
from univrs.api.store import RaftStateStore
from univrs.client import protocol
from univrs.errors import (
    InternalError,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    UnivrsError,
)
from univrs.net.http import get_json
from univrs.net.tls import TlsContexts, build_server_context, set_peer_source
from univrs.raft.ready import Role

if TYPE_CHECKING:
    from univrs.api.mcp import McpEndpoint
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.api")

PEER_STATUS_TIMEOUT = 1.0


def _node(request: Request) -> NodeHandle:
    node: NodeHandle = request.app.state.node
    return node


async def health(request: Request) -> Response:
    node = _node(request)
    s = node.status()
    serving = s.leader is not None
    body = {
        "status": "serving" if serving else "no-leader",
        "id": s.id,
        "role": s.role.value,
        "leader": s.leader,
        "term": s.term,
    }
    return JSONResponse(body, status_code=200 if serving else 503)


async def livez(request: Request) -> Response:
    """200 while the process serves (etcd's /livez); see univrs/api/health.py."""
    return JSONResponse(liveness(_node(request)))


async def readyz(request: Request) -> Response:
    """200 when this node can serve (leader, caught up, storage writable), else 503 with the
    reason (etcd's /readyz); see univrs/api/health.py."""
    node = _node(request)
    service: ApiService | None = request.app.state.service
    watch: StorageWatch | None = request.app.state.storage_watch
    ready, body = await readiness(
        node,
        None if service is None else service.store.contact.ms_since(),
        0.0 if watch is None else watch.stalled_for(),
    )
    return JSONResponse(body, status_code=200 if ready else 503)


async def node_status(request: Request) -> Response:
    doc = _node(request).describe()
    service: ApiService | None = request.app.state.service
    if service is not None and service.quota is not None:
        doc["alarms"] = service.quota.alarms()  # NOSPACE (limits.quota_backend_bytes)
    return JSONResponse(doc)


async def cluster_status(request: Request) -> Response:
    """Every member's own view, gathered from their APIs, plus the leader's replication view
    (a ``read`` token when auth is on)."""
    try:
        await rest.authority_of(request).authorize_fresh(
            rest.caller_of(request), "read", "cluster status"
        )
    except UnivrsError as exc:
        return rest.error_response(exc)
    return JSONResponse(await gather_cluster_status(_node(request)))


async def gather_cluster_status(node: NodeHandle) -> dict[str, Any]:
    me = node.describe()
    s = node.status()
    membership = s.membership
    views: dict[str, dict[str, Any] | None] = {node.node_id: me}
    errors: dict[str, str] = {}

    async def fetch(member: str, addr: str) -> None:
        try:
            views[member] = await get_json(
                addr, "/v1/node/status", timeout=PEER_STATUS_TIMEOUT, ssl_context=client_ssl(node)
            )
        except (OSError, ValueError, trio.TooSlowError) as exc:
            views[member] = None
            errors[member] = str(exc) or type(exc).__name__

    async with trio.open_nursery() as nursery:
        for member in sorted(membership.members - {node.node_id}):
            addr = membership.api_address_of(member)
            if addr is None:
                views[member] = None
                errors[member] = "API address unknown"
            else:
                nursery.start_soon(fetch, member, addr)

    leader_view = me if s.role is Role.LEADER else None
    if leader_view is None and s.leader is not None:
        leader_view = views.get(s.leader)
    lags = {p["id"]: p for p in (leader_view or {}).get("peers", [])}
    leader_last = (leader_view or {}).get("last_index")
    members = []
    for member in sorted(membership.members):
        view = views.get(member)
        row: dict[str, Any] = {
            "id": member,
            "raft_addr": membership.address_of(member),
            "api_addr": membership.api_address_of(member),
            "voter": member in membership.voters,
            "reachable": view is not None,
            "incarnation": membership.incarnation_of(member),  # the one the config lists
        }
        if view is not None:
            row.update(
                running_incarnation=view.get("incarnation"),  # the member's own data dir's
                role=view["role"],
                term=view["term"],
                leader=view["leader"],
                last_index=view["last_index"],
                commit_index=view["commit_index"],
                applied_index=view["applied_index"],
            )
        else:
            row["error"] = errors.get(member, "unreachable")
        if member in lags:
            row["match_index"] = lags[member]["match_index"]
            row["lag"] = lags[member]["lag"]
        elif leader_view is not None and member == leader_view["id"]:
            row["lag"] = 0
        members.append(row)
    return {
        "node": node.node_id,
        "cluster_id": node.cluster_id,
        "leader": s.leader,
        "term": s.term,
        "leader_last_index": leader_last,
        "members": members,
    }


async def metrics(request: Request) -> Response:
    return PlainTextResponse(
        _node(request).metrics.render(), media_type="text/plain; version=0.0.4"
    )


async def cluster_endpoints(request: Request) -> Response:
    """Every member's fast-protocol and REST addresses, and the leader (clients start here)."""
    node = _node(request)
    return rest.json_response(
        {"node": node.node_id, "leader": node.status().leader, "members": member_endpoints(node)}
    )


_OPENAPI: bytes | None = None


async def openapi(request: Request) -> Response:
    global _OPENAPI
    if _OPENAPI is None:
        _OPENAPI = json.dumps(openapi_document(), separators=(",", ":")).encode()
    return Response(_OPENAPI, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) and escaped bugs as JSON."""
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return rest.error_response(NotFound(f"no such endpoint: {request.url.path}"))
        if exc.status_code == 405:
            error: UnivrsError = MethodNotAllowed(f"{request.method} is not allowed here")
            response = rest.error_response(error)
            response.headers.update(dict(exc.headers or {}))
            return response
        return rest.error_response(MalformedRequest(str(exc.detail)))
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return rest.error_response(InternalError(type(exc).__name__))


MCP_PATH = "/v1/mcp"  # ``univrs.api.mcp.PATH`` (not imported here: see ``LazyMcp``)


class LazyMcp:
    """The ASGI app at ``/v1/mcp`` until the MCP SDK is needed: the first request imports
    ``univrs.api.mcp`` (in a worker thread: the loop goes on serving meanwhile), builds the
    ``McpEndpoint`` and starts its session manager in ``nursery`` (the API's); every request
    then goes to it. Requests that arrive during the first one wait for it.

    Why: importing the SDK (``mcp``, pydantic, its types) was more than half of the CPU a
    node's start spends importing (0.85 s of 1.6 s, s14-page), paid before it serves its
    first read at every restart, for an endpoint most nodes never see a request on."""

    def __init__(self, service: ApiService, nursery: trio.Nursery) -> None:
        self._service, self._nursery = service, nursery
        self._lock = trio.Lock()
        self.endpoint: McpEndpoint | None = None

    async def _started(self) -> McpEndpoint:
        async with self._lock:
            if self.endpoint is None:
                module = await trio.to_thread.run_sync(importlib.import_module, "univrs.api.mcp")
                assert module.PATH == MCP_PATH, module.PATH
                endpoint = module.McpEndpoint(self._service)
                await self._nursery.start(_run_mcp, endpoint)
                self.endpoint = endpoint
            return self.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            endpoint = await self._started()
        await endpoint(scope, receive, send)


def build_app(
    node: NodeHandle,
    service: ApiService | None = None,
    storage_watch: StorageWatch | None = None,
    mcp: LazyMcp | McpEndpoint | None = None,
) -> Starlette:
    """The Starlette app of one node (``service`` serves the state endpoints, ``mcp`` the MCP
    endpoint: univrs/api/mcp.py)."""
    app = Starlette(
        routes=[
            Route("/v1/health", health),
            Route("/livez", livez),
            Route("/readyz", readyz),
            Route("/v1/node/status", node_status),
            Route("/v1/node/digest", node_digest),
            Route("/v1/cluster/status", cluster_status),
            Route("/v1/cluster/endpoints", cluster_endpoints),
            Route("/metrics", metrics),
            Route("/openapi.json", openapi),
            *rest.routes(),
            *watch.routes(),
            *admin.routes(),
            *dashboard.routes(),
            *([] if mcp is None else [Route(MCP_PATH, mcp)]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
        middleware=[Middleware(dashboard.CorsForMembers, node=node)],
    )
    app.state.node = node
    app.state.service = service
    # One Authority per node, so its catch-up bounds hold across endpoints (univrs/api/auth.py).
    app.state.authority = service.store.authority if service is not None else Authority(node)
    app.state.storage_watch = storage_watch
    return app


class _TlsHypercornConfig(HypercornConfig):
    """Hypercorn's configuration with the node's TLS contexts (see the module docstring)."""

    def __init__(self, tls: TlsContexts) -> None:
        super().__init__()
        self._tls = tls
        self.ssl_handshake_timeout = 5.0

    @property
    def ssl_enabled(self) -> bool:
        return True

    def create_ssl_context(self) -> ssl.SSLContext:
        tls = self._tls
        first = build_server_context(tls.files, require_client_cert=tls.require_client_cert)

        def on_client_hello(ssl_obj: Any, _server_name: str | None, _ctx: Any) -> None:
            # Called in the connection's task before the certificate is chosen: serve the
            # newest files, and let the handlers of this connection read its peer.
            ssl_obj.context = tls.server()
            set_peer_source(ssl_obj.getpeercert)

        first.sni_callback = on_client_hello
        return first


async def _run_mcp(mcp: McpEndpoint, *, task_status: trio.TaskStatus[None]) -> None:
    async with mcp.running():
        task_status.started()
        await trio.sleep_forever()


async def serve_api(
    node: NodeHandle, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the API on the node's api address; ``task_status.started`` gets the bound port."""
    tls = node.transport.tls
    config = _TlsHypercornConfig(tls) if tls is not None else HypercornConfig()
    config.bind = [node.config.api_addr]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0

    async with trio.open_nursery() as nursery:
        store = node.store
        assert isinstance(store, RaftStateStore), store
        service = ApiService(store)
        mcp = LazyMcp(service, nursery)  # the SDK at the first request to it
        watch = StorageWatch(node)
        nursery.start_soon(watch.run)
        node.transport.add_route(protocol.PATH, functools.partial(serve_client, service))
        try:
            limiter = ConnectionLimiter(node.config.max_connections_per_address, "REST")
            binds: list[str] = await nursery.start(
                serve_http, build_app(node, service, watch, mcp), config, limiter
            )
            port = int(binds[0].rsplit(":", 1)[1])
            task_status.started(port)
            await trio.sleep_forever()
        finally:
            node.transport.router.remove_route(protocol.PATH)
