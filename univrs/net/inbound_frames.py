"""Reading an accepted ``/raft`` connection's frames (``FrameReading``, a base of
``RaftInbound``): decoding each frame, checking every message in it (sender and destination)
before any is delivered, refusing bad frames with a close code, and delivering the messages
to the driver's inbox.

Two paths deliver, in the order the frames came. The direct one runs on trio-websocket's
reader task (``univrs.net.wsdirect.FrameTap``, ``_Reading.take``): a binary frame that
decodes, whose messages all pass the checks and fit in the inbox without waiting, is
delivered there and then, in the reader's one step; nothing else runs for it (a message the
runtime says may wait for the driver's next step is kept there instead of waking the driver:
``RaftTransport.leave``). Everything else
(a frame that does not decode, a text frame, a forged sender, a full inbox, a connection being
closed or refused) is handed to the connection's handler task (``_read_messages``), which
decodes, checks, refuses or waits exactly as it did before the direct path existed; while it
holds anything, later frames go to it too. A connection whose scope was cancelled (a newer
connection from the same peer, an incarnation no longer listed, a fence) or that is closing
delivers nothing more on either path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from univrs.errors import ProtocolError
from univrs.net import wsdirect
from univrs.net.hello import Hello
from univrs.net.peer import describe_close
from univrs.net.settings import TransportSettings
from univrs.net.stats import PeerCounters
from univrs.raft import MAX_TERM
from univrs.raft.messages import AppendEntries, Heartbeat, InstallSnapshot, Message, NodeId

log = logging.getLogger("univrs.net")

# Websocket close codes (RFC 6455 7.4.1).
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
_MAX_CLOSE_REASON = 120  # a close frame's reason must fit in 123 bytes of UTF-8
_FROM_LEADER = (AppendEntries, Heartbeat, InstallSnapshot)  # what only a leader sends


class Decoder(Protocol):
    """Turns frame bytes into the Raft messages it carries, in order: one for a message frame,
    several for a batch frame (``univrs.codec.decode_frame``).

    Raises ``ProtocolError`` on anything malformed or larger than ``max_size``.
    ``sender_incarnation``: the incarnation the connection attests for the sender, which the
    decoder may set on the messages (``Message.sender_incarnation``) or leave to the reader
    (``_accept_message`` sets it on a message that does not carry it).
    """

    def __call__(
        self, data: bytes, *, max_size: int, sender_incarnation: str | None = None
    ) -> Sequence[Message]: ...


def short_reason(text: str) -> str:
    """``text`` cut to what a close frame's reason can carry."""
    raw = text.encode()[:_MAX_CLOSE_REASON]
    return raw.decode(errors="ignore")


@attrs.define(eq=False)
class InboundConnection:
    """One accepted inbound connection: who sent the hello, and why we close it (if we do)."""

    scope: trio.CancelScope
    incarnation: str | None
    hello: Hello
    refusal: str | None = None  # set by recheck_incarnations before it cancels ``scope``


@attrs.define(eq=False, slots=True)
class _Held:
    """Checked messages of one frame that the direct path could not deliver without waiting
    (the inbox was full): ``first`` already accepted (``_accept_message``), ``rest`` not."""

    first: Message
    rest: Sequence[Message]


class FrameReading:
    """The frame reading of ``RaftInbound`` (fields declared and documented on
    ``RaftTransport``; this class names the ones its methods use)."""

    node_id: NodeId
    inbox: trio.abc.SendChannel[Message]
    leave: Callable[..., bool] | None  # (msg, *, last): ``Inbox.leave``
    settings: TransportSettings
    decode: Decoder
    _configured: dict[NodeId, str]
    _source: NodeId | None
    _source_term: int
    _leader_terms: dict[NodeId, int]
    _rejected: int
    _warned_protocol: set[tuple[str, str, int]]

    def _sync_links(self) -> None:
        raise NotImplementedError  # RaftTransport's

    async def _refuse(
        self, ws: WebSocketConnection, remote: str, who: str, code: int, reason: str
    ) -> None:
        """Close one inbound connection for breaking the protocol. Logged at WARNING once per
        remote host, sender (or "unlisted" for ids the map does not list) and close code, then
        at DEBUG: anyone who reaches the port may send garbage in a loop."""
        self._rejected += 1
        key = (remote.rsplit(":", 1)[0], who if who in self._configured else "unlisted", code)
        level = logging.DEBUG if key in self._warned_protocol else logging.WARNING
        if len(self._warned_protocol) < 1024:
            self._warned_protocol.add(key)
        log.log(level, "closing raft connection from %s (%s): %s", who, remote, reason)
        with trio.move_on_after(self.settings.close_timeout):
            await ws.aclose(code, short_reason(reason))

    def _closed_by_library(self, exc: ConnectionClosed, remote: str, who: str) -> None:
        """trio-websocket closes a connection itself on an oversized frame: log it like ours."""
        reason = exc.reason
        if reason is not None and reason.code == CLOSE_TOO_BIG:
            self._rejected += 1
            log.warning(
                "closing raft connection from %s (%s): frame larger than max_payload_size %d",
                who,
                remote,
                self.settings.max_payload_size,
            )
        else:
            log.debug("raft connection from %s (%s) %s", who, remote, describe_close(reason))

    async def _read_messages(
        self,
        ws: WebSocketConnection,
        conn: InboundConnection,
        remote: str,
        counters: PeerCounters,
        attested: str | None,
    ) -> None:
        """Deliver the connection's frames until it closes or is refused (the module
        docstring: the direct path on the reader task, this task for the rest)."""
        peer = conn.hello.src
        reading: _Reading | None = None
        tap: wsdirect.FrameTap | None = None
        if (
            isinstance(self.inbox, trio.MemorySendChannel)
            and wsdirect.usable(ws)
            and not wsdirect.tapped(ws)
        ):
            reading = _Reading(self, self.inbox, ws, conn, counters, attested)
            tap = wsdirect.FrameTap.install(ws, reading.take)
        try:
            while True:
                try:
                    item = await ws.get_message()
                except ConnectionClosed as exc:
                    self._closed_by_library(exc, remote, peer)
                    return
                if isinstance(item, _Held):
                    if not await self._deliver_held(item, counters, attested):
                        return
                elif not await self._read_frame(ws, item, remote, peer, counters, attested):
                    return
                if tap is not None:
                    tap.finished()
        finally:
            if reading is not None:
                reading.live = False

    async def _read_frame(
        self,
        ws: WebSocketConnection,
        frame: bytes | str,
        remote: str,
        peer: NodeId,
        counters: PeerCounters,
        attested: str | None,
    ) -> bool:
        """Decode, check and deliver one frame; False when the connection is done (refused,
        or the node is shutting down)."""
        if isinstance(frame, str):
            reason = "text frame (raft frames are binary)"
            await self._refuse(ws, remote, peer, CLOSE_UNSUPPORTED_DATA, reason)
            return False
        try:
            msgs = self.decode(
                frame, max_size=self.settings.max_payload_size, sender_incarnation=attested
            )
        except ProtocolError as exc:
            reason = f"malformed message: {exc}"
            await self._refuse(ws, remote, peer, CLOSE_PROTOCOL_ERROR, reason)
            return False
        except Exception as exc:
            # The decoder must raise only ProtocolError; anything else is its bug, but a
            # remote frame must not be able to crash the node through it.
            log.exception("decoder raised %s on a frame from %s", type(exc).__name__, peer)
            reason = f"undecodable message ({type(exc).__name__})"
            await self._refuse(ws, remote, peer, CLOSE_PROTOCOL_ERROR, reason)
            return False
        # Every message of the frame is checked before any is delivered: a batch with one
        # forged message is refused whole.
        for msg in msgs:
            if msg.src != peer or msg.dst != self.node_id:
                reason = f"message from {msg.src!r} to {msg.dst!r} on {peer!r}'s connection"
                await self._refuse(ws, remote, peer, CLOSE_POLICY_VIOLATION, reason)
                return False
        counters.bytes_received += len(frame)
        for msg in msgs:
            if not await self._deliver(msg, counters, attested):
                return False
        return True

    async def _deliver_held(
        self, held: _Held, counters: PeerCounters, attested: str | None
    ) -> bool:
        """Deliver what the direct path checked but could not deliver without waiting."""
        try:
            await self.inbox.send(held.first)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the node is shutting down
        for msg in held.rest:
            if not await self._deliver(msg, counters, attested):
                return False
        return True

    def _accept_message(
        self, msg: Message, counters: PeerCounters, attested: str | None
    ) -> Message:
        """Count one checked message and note what it says about the entry source; the
        message as the driver gets it (with the incarnation its connection attests)."""
        counters.messages_received += 1
        if attested is not None and msg.sender_incarnation != attested:
            # What this connection attests of its sender: the core checks it again against
            # the configuration it holds (univrs/raft/senders.py). (The decoder sets it on
            # the messages it builds, given it: ``decode_frame``; not rebuilt then.)
            msg = attrs.evolve(msg, sender_incarnation=attested)
        # A term above MAX_TERM is refused by the core: adopting it here would let any
        # sender pin the entry source (and where we dial) for good.
        if isinstance(msg, _FROM_LEADER) and msg.src in self._configured:
            # The newest term of a listed peer's leader traffic: an answer at a higher term is
            # a stale leader's rejection (``RaftTransport.send``; bounded by the map).
            self._leader_terms[msg.src] = msg.term
        if isinstance(msg, _FROM_LEADER) and self._source_term <= msg.term <= MAX_TERM:
            self._source_term = msg.term
            if msg.src != self._source:
                self._source = msg.src
                self._sync_links()  # before the driver sees it: the answer needs a link
        return msg

    async def _deliver(self, msg: Message, counters: PeerCounters, attested: str | None) -> bool:
        """Hand one checked message to the driver; False once the node is shutting down."""
        msg = self._accept_message(msg, counters, attested)
        inbox = self.inbox
        try:
            if isinstance(inbox, trio.MemorySendChannel):
                # Without a yield when there is room (the reader yields at its next frame
                # anyway): one task step less per message; a full inbox still waits.
                try:
                    inbox.send_nowait(msg)
                    return True
                except trio.WouldBlock:
                    pass
            await inbox.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the node is shutting down
        return True


@attrs.define(eq=False, slots=True)
class _Reading:
    """The direct path of one connection (module docstring): ``take`` runs on trio-websocket's
    reader task, synchronously, for each complete message while nothing is handed over."""

    reader: FrameReading
    inbox: trio.MemorySendChannel[Message]
    ws: WebSocketConnection
    conn: InboundConnection
    counters: PeerCounters
    attested: str | None
    live: bool = True  # False once the handler task stopped reading

    def take(self, frame: bytes | str) -> object | None:
        """None when ``frame`` was delivered whole; else what the handler task must do: the
        frame itself (to decode, check and refuse or deliver), or ``_Held`` messages (checked,
        the inbox full)."""
        if (
            not self.live
            or self.conn.scope.cancel_called
            or self.ws.closed is not None
            or type(frame) is not bytes
        ):
            return frame
        reader = self.reader
        try:
            msgs = reader.decode(
                frame, max_size=reader.settings.max_payload_size, sender_incarnation=self.attested
            )
        except Exception:
            return frame  # the handler decodes it again, refuses the connection and logs why
        peer, node = self.conn.hello.src, reader.node_id
        for msg in msgs:
            if msg.src != peer or msg.dst != node:
                return frame
        counters, attested, inbox = self.counters, self.attested, self.inbox
        counters.bytes_received += len(frame)
        leave = reader.leave
        final = len(msgs) - 1
        for i, msg in enumerate(msgs):
            msg = reader._accept_message(msg, counters, attested)
            if leave is not None and leave(msg, last=i == final):
                continue  # kept for the driver's next step: no wake-up (the runtime's rule)
            try:
                inbox.send_nowait(msg)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # Full: the handler waits for room (the backpressure: this connection's
                # frames queue behind it, then its socket). Closed: the handler stops.
                return _Held(msg, msgs[i + 1 :])
        return None
