"""hypercorn's trio worker on listeners that bound the connections per client address.

hypercorn (0.18) has no per-address connection limit and builds its listeners itself, so
``serve_http`` is its ``worker_serve`` (lifespan, sockets from the config, TLS when the config
has a certificate, graceful shutdown) with each socket listener wrapped in a
``LimitedListener``: a connection from an address that already holds
``limits.max_connections_per_address`` open ones is closed at once (before TLS or HTTP),
logged once per address (``univrs.api.limits.ConnectionLimiter``).
"""

from __future__ import annotations

import functools
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import repr_socket_addr, wrap_app

from univrs.api.limits import ConnectionLimiter


class _CountedStream(trio.abc.HalfCloseableStream):
    """A socket stream that gives its slot back to the limiter when closed (hypercorn reads
    ``.socket`` and the rest through attribute access)."""

    def __init__(self, inner: trio.SocketStream, release: Any) -> None:
        self._inner = inner
        self._release = release

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
        await self._inner.aclose()


class LimitedListener(trio.abc.Listener[trio.abc.HalfCloseableStream]):
    """A socket listener that admits at most the limiter's connections per client address."""

    def __init__(self, inner: trio.SocketListener, limiter: ConnectionLimiter) -> None:
        self._inner = inner
        self._limiter = limiter

    async def accept(self) -> trio.abc.HalfCloseableStream:
        while True:
            stream = await self._inner.accept()
            try:
                host = str(stream.socket.getpeername()[0])
            except OSError:
                await stream.aclose()
                continue
            if self._limiter.acquire(host):
                return _CountedStream(stream, functools.partial(self._limiter.release, host))
            await stream.aclose()  # refused: one beyond the bound

    async def aclose(self) -> None:
        await self._inner.aclose()


async def serve_http(
    app: Any,
    config: Config,
    limiter: ConnectionLimiter,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` as hypercorn's trio worker does, behind ``LimitedListener``s;
    ``task_status.started`` gets the bound addresses (``http://host:port``)."""
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, mode=None)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            ssl_context = config.create_ssl_context()
            listeners: list[trio.abc.Listener[Any]] = []
            binds = []
            for sock in sockets.secure_sockets:
                assert ssl_context is not None  # the config has a certificate
                sock.listen(config.backlog)
                plain = LimitedListener(
                    trio.SocketListener(trio.socket.from_stdlib_socket(sock)), limiter
                )
                listeners.append(trio.SSLListener(plain, ssl_context, https_compatible=True))
                binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(
                    LimitedListener(
                        trio.SocketListener(trio.socket.from_stdlib_socket(sock)), limiter
                    )
                )
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            task_status.started(binds)
            try:
                await trio.serve_listeners(
                    functools.partial(TCPServer, wrapped, config, context, dict(lifespan_state)),
                    listeners,
                    handler_nursery=server_nursery,
                )
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
