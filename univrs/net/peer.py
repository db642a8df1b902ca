"""The outbound link to one peer: its queue, its counters and the task that dials and sends.

Theory of operation. ``run`` loops forever: dial the peer's current address (TCP connect and
websocket handshake on ``/raft`` within ``connect_timeout``, a fresh attempt every
``dial_interval`` while none has got through; then the hello), then pump the queue into the
connection (written in the step that wakes the pump when the stream takes the frame at once,
univrs/net/wsdirect.py; what has to wait for room, within ``send_timeout``): what is queued
when the pump wakes goes as one batch frame when the peer reads them (its hello said so), else
one frame per message. ``flush`` writes it from the caller's step instead when it can (s17-lat1).
A watcher task reads the connection so that a close by the peer (for example a refused hello)
ends the session at once rather than at the next send. A keepalive task pings the peer
``ping_interval`` after each pong; a pong ``ping_timeout`` late while no frame is being
written means the link is dead (a partition drops its packets: writes still land in the
kernel's buffer, and TCP would deliver them only at its next backed-off retransmission,
seconds after the network heals), so the session ends at once, without a closing handshake.
When a session ends, the link waits a capped, jittered exponential backoff before redialing;
a session that stayed up ``stable_after`` seconds resets the backoff. A change of address
cancels the current session or wait and dials the new address at once.

Messages flow one way on this connection (us to the peer); the peer answers on its own
outbound connection to us. Messages queued while disconnected stay queued (bounded); the one
being written when a connection fails is lost and counted as dropped.

A peer that closes with ``CLOSE_INCARNATION`` turned out to be another incarnation than our
configuration lists (or we are not the one it lists): the link *stops*, drops what is queued
and what is sent to it, and dials again only when something changes -- its expected
incarnation (``set_hello``), its address, or the peer dialing us successfully (``poke``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import attrs
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)
from wsproto.utilities import LocalProtocolError

from univrs.net import wsdirect
from univrs.net.address import join_host_port, split_host_port
from univrs.net.backoff import Backoff
from univrs.net.peer_flush import LinkFlush
from univrs.net.queue import PeerQueue
from univrs.net.settings import TransportSettings
from univrs.net.stats import PeerCounters
from univrs.raft.messages import Message, NodeId

log = logging.getLogger("univrs.net")

RAFT_PATH = "/raft"
CLOSE_INCARNATION = 4001
"""Close code (private range, RFC 6455 7.4.2) of a connection refused for its incarnation:
the dialer is not the incarnation the receiver's configuration lists, or the receiver is not
the one the dialer expects. The dialer stops sending to that peer (see ``PeerLink``)."""

CLOSE_STALE_START = 4002
"""Close code of a connection refused because the dialer runs an older copy of its data dir
than one the receiver heard start (univrs/raft/starts.py). The dialer stops taking part
(``RaftTransport`` fences it): it must be replaced (docs/security.md)."""

Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]
"""Opens a byte stream to (host, port); ``trio.open_tcp_stream`` outside tests."""


class Encoder(Protocol):
    """Turns a Raft message into frame bytes (``univrs.codec.encode_message``)."""

    def __call__(self, msg: Message, /) -> bytes: ...


class BatchEncoder(Protocol):
    """Turns 2 to ``MAX_FRAME_MESSAGES`` encoded messages into one batch frame
    (``univrs.codec.encode_batch``)."""

    def __call__(self, frames: Sequence[bytes], /) -> bytes: ...


MAX_FRAME_MESSAGES = 256
"""The most messages the link puts in one batch frame (``univrs.codec.MAX_BATCH_MESSAGES``)."""

_BATCH_OVERHEAD = 16  # bytes a batch frame adds to its messages' (array head, version, tag)


def describe_close(reason: CloseReason | None) -> str:
    """One-line text of a websocket close reason."""
    if reason is None:
        return "connection closed"
    text = f" ({reason.reason})" if reason.reason else ""
    return f"closed with code {reason.code} {reason.name}{text}"


@attrs.define(eq=False)
class _Session:
    """What one dial attempt achieved: why it ended, and when it got connected (if it did)."""

    reason: str = "ended"
    connected_at: float | None = None
    broken: bool = False  # a write was abandoned mid-frame: no graceful close is possible
    refused_incarnation: bool = False  # the peer closed with CLOSE_INCARNATION
    refused_start: bool = False  # the peer closed with CLOSE_STALE_START: we are an old copy
    restarted: bool = False  # ended by set_address/set_hello: a redial we asked for
    direct: bool = False  # frames written by univrs.net.wsdirect (the library's internals fit)

    def closed(self, reason: CloseReason | None, prefix: str = "") -> None:
        """Record the peer's close of the connection as the reason the session ended."""
        self.reason = f"{prefix}{describe_close(reason)}"
        if reason is not None and reason.code == CLOSE_INCARNATION:
            self.refused_incarnation = True
        if reason is not None and reason.code == CLOSE_STALE_START:
            self.refused_start = True


@attrs.define(eq=False)
class PeerLink(LinkFlush):
    """Sender side of one peer. Created and owned by ``RaftTransport``; ``run`` is its task."""

    peer_id: NodeId
    address: str | None
    hello: bytes  # the encoded hello frame, sent first on every connection
    settings: TransportSettings
    encode: Encoder
    connector: Connector
    backoff: Backoff
    counters: PeerCounters
    queue: PeerQueue
    on_rtt: Callable[[NodeId, float], None] = lambda _peer, _seconds: None  # a ping's round trip
    # Batch frames (None: one frame per message), used while ``accepts_batches()`` says the
    # peer reads them (its hello said so).
    encode_batch: BatchEncoder | None = None
    accepts_batches: Callable[[], bool] = lambda: False
    # Told (peer, reason) when the peer refuses us as an older copy of our data dir.
    on_stale_start: Callable[[NodeId, str], None] = lambda _peer, _reason: None
    _wakeup: trio.Event = attrs.field(factory=trio.Event, init=False)
    _session_scope: trio.CancelScope | None = attrs.field(default=None, init=False)
    _scope: trio.CancelScope | None = attrs.field(default=None, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _last_failure: str | None = attrs.field(default=None, init=False)  # reason, until stable
    # Why sending stopped (the peer refused our incarnation or is not the one we expect), or
    # None while the link works normally.
    _stopped: str | None = attrs.field(default=None, init=False)
    _writing: bool = attrs.field(default=False, init=False)  # the pump is inside a frame write
    # The keepalive parks here while a frame is being written.
    _write_done: trio.lowlevel.ParkingLot = attrs.field(
        factory=trio.lowlevel.ParkingLot, init=False
    )
    # The connection the pump sends on, while it does (``flush`` writes on it too).
    _live: tuple[WebSocketConnection, _Session] | None = attrs.field(default=None, init=False)
    # Frames ``flush`` took off the queue but left to the pump (it sends them first).
    _carry: list[tuple[bytes, int]] = attrs.field(factory=list, init=False)

    @property
    def stopped(self) -> str | None:
        """Why this link stopped sending (an incarnation refusal), or None."""
        return self._stopped

    def enqueue(self, msg: Message, *, wake: bool = True) -> None:
        """Queue ``msg`` for sending; never blocks (drops the oldest of its lane when full).
        ``wake`` False: the caller calls ``flush`` next, which wakes the pump if it must.

        A stopped link drops ``msg`` (counted)."""
        if self._stopped is not None:
            self.counters.dropped += 1
            return
        dropped = self.queue.put(msg, wake=wake)
        if dropped is not None:
            self.counters.dropped += 1
            log.debug("queue to %s full: dropped a %s", self.peer_id, type(dropped).__name__)

    def set_address(self, address: str | None) -> None:
        """Dial ``address`` from now on, abandoning the current connection if it changed."""
        if address == self.address:
            return
        self.address = address
        self._restart()

    def set_hello(self, hello: bytes) -> None:
        """Introduce ourselves with ``hello`` from now on (the incarnation we expect of the
        peer changed): redial at once if it differs, even if the link had stopped."""
        if hello == self.hello:
            return
        self.hello = hello
        self._restart()

    def _restart(self) -> None:
        self._stopped = None
        self.backoff.reset()
        self._wakeup.set()
        if self._session_scope is not None:
            self._session_scope.cancel()

    def poke(self) -> None:
        """The peer just dialed us and passed our checks, so it is up (and is the incarnation
        our configuration lists): if we are waiting to redial, or stopped, redial now."""
        if self._stopped is not None:
            self._stopped = None
            self.backoff.reset()
            self._wakeup.set()
        elif self._session_scope is None:
            self.backoff.reset()
            self._wakeup.set()

    def close(self) -> None:
        """Stop the link's task for good and drop what is queued."""
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()
        self.counters.dropped += self.queue.clear()
        self.counters.connected = False

    async def run(self) -> None:
        """Dial, send, redial with backoff; returns only after ``close()``."""
        if self._closed:
            return
        with trio.CancelScope() as self._scope:
            while True:
                if self.address is None:
                    await self._wait_for_wakeup(math.inf)
                    continue
                host, port = split_host_port(self.address, allow_port_zero=True)
                session = await self._run_session(host, port)
                if session.refused_start:
                    self.on_stale_start(self.peer_id, session.reason)
                if session.refused_incarnation or session.refused_start:
                    await self._stop(session.reason)
                    continue
                stable = (
                    session.connected_at is not None
                    and trio.current_time() - session.connected_at >= self.settings.stable_after
                )
                if stable:
                    self.backoff.reset()
                if session.connected_at is None:
                    self.counters.connect_failures += 1
                    what = "cannot reach"
                else:
                    what = "lost connection to"
                # One WARNING per streak of failures for the same reason; repeats go to DEBUG.
                repeat = not stable and session.reason == self._last_failure
                level = logging.DEBUG if repeat else logging.WARNING
                if session.restarted:
                    level, what = logging.INFO, "redialing"
                log.log(level, "%s %s: %s", what, self.peer_id, session.reason)
                self._last_failure = None if stable else session.reason
                await self._wait_for_wakeup(self.backoff.next_delay())

    async def _stop(self, reason: str) -> None:
        """The peer refused us for our incarnation or is not the one we expect: stop sending
        (one WARNING per reason) until the hello, the address or the peer changes."""
        self._stopped = reason
        self.counters.dropped += self.queue.clear()
        level = logging.DEBUG if reason == self._last_failure else logging.WARNING
        log.log(level, "stopped sending to %s: %s", self.peer_id, reason)
        self._last_failure = reason
        await self._wait_for_wakeup(math.inf)
        self._stopped = None  # woken: something changed, dial again

    async def _wait_for_wakeup(self, delay: float) -> None:
        with trio.move_on_after(delay):
            await self._wakeup.wait()
        if self._wakeup.is_set():
            self._wakeup = trio.Event()

    async def _run_session(self, host: str, port: int) -> _Session:
        session = _Session()
        with trio.CancelScope() as scope:
            self._session_scope = scope
            try:
                async with trio.open_nursery() as nursery:  # holds the connection's reader task
                    try:
                        await self._dial_and_pump(nursery, host, port, session)
                    finally:
                        nursery.cancel_scope.cancel()
            except* ConnectionRejected as group:
                rejected: Any = group.exceptions[0]
                session.reason = f"websocket handshake refused with HTTP {rejected.status_code}"
            except* (
                HandshakeError,
                ConnectionClosed,
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                LocalProtocolError,  # trio-websocket answering a ping on a closing connection
            ) as group:
                session.reason = f"{type(group.exceptions[0]).__name__}: {group.exceptions[0]}"
        self._session_scope = None
        self.counters.connected = False
        if scope.cancelled_caught:
            session.reason = "address or expected incarnation changed"
            session.refused_incarnation = False
            session.restarted = True
        return session

    async def _open(
        self, nursery: trio.Nursery, host: str, port: int
    ) -> tuple[trio.abc.Stream, WebSocketConnection] | str:
        """TCP connect and websocket handshake; the connection, or why there is none.

        Attempts overlap: while none has got through, another starts every ``dial_interval``,
        all within ``connect_timeout``. Over a network that drops packets a pending attempt
        gets through only at TCP's SYN retransmissions (1 s, 3 s, ... after it started), a
        fresh one as soon as the network heals. The first attempt through wins; the others are
        abandoned before any hello (so the peer just drops them). An attempt that fails (for
        example refused) ends the dialing with its reason; the reader tasks of the websockets
        run in ``nursery``.
        """
        settings = self.settings
        won: list[tuple[trio.abc.Stream, WebSocketConnection]] = []
        failed: list[str] = []

        async def attempt(attempts: trio.Nursery) -> None:
            stream: trio.abc.Stream | None = None
            try:
                stream = await self.connector(host, port)
                ws = await wrap_client_stream(
                    nursery,
                    stream,  # type: ignore[arg-type]  # any trio Stream works
                    join_host_port(host, port),
                    RAFT_PATH,
                    message_queue_size=1,
                    max_message_size=settings.max_payload_size,
                )
            except OSError as exc:
                failed.append(f"connect failed: {exc}")
            except ConnectionRejected as exc:
                failed.append(f"websocket handshake refused with HTTP {exc.status_code}")
            except ConnectionClosed as exc:
                failed.append(f"handshake failed: {describe_close(exc.reason)}")
            except (HandshakeError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                failed.append(f"handshake failed: {type(exc).__name__}: {exc}")
            else:
                if not won:  # two may get through at once: keep the first
                    won.append((stream, ws))
                    stream = None
            finally:
                if stream is not None:
                    await trio.aclose_forcefully(stream)
            attempts.cancel_scope.cancel()  # through, or failed: no more attempts

        with trio.move_on_after(settings.connect_timeout):
            async with trio.open_nursery() as attempts:
                while True:
                    attempts.start_soon(attempt, attempts)
                    await trio.sleep(settings.dial_interval)
        if won:
            return won[0]
        if failed:
            return failed[0]
        return f"connect timed out after {settings.connect_timeout:g}s"

    async def _dial_and_pump(
        self, nursery: trio.Nursery, host: str, port: int, session: _Session
    ) -> None:
        opened = await self._open(nursery, host, port)
        if isinstance(opened, str):
            session.reason = opened
            return
        stream, ws = opened
        try:
            try:
                with trio.fail_after(self.settings.connect_timeout):
                    await ws.send_message(self.hello)
            except trio.TooSlowError:
                session.reason = f"hello not sent within {self.settings.connect_timeout:g}s"
                return
            except ConnectionClosed as exc:
                session.closed(exc.reason, "handshake failed: ")
                return
            session.connected_at = trio.current_time()
            session.direct = wsdirect.usable(ws)
            self.counters.connected = True
            self.counters.connects += 1
            log.info("connected to %s at %s", self.peer_id, join_host_port(host, port))
            try:
                async with trio.open_nursery() as inner:
                    inner.start_soon(self._watch_close, ws, session, inner.cancel_scope)
                    inner.start_soon(self._keepalive, ws, session, inner.cancel_scope)
                    await self._pump(ws, session)
                    inner.cancel_scope.cancel()
            finally:
                self.counters.connected = False
                if not session.broken:
                    with trio.move_on_after(self.settings.close_timeout):
                        await ws.aclose()
        finally:
            await trio.aclose_forcefully(stream)

    async def _watch_close(
        self, ws: WebSocketConnection, session: _Session, scope: trio.CancelScope
    ) -> None:
        # The peer never sends on this connection; reading only notices its close.
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            session.closed(exc.reason, "peer ")
        scope.cancel()

    async def _keepalive(
        self, ws: WebSocketConnection, session: _Session, scope: trio.CancelScope
    ) -> None:
        """Ping the peer; end the session when a pong is ``ping_timeout`` late.

        A frame being written has its own deadline (``send_timeout``; a large frame on a slow
        link may take a while), so a ping never waits behind one (a write cut off by its
        deadline would leave nothing to send the ping on), and no pong is late while one is
        written: a pong found missing during a write is due ``ping_timeout`` after that write
        ends (a peer that reads slowly answers the ping, which came first, as it gets there).
        """
        interval, timeout = self.settings.ping_interval, self.settings.ping_timeout
        while True:
            await trio.sleep(interval)
            pong = trio.Event()
            sent: list[float] = []  # when the ping was handed to the connection
            waited = -math.inf  # when a write we found in progress ended
            async with trio.open_nursery() as pinging:
                pinging.start_soon(self._ping, ws, pong, sent)
                while not pong.is_set():
                    if self._writing:
                        await self._write_done.park()
                        waited = trio.current_time()
                        continue
                    since = max(sent[0] if sent else trio.current_time(), waited)
                    with trio.move_on_at(since + timeout):
                        await pong.wait()
                    if pong.is_set() or self._writing or not sent:
                        continue
                    if trio.current_time() >= max(sent[0], waited) + timeout:
                        session.reason = f"no pong within {timeout:g}s: the link is dead"
                        session.broken = True  # a closing handshake would not get through
                        self.counters.dead_links += 1
                        scope.cancel()
                        return

    async def _ping(self, ws: WebSocketConnection, pong: trio.Event, sent: list[float]) -> None:
        while self._writing:
            await self._write_done.park()
        sent.append(trio.current_time())
        try:
            await ws.ping()  # takes the send lock with no checkpoint since the check above
        except ConnectionClosed:
            return  # _watch_close ends the session
        pong.set()
        self.on_rtt(self.peer_id, trio.current_time() - sent[0])

    async def _pump(self, ws: WebSocketConnection, session: _Session) -> None:
        """Send what is queued. Everything queued when the pump wakes (one driver step's
        messages to this peer, typically) goes in one batch frame when the peer reads them:
        one websocket frame, one write, one wake-up of the peer's reader per step."""
        queue = self.queue
        self._carry = []
        self._live = (ws, session)
        try:
            while True:
                while self._carry:  # left by ``flush``: they go before anything queued later
                    data, count = self._carry.pop(0)
                    if not await self._send_frame(ws, session, data, count):
                        return
                first = queue.get_nowait()
                if first is None:
                    await queue.wait()
                    continue
                for data, count in self._frames(self._batch(first)):
                    if not await self._send_frame(ws, session, data, count):
                        return
        finally:
            self._live, carry, self._carry = None, self._carry, []
            self.counters.dropped += sum(count for _data, count in carry)

    def _batch(self, first: Message) -> list[Message]:
        """``first`` and, when the peer reads batch frames, what is queued behind it."""
        batch = [first]
        if self.encode_batch is not None and self.accepts_batches():
            while len(batch) < MAX_FRAME_MESSAGES:
                more = self.queue.get_nowait()
                if more is None:
                    break
                batch.append(more)
        return batch

    def _frames(self, batch: list[Message]) -> list[tuple[bytes, int]]:
        """``batch`` as frames to write, each with the number of messages it carries: one
        message alone as its own frame, runs of several as batch frames of at most
        ``max_payload_size`` bytes. A message too large on its own is dropped (counted)."""
        limit = self.settings.max_payload_size
        encoded: list[bytes] = []
        for msg in batch:
            data = self.encode(msg)
            if len(data) > limit:
                self.counters.dropped += 1
                log.warning(
                    "dropped %s to %s: %d bytes exceeds max_payload_size %d",
                    type(msg).__name__,
                    self.peer_id,
                    len(data),
                    limit,
                )
                continue
            encoded.append(data)
        if len(encoded) <= 1 or self.encode_batch is None:
            return [(data, 1) for data in encoded]
        frames: list[tuple[bytes, int]] = []
        run: list[bytes] = []
        size = _BATCH_OVERHEAD

        def close_run() -> None:
            if len(run) == 1:
                frames.append((run[0], 1))
            elif run:
                assert self.encode_batch is not None
                frames.append((self.encode_batch(run), len(run)))

        for data in encoded:
            if run and size + len(data) > limit:
                close_run()
                run, size = [], _BATCH_OVERHEAD
            run.append(data)
            size += len(data)
        close_run()
        return frames

    async def _send_frame(
        self, ws: WebSocketConnection, session: _Session, data: bytes, count: int
    ) -> bool:
        """Write one frame of ``count`` messages; False when the session must end.

        The frame goes out in this step when it can (``wsdirect.write_nowait``: the send lock
        free and, on plain TCP, the socket's buffer taking it whole); only what is left waits,
        within ``send_timeout``."""
        sent = False
        try:
            rest = wsdirect.write_nowait(ws, data) if session.direct else wsdirect.Rest(data, None)
            if rest is not None:
                # A bare CancelScope: trio.fail_after's generator wrapper costs more, per frame.
                timeout = self.settings.send_timeout
                self._writing = True
                try:
                    with trio.CancelScope(deadline=trio.current_time() + timeout) as sending:
                        await wsdirect.finish(ws, rest)
                finally:
                    self._writing = False
                    if self._write_done:  # the keepalive waits for this write
                        self._write_done.unpark_all()
                if sending.cancelled_caught:
                    session.reason = f"send timed out after {timeout:g}s"
                    session.broken = True
                    return False
            sent = True
        except ConnectionClosed as exc:
            session.closed(exc.reason)
            return False
        finally:
            # Messages taken off the queue but not written (failure or cancellation) are lost.
            if not sent:
                self.counters.dropped += count
        self.counters.messages_sent += count
        self.counters.frames_sent += 1
        self.counters.bytes_sent += len(data)
        return True
