"""One websocket connection to one node's ``/client`` endpoint, with many requests in flight.

Theory of operation. ``Connection.open(nursery, address)`` dials, exchanges hellos and starts
the connection's task in ``nursery``. ``request`` queues a request and waits for the response
with the same id. A writer task sends everything queued since its last send as *one* frame, so
concurrent callers share websocket messages (and the server gets them together, which lets the
leader put them in one log append). Response frames are matched to waiting callers as they
complete, on trio-websocket's reader task (``_take``; a reader task of ours gets what that path
declines, in order).

A keepalive pings the node when requests wait and nothing was heard for ``KEEPALIVE`` seconds,
and drops the connection if no pong comes (a paused process keeps its TCP connections open
but answers nothing). When the connection breaks (or ``close`` is called), every waiting
caller gets ``ConnectionLost``: with ``outcome_unknown`` False when its request had not been
handed to the socket yet, True when it had (the node may have applied it). The connection
never retries: that is the business of its user (the client, or a node forwarding to the
leader), which knows whether a retry is safe.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import ssl
from typing import Any

import attrs
import cbor2
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket,
)
from wsproto.utilities import LocalProtocolError

from univrs.client import outbox, protocol
from univrs.client.protocol import ServerHello
from univrs.client.wire import Wire
from univrs.errors import (
    ConnectionLost,
    InvalidArgument,
    ProtocolError,
    Timeout,
    UnivrsError,
    error_from_plain,
)
from univrs.net import wsdirect
from univrs.net.address import split_host_port
from univrs.runtime.waiter import Waiter

log = logging.getLogger("univrs.client")

MAX_PER_FRAME = 512  # requests per websocket message
KEEPALIVE = 1.0  # with requests waiting and nothing heard for this long, ping the node
PONG_TIMEOUT = 2.0  # no pong within this: the node is gone or paused; drop the connection
_BROKEN = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)
RECEIVE_BUFFER = 256 * 1024
CLOSE_TIMEOUT = 0.5


def answer_of(resp: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """(result, meta) of a raw response; raises the UnivrsError the node answered with."""
    if "error" in resp:
        raise error_from_plain(resp["error"])
    meta = resp.get("meta")
    return resp.get("ok"), meta if isinstance(meta, dict) else None


def _reduced(op: str, resp: dict[str, Any], meta: Any) -> tuple[Any, dict[str, Any] | None]:
    """(result, meta) of a full answer from a node of older code, to a request that asked
    for a minimal one (``protocol.minimal_of``)."""
    meta = meta if isinstance(meta, dict) else None
    return protocol.minimal_of(op, resp.get("ok"), meta), meta


def _lost(address: str, why: str, *, sent: bool) -> ConnectionLost:
    exc = ConnectionLost(f"connection to {address} lost: {why}")
    exc.outcome_unknown = sent
    return exc


@attrs.frozen(kw_only=True)
class ConnectionStatistics:
    """Counters of one connection: requests handed to the socket, in how many frames."""

    requests_sent: int
    frames_sent: int
    in_flight: int


@attrs.define(eq=False)
class Connection:
    """A live connection (see the module docstring). Create it with ``Connection.open``."""

    address: str
    hello: ServerHello
    max_frame: int = protocol.MAX_FRAME
    leader: str | None = None  # the newest leader hint the server sent
    _ws: WebSocketConnection | None = None
    _pending: dict[int, Waiter[dict[str, Any]]] = attrs.field(factory=dict)
    # The requests queued for the writer, as they go on the wire (``protocol.plain_request``:
    # checked plain data, encoded by the writer without another walk over them).
    _outbox: list[dict[str, Any]] = attrs.field(factory=list)
    _wakeup: trio.Event = attrs.field(factory=trio.Event)
    _next_id: int = 1
    _handed: set[int] = attrs.field(factory=set)  # ids of pending requests given to the socket
    _closed: str | None = None  # why, once closed
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _sent: int = 0  # statistics
    _frames: int = 0
    _heard_at: float = 0.0  # when the node last sent us anything
    _closing: str | None = None  # why the connection closed itself
    # The deadlines of ``request`` calls given one: (deadline, id, op), a heap, entries of
    # requests answered meanwhile left in it (pruned when it grows); ``_expire`` sleeps under
    # ``_timer`` until the earliest.
    _deadlines: list[tuple[float, int, str]] = attrs.field(factory=list)
    _timer: trio.CancelScope | None = None
    _reading: bool = True  # False once ``_reader`` stopped: the direct path takes nothing more

    @property
    def node_id(self) -> str:
        """The id of the node at the other end."""
        return self.hello.node

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            requests_sent=self._sent, frames_sent=self._frames, in_flight=len(self._pending)
        )

    @classmethod
    async def open(
        cls,
        nursery: trio.Nursery,
        address: str,
        *,
        timeout: float = 5.0,
        max_frame: int = protocol.MAX_FRAME,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> Connection:
        """Connect to ``address`` (``host:port`` of a node's raft listener); the connection's
        task runs in ``nursery`` until it breaks or ``close`` is called. Raises ConnectionLost
        (``outcome_unknown`` False) if the node cannot be reached within ``timeout`` (or
        refuses the TLS handshake: ``ssl_context`` dials with TLS), or the error the node
        refused the connection with. ``token``: the API token secret sent in the hello, for
        every request of the connection."""
        conn: Connection = await nursery.start(
            _run_connection, address, timeout, max_frame, ssl_context, token
        )
        return conn

    async def request(
        self,
        op: str,
        args: dict[str, Any],
        *,
        key: tuple[str, int] | None = None,
        consistency: str | None = None,
        timeout_ms: int | None = None,
        hops: int = 0,
        token: str | None = None,
        client: str | None = None,
        deadline: float | None = None,
        answer: str | None = None,
    ) -> tuple[Any, dict[str, Any] | None]:
        """Send one request and wait for its answer: (result, meta). Raises the UnivrsError the
        node answered with, or ConnectionLost. Cancelling abandons the answer, not the
        request (the node may still apply it). ``token`` overrides the connection's;
        ``client`` (forwarding nodes only) is the caller's address. ``deadline`` (trio time):
        the answer is abandoned then, with ``Timeout`` (the outcome is unknown), as a cancel
        scope around the call would, without one per call: the connection's one timer task
        (``_expire``) keeps every waiting request's deadline (a cancel scope cost the client
        about 5 µs per call, docs/performance.md "Round 15"). ``answer``: "minimal" asks a
        write for ``{"id", "version"}`` (univrs/client/protocol.py): sent to a node whose hello
        takes it, else the node's full answer is reduced here (``protocol.minimal_of``)."""
        if self._closed is not None:
            raise _lost(self.address, self._closed, sent=False)
        rid = self._next_id
        self._next_id = rid + 1
        reduce = answer == "minimal" and not self.hello.minimal
        try:
            req = outbox.plain_request(
                rid,
                op,
                args,
                key,
                consistency,
                timeout_ms,
                hops,
                token,
                client,
                None if reduce else answer,
            )
        except TypeError as exc:  # a caller passed something that is not plain data
            raise InvalidArgument(f"request cannot be encoded: {exc}") from None
        waiter: Waiter[dict[str, Any]] = Waiter()
        pending = self._pending
        pending[rid] = waiter
        self._outbox.append(req)
        self._wakeup.set()
        if deadline is not None:
            self._expire_at(deadline, rid, op)
        try:
            resp = await waiter.wait()
        finally:
            pending.pop(rid, None)
            self._handed.discard(rid)
        if "error" in resp:
            raise error_from_plain(resp["error"])
        meta = resp.get("meta")
        if reduce:
            return _reduced(op, resp, meta)
        return resp.get("ok"), meta if isinstance(meta, dict) else None

    def queue(
        self,
        op: str,
        args: dict[str, Any],
        *,
        key: tuple[str, int] | None = None,
        timeout_ms: int | None = None,
        hops: int = 0,
        token: str | None = None,
        client: str | None = None,
        answer: str | None = None,
    ) -> tuple[int, Waiter[dict[str, Any]]]:
        """Queue one request without waiting: its id and the waiter of its raw response
        (``answer_of`` reads it). Requests queued in one go leave in one frame (if it fits).
        The caller must ``forget`` the id once it stops waiting, answered or not (a node
        forwarding a client frame's writes queues them together: univrs/api/forward.py).
        Raises ConnectionLost (not sent) on a closed connection. ``answer``: as ``request``'s,
        sent only to a node whose hello takes it (else ``minimal_of`` the raw answer)."""
        if self._closed is not None:
            raise _lost(self.address, self._closed, sent=False)
        rid = self._next_id
        self._next_id = rid + 1
        waiter: Waiter[dict[str, Any]] = Waiter()
        try:
            req = outbox.plain_request(
                rid,
                op,
                args,
                key,
                None,
                timeout_ms,
                hops,
                token,
                client,
                answer if self.hello.minimal else None,
            )
        except TypeError as exc:  # not plain data: its waiter fails, as if answered so
            waiter.fail(InvalidArgument(f"request cannot be encoded: {exc}"))
            return rid, waiter
        self._pending[rid] = waiter
        self._outbox.append(req)
        self._wakeup.set()
        return rid, waiter

    def _expire_at(self, deadline: float, rid: int, op: str) -> None:
        """Fail request ``rid``'s waiter with ``Timeout`` at ``deadline`` (``_expire``)."""
        heap = self._deadlines
        if len(heap) > 4 * len(self._pending) + 256:  # mostly answered requests: drop them
            pending = self._pending
            heap[:] = [entry for entry in heap if entry[1] in pending]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, rid, op))
        timer = self._timer
        if timer is not None and deadline < timer.deadline:
            timer.deadline = deadline  # an earlier one than the timer sleeps until

    def forget(self, rid: int) -> None:
        """Stop waiting for request ``rid`` (``queue``): an unsent request is not sent."""
        self._pending.pop(rid, None)
        self._handed.discard(rid)

    def close(self) -> None:
        """Close the connection; waiting callers get ConnectionLost."""
        self._scope.cancel()

    # ---------------------------------------------------------------- tasks

    async def _writer(self, ws: WebSocketConnection) -> None:
        wire = Wire(ws)  # a frame written at once when the socket takes it (wire.py)
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                while self._outbox:
                    batch = self._outbox[:MAX_PER_FRAME]
                    del self._outbox[:MAX_PER_FRAME]
                    await self._send_batch(wire, batch)
        except _BROKEN:
            self._scope.cancel()  # the reader sees the close too; end the connection

    async def _send_batch(self, wire: Wire, batch: list[dict[str, Any]]) -> None:
        pending = self._pending
        live = [r for r in batch if r["id"] in pending]  # skip abandoned requests
        if not live:
            return
        try:
            frame = outbox.encode_plain_requests(live)  # checked by ``plain_request``
        except (TypeError, ValueError, cbor2.CBOREncodeError) as exc:
            # A caller changed its ``args`` after queueing them (checked then): those
            # requests fail, the connection and the other callers carry on (each request
            # encoded alone: another caller's good one in this batch still goes).
            good = []
            for r in live:
                try:
                    outbox.encode_plain_requests([r])
                except (TypeError, ValueError, cbor2.CBOREncodeError) as alone:
                    self._fail(r["id"], InvalidArgument(f"request cannot be encoded: {alone}"))
                else:
                    good.append(r)
            if len(good) == len(live):  # (none fails alone: never expected) all fail
                for r in live:
                    self._fail(r["id"], InvalidArgument(f"request cannot be encoded: {exc}"))
            elif good:
                await self._send_batch(wire, good)
            return
        if len(frame) > self.max_frame:
            if len(live) == 1:
                self._fail(
                    live[0]["id"],
                    InvalidArgument(f"request is larger than the frame limit {self.max_frame}"),
                )
                return
            half = len(live) // 2
            await self._send_batch(wire, live[:half])
            await self._send_batch(wire, live[half:])
            return
        # From here on the node may see them: their outcome is unknown if we break.
        self._handed.update([r["id"] for r in live])
        rest = wire.write_now(frame)
        if rest is not None:
            await wire.finish(rest)
        self._sent += len(live)
        self._frames += 1

    async def _expire(self) -> None:
        """Fail each request given a deadline that is still waiting at it (``request``)."""
        heap = self._deadlines
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as timer:
                self._timer = timer
                await trio.sleep_forever()
            self._timer = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, rid, op = heapq.heappop(heap)
                waiter = self._pending.get(rid)
                if waiter is not None:
                    waiter.fail(
                        Timeout(f"{op}: no answer within the deadline; the outcome is unknown")
                    )

    async def _keepalive(self, ws: WebSocketConnection) -> None:
        """Drop the connection when the node stops answering (a paused process accepts TCP
        but never replies): callers then get ConnectionLost instead of waiting out their
        deadlines on a dead link."""
        self._heard_at = trio.current_time()
        try:
            while True:
                await trio.sleep(KEEPALIVE)
                if not self._pending or trio.current_time() - self._heard_at < KEEPALIVE:
                    continue
                with trio.move_on_after(PONG_TIMEOUT) as waiting:
                    await ws.ping()
                if waiting.cancelled_caught:
                    self._closing = f"no answer to a ping within {PONG_TIMEOUT:g}s"
                    log.warning("dropping connection to %s: %s", self.address, self._closing)
                    self._scope.cancel()
                    return
                self._heard_at = trio.current_time()
        except _BROKEN:
            return

    async def _reader(self, ws: WebSocketConnection) -> str:
        """Dispatch responses until the connection ends; returns why it ended.

        A frame that decodes is dispatched on trio-websocket's own reader task, synchronously,
        as it completes (``_take`` through a ``wsdirect.FrameTap``, s16-ctap): the answers'
        callers are woken in that one step, and this task does not run for it. This task gets
        what ``_take`` declines (a frame that does not decode, a text frame: it closes the
        connection) and, while it holds one, every later frame, so frames are dispatched in
        the order they came; and it sees the close."""
        tap: wsdirect.FrameTap | None = None
        if wsdirect.usable(ws) and not wsdirect.tapped(ws):
            tap = wsdirect.FrameTap.install(ws, self._take)
        try:
            while True:
                try:
                    data = await ws.get_message()
                    self._heard_at = trio.current_time()
                    leader, responses = protocol.decode_responses(data, max_size=self.max_frame)
                except ConnectionClosed as exc:
                    return _describe_close(exc)
                except ProtocolError as exc:
                    log.warning("closing connection to %s: %s", self.address, exc)
                    return f"protocol error: {exc}"
                self._dispatch(leader, responses)
                if tap is not None:
                    tap.finished()
        finally:
            self._reading = False

    def _take(self, data: bytes | str) -> object | None:
        """The direct path (``_reader``), on the library's reader task: None when ``data``
        was dispatched, else ``data`` for ``_reader`` (which decodes it again and closes the
        connection on a protocol error)."""
        if not self._reading or type(data) is not bytes:
            return data
        try:
            leader, responses = protocol.decode_responses(data, max_size=self.max_frame)
        except Exception:
            return data
        self._heard_at = trio.current_time()
        self._dispatch(leader, responses)
        return None

    def _dispatch(self, leader: str | None, responses: list[dict[str, Any]]) -> None:
        self.leader = leader
        pending = self._pending
        for resp in responses:
            waiter = pending.pop(resp["id"], None)
            if waiter is not None:
                waiter.set(resp)

    def _fail(self, rid: int, exc: UnivrsError) -> None:
        waiter = self._pending.pop(rid, None)
        if waiter is not None:
            waiter.fail(exc)

    def _fail_all(self, why: str) -> None:
        self._closed = why
        pending, self._pending = self._pending, {}
        self._outbox.clear()
        for rid, waiter in pending.items():
            waiter.fail(_lost(self.address, why, sent=rid in self._handed))
        self._handed.clear()


async def _run_connection(
    address: str,
    timeout: float,
    max_frame: int,
    ssl_context: ssl.SSLContext | None,
    token: str | None = None,
    *,
    task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED,
) -> None:
    host, port = split_host_port(address)
    try:
        await _connection_task(
            address, host, port, timeout, max_frame, ssl_context, token, task_status
        )
    except (HandshakeError, BaseExceptionGroup) as exc:
        # The node rejected the handshake (HTTP 429: too many connections from this address);
        # trio-websocket raises it in its reader task, so it arrives in a group.
        rejected: BaseException | None = exc
        if isinstance(exc, BaseExceptionGroup):
            match, _ = exc.split(HandshakeError)
            rejected = None if match is None else _first_leaf(match)
        if rejected is None:
            raise
        status = getattr(rejected, "status_code", None)
        body = getattr(rejected, "body", b"") or b""
        reason = body.decode("utf-8", "replace")[:200] if isinstance(body, bytes) else ""
        raise _lost(
            address, f"the node rejected the connection (HTTP {status}: {reason})", sent=False
        ) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _connection_task(
    address: str,
    host: str,
    port: int,
    timeout: float,
    max_frame: int,
    ssl_context: ssl.SSLContext | None,
    token: str | None,
    task_status: trio.TaskStatus[Connection],
) -> None:
    conn: Connection | None = None
    failure: UnivrsError | None = None
    why = "closed"
    try:
        async with trio.open_nursery() as nursery:  # holds trio-websocket's reader task
            ws: WebSocketConnection | None = None
            try:
                ws = await _dial(nursery, address, host, port, timeout, max_frame, ssl_context)
                hello = await _exchange_hellos(ws, address, timeout, token)
            except UnivrsError as exc:
                failure = exc
            else:
                conn = Connection(address=address, hello=hello, max_frame=max_frame)
                conn._ws = ws
                conn.leader = hello.leader
                with conn._scope:
                    task_status.started(conn)
                    nursery.start_soon(conn._writer, ws)
                    nursery.start_soon(conn._keepalive, ws)
                    nursery.start_soon(conn._expire)
                    why = await conn._reader(ws)
                if conn._scope.cancelled_caught:
                    why = conn._closing or "closed by the client"
            finally:
                nursery.cancel_scope.cancel()
                if ws is not None:
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(CLOSE_TIMEOUT),
                        contextlib.suppress(*_BROKEN),
                    ):
                        await ws.aclose()
    except* LocalProtocolError as group:
        # trio-websocket's reader answered a ping on a connection that was closing: the
        # connection is over, not the client that holds it.
        why = f"the connection broke: {group.exceptions[0]}"
    finally:
        if conn is not None:
            conn._fail_all(why)
    if failure is not None:  # raised here, outside the nursery, so it is not wrapped
        raise failure


async def _dial(
    nursery: trio.Nursery,
    address: str,
    host: str,
    port: int,
    timeout: float,
    max_frame: int,
    ssl_context: ssl.SSLContext | None,
) -> WebSocketConnection:
    try:
        with trio.fail_after(timeout):
            return await connect_websocket(
                nursery,
                host,
                port,
                protocol.PATH,
                use_ssl=ssl_context if ssl_context is not None else False,
                message_queue_size=64,
                max_message_size=max_frame,
                receive_buffer_size=RECEIVE_BUFFER,
            )
    except trio.TooSlowError:
        raise _lost(address, f"no websocket handshake within {timeout:g}s", sent=False) from None
    except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError) as exc:
        raise _lost(address, f"cannot connect: {exc}", sent=False) from None


async def _exchange_hellos(
    ws: WebSocketConnection, address: str, timeout: float, token: str | None = None
) -> ServerHello:
    try:
        with trio.fail_after(timeout):
            await ws.send_message(protocol.encode_client_hello(token))
            answer = protocol.decode_server_hello(await ws.get_message())
    except trio.TooSlowError:
        raise _lost(address, f"no hello within {timeout:g}s", sent=False) from None
    except ConnectionClosed as exc:
        raise _lost(address, _describe_close(exc), sent=False) from None
    except ProtocolError as exc:
        raise _lost(address, f"protocol error: {exc}", sent=False) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise _lost(address, f"{type(exc).__name__}: {exc}", sent=False) from None
    if isinstance(answer, dict):
        raise error_from_plain(answer)
    return answer


def _describe_close(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "connection closed"
    text = f": {reason.reason}" if reason.reason else ""
    return f"closed by the node ({reason.code}{text})"
