"""A websocket server that routes each connection by its request path to a handler.

The raft transport registers ``/raft``; the fast client protocol registers its own path later
on the same listener. Each route handler receives the ``WebSocketRequest`` and owns the
connection from then on: it accepts or rejects it and closes it. Whatever a handler leaves
behind is torn down when it returns; an unknown path is rejected with HTTP 404.

A client that never completes the websocket handshake (a paused process, a port scanner) is
dropped after ``handshake_timeout``; a connection's failure never reaches the other connections
or the listener. At most ``max_connections_per_address`` connections from one remote host are
open at once (every path, from accept to close): one more is closed at once, before TLS or the
websocket handshake, counted in ``rejected`` and logged at WARNING once per host (then at
DEBUG until that host has no connection open any more), so a host that opens connections in
a loop costs the node a bounded number of tasks and sockets.

With ``tls`` every connection is TLS first (``univrs.net.tls``): a fresh context per accept
(so a rotated certificate serves the next connection), the TLS handshake within the same
``handshake_timeout``; a peer whose certificate the cluster CA did not sign, or that sends no
certificate where one is required, is refused there (counted, one WARNING per remote host and
reason) and never reaches a route. The handlers read the verified peer through
``univrs.net.tls.current_peer()``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, wrap_server_stream
from wsproto.utilities import LocalProtocolError

from univrs.net.tls import TlsContexts, set_peer_source

log = logging.getLogger("univrs.net")

RouteHandler = Callable[[WebSocketRequest], Awaitable[None]]

RECEIVE_BUFFER = 64 * 1024
"""Bytes a connection's reader asks the stream for at a time (trio's own default; the
library's is 4 KiB, which cost a scheduling round per 4 KiB of a larger frame: the reader
yields after every read that found data waiting). A frame's size is bounded by
``max_message_size`` all the same."""


def describe_stream(stream: trio.abc.Stream) -> str:
    """``host:port`` of the remote end of a socket stream, or the stream's repr."""
    inner = getattr(stream, "transport_stream", None)  # a TLS stream: its socket's
    sock = getattr(inner if inner is not None else stream, "socket", None)
    if sock is not None:
        try:
            host, port = sock.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            pass
    return type(stream).__name__


@attrs.define(eq=False)
class WebSocketRouter:
    """Accepts websocket connections and dispatches each to the handler for its path."""

    max_message_size: int
    handshake_timeout: float
    message_queue_size: int = 4
    receive_buffer_size: int = RECEIVE_BUFFER
    rejected: int = 0  # connections refused here: unknown path or handshake timeout
    tls: TlsContexts | None = None  # None: plaintext
    tls_refused: int = 0  # connections whose TLS handshake failed (bad or missing certificate)
    # Open connections per remote host (None: no bound); one beyond is closed at once.
    max_connections_per_address: int | None = None
    refused_per_address: int = 0  # connections closed for that bound (also in ``rejected``)
    _routes: dict[str, RouteHandler] = attrs.field(factory=dict, init=False)
    _open: dict[str, int] = attrs.field(factory=dict, init=False)  # remote host -> open
    _warned_busy: set[str] = attrs.field(factory=set, init=False)  # hosts at the bound, logged
    _warned_tls: set[tuple[str, str]] = attrs.field(factory=set, init=False)
    _warned_refusals: set[tuple[str, str]] = attrs.field(factory=set, init=False)

    def add_route(self, path: str, handler: RouteHandler) -> None:
        """Serve connections whose request path is ``path`` (e.g. ``"/raft"``) with ``handler``."""
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/', got {path!r}")
        if path in self._routes:
            raise ValueError(f"route {path!r} is already taken")
        self._routes[path] = handler

    def remove_route(self, path: str) -> None:
        """Stop routing ``path`` (connections already handed over are unaffected)."""
        self._routes.pop(path, None)

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one connection on any byte stream (a TCP socket, or a memory stream in tests)."""
        host = describe_stream(stream).rsplit(":", 1)[0]
        if not self._admit(host):
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_connection(stream)
        finally:
            count = self._open.get(host, 0) - 1
            if count <= 0:
                self._open.pop(host, None)
                self._warned_busy.discard(host)
            else:
                self._open[host] = count

    def _admit(self, host: str) -> bool:
        """Count one more connection from ``host``; False (refuse it) at the bound."""
        count = self._open.get(host, 0)
        limit = self.max_connections_per_address
        if limit is not None and count >= limit:
            self.rejected += 1
            self.refused_per_address += 1
            level = logging.DEBUG if host in self._warned_busy else logging.WARNING
            self._warned_busy.add(host)  # at most one per host with open connections
            log.log(
                level,
                "refusing connection from %s: it has %d open (the bound per address)",
                host,
                count,
            )
            return False
        self._open[host] = count + 1
        return True

    def open_from(self, host: str) -> int:
        """Connections from ``host`` open now."""
        return self._open.get(host, 0)

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        try:
            async with trio.open_nursery() as nursery:  # holds the connection's reader task
                try:
                    await self._dispatch(nursery, stream)
                finally:
                    nursery.cancel_scope.cancel()
        except* (
            ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            LocalProtocolError,  # trio-websocket answering a ping on a closing connection
        ) as group:
            log.debug("connection from %s ended: %r", describe_stream(stream), group.exceptions[0])
        except* OSError as group:
            # The socket failed under us (a peer that reset the connection makes even
            # ``getpeername`` raise ENOTCONN): that ends this connection, never the listener,
            # whose task group would otherwise take the whole node down.
            log.debug("connection from %s failed: %r", describe_stream(stream), group.exceptions[0])
        finally:
            await trio.aclose_forcefully(stream)

    async def _tls_handshake(self, stream: trio.abc.Stream) -> trio.SSLStream[Any] | None:
        """Wrap ``stream`` in TLS and shake hands; None (logged, counted) when that fails."""
        assert self.tls is not None
        remote = describe_stream(stream)
        try:
            ssl_stream = trio.SSLStream(stream, self.tls.server(), server_side=True)
        except Exception as exc:  # the files went missing or bad and nothing was loaded
            log.error("cannot accept TLS connections: %s", exc)
            return None
        reason = None
        with trio.move_on_after(self.handshake_timeout) as timer:
            try:
                await ssl_stream.do_handshake()
            except trio.BrokenResourceError as exc:
                cause = exc.__cause__
                reason = str(getattr(cause, "reason", None) or cause or exc)
        if timer.cancelled_caught:
            reason = f"no TLS handshake within {self.handshake_timeout:g}s"
        if reason is None:
            return ssl_stream
        self.rejected += 1
        self.tls_refused += 1
        host = remote.rsplit(":", 1)[0]
        key = (host, reason)
        level = logging.DEBUG if key in self._warned_tls else logging.WARNING
        if len(self._warned_tls) < 1024:
            self._warned_tls.add(key)
        log.log(level, "refused TLS connection from %s: %s", remote, reason)
        return None

    async def _dispatch(self, nursery: trio.Nursery, stream: trio.abc.Stream) -> None:
        if self.tls is not None:
            secured = await self._tls_handshake(stream)
            if secured is None:
                return
            stream = secured
            set_peer_source(secured.getpeercert)
        request: WebSocketRequest | None = None
        with trio.move_on_after(self.handshake_timeout):
            request = await wrap_server_stream(
                nursery,
                stream,
                message_queue_size=self.message_queue_size,
                max_message_size=self.max_message_size,
                receive_buffer_size=self.receive_buffer_size,
            )
        if request is None:
            self.rejected += 1
            remote = describe_stream(stream)
            log.log(
                self._level(remote, "handshake"),
                "dropped connection from %s: no websocket handshake within %gs",
                remote,
                self.handshake_timeout,
            )
            return
        path = urllib.parse.urlsplit(request.path).path
        handler = self._routes.get(path)
        if handler is None:
            self.rejected += 1
            remote = str(getattr(request.remote, "address", request.remote))
            log.log(
                self._level(remote, "path"),
                "refused connection from %s: unknown path %r",
                request.remote,
                path[:100],
            )
            await request.reject(404, body=b"unknown path")
            return
        await handler(request)

    def _level(self, remote: str, kind: str) -> int:
        """WARNING the first time a remote host gets this kind of refusal, then DEBUG (anyone
        who reaches the port may retry in a loop)."""
        key = (remote.rsplit(":", 1)[0], kind)
        if key in self._warned_refusals:
            return logging.DEBUG
        if len(self._warned_refusals) < 1024:
            self._warned_refusals.add(key)
        return logging.WARNING

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` until cancelled; ``task_status.started`` gets the bound port."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = _bound_port(listeners)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self.handle_connection, listeners)
            task_status.started(bound)


def _bound_port(listeners: list[Any]) -> int:
    return int(listeners[0].socket.getsockname()[1])
