"""Raft frames on a trio-websocket connection with fewer scheduling rounds (issue 14).

The raft links use trio-websocket 0.12.2 (pinned, pyproject.toml) for the handshake, the
framing (wsproto: RFC 6455, masking, size limits), pings and the closing handshake. Two of its
paths cost trio task steps that a raft frame does not need, and this module shortens them,
keeping every invariant of the library that they touch. ``usable`` checks that the
connection has the internals relied on here; if not (another version), callers take the
library's public path.

Writing (``write_nowait`` then, only if it returns a rest, ``finish``).
``WebSocketConnection.send_message`` refuses once the connection is closing
(``_close_reason``), serialises the message with the connection's wsproto, then writes the
bytes under the connection's send lock (a ``trio.StrictFIFOLock``: every writer takes it,
messages, pings, the reader task's pongs and close frames, so frames never interleave on the
stream). Taking the lock yields once even when it is free, and the socket's send yields once
after a write that went through: a frame went out in its writer's second step, and the writer
ran a third to return. ``write_nowait`` does the same three things in the same order and
yields nowhere: when the lock is held (a ping, a pong, a close frame being written) it hands
the whole message back for the library's ``send_message`` (which queues behind the holder);
else it serialises, and on a plain TCP socket writes the bytes with one non-blocking
``os.write`` of the socket's descriptor. Bytes the kernel did not take (its buffer full: the
backpressure) are written by ``finish`` through the stream's ``send_all`` with the lock held
from ``write_nowait`` on, so nothing else can write in between. A TLS stream or a test stream
is always finished by ``send_all`` (TLS records are the SSL object's to make), which saves the
lock's round only. A stream error is what ``send_message`` makes of it: the connection is
aborted (``_abort_web_socket``) and ``ConnectionClosed`` raised.

Reading (``FrameTap``). The library's reader task takes bytes off the stream, feeds wsproto,
answers pings, enforces ``max_message_size`` (closing with 1009) and puts each complete
message in a memory channel (``_send_channel``), from which ``get_message`` takes it: the
reader yields in that channel's ``send`` and runs another step to wait for data, and the task
that called ``get_message`` runs a step to take the message: three steps per frame. A tap
takes the channel's place for the reader's messages (the reader looks the channel up at every
message) and offers each to ``take``, a function the reader calls synchronously: a frame it
takes (decoded, checked and delivered without waiting) costs the reader's one step and
nothing else. Anything ``take`` declines (returns something to hand over: a frame it could
not decode, a text frame, a forged sender, a full inbox, a connection being closed) goes into
the library's channel as before, and while anything handed over is not yet finished by the
consumer (``finished``), every later message is handed over too: the order of the frames is
kept. Closing is the library's: its reader closes the original channel when it ends
(``get_message`` then raises ``ConnectionClosed``), ``aclose`` on the tap closes the same
channel, and a ``send`` after the consumer closed its end raises what the library expects
(it drops the message).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import BytesMessage

_INTERNALS = ("_close_reason", "_stream_lock", "_wsproto", "_stream", "_abort_web_socket")


def usable(ws: WebSocketConnection) -> bool:
    """Whether ``ws`` has the trio-websocket internals this module drives (0.12.2's). A
    connection whose channel is already a ``FrameTap`` is usable for writing (a writer made
    after the reader's tap, as the client's is) but must not get a second tap (``tapped``)."""
    return (
        all(hasattr(ws, name) for name in _INTERNALS)
        and isinstance(getattr(ws, "_stream_lock", None), trio.StrictFIFOLock)
        and isinstance(getattr(ws, "_send_channel", None), (trio.MemorySendChannel, FrameTap))
        and isinstance(getattr(ws, "_recv_channel", None), trio.MemoryReceiveChannel)
    )


def tapped(ws: WebSocketConnection) -> bool:
    """Whether ``ws``'s messages already go through a ``FrameTap``."""
    return isinstance(getattr(ws, "_send_channel", None), FrameTap)


@attrs.define(eq=False, slots=True)
class Rest:
    """What ``write_nowait`` left to ``finish``: the whole message for the library's
    ``send_message`` (``wire`` None), or the frame's unwritten bytes (the lock is held)."""

    message: bytes
    wire: memoryview | None


def write_nowait(ws: WebSocketConnection, message: bytes) -> Rest | None:
    """Send ``message`` as one binary websocket message without yielding if the stream takes
    it at once (None); else what ``finish`` must write. Raises ``ConnectionClosed`` once the
    connection is closing, as ``send_message`` does."""
    conn: Any = ws
    if conn._close_reason:
        raise ConnectionClosed(conn._close_reason)
    lock: trio.StrictFIFOLock = conn._stream_lock
    if lock.locked():
        return Rest(message, None)
    wire: bytes = conn._wsproto.send(BytesMessage(data=message))
    sent = _write_now(conn._stream, wire)
    if sent == len(wire):
        return None
    lock.acquire_nowait()  # held until ``finish`` wrote the rest: no frame in between
    return Rest(message, memoryview(wire)[sent:])


async def finish(ws: WebSocketConnection, rest: Rest) -> None:
    """Write what ``write_nowait`` left (waiting for room: the backpressure). Called by the
    task that called ``write_nowait`` (it holds the lock), at once (no other write between)."""
    conn: Any = ws
    if rest.wire is None:
        await ws.send_message(rest.message)
        return
    try:
        await conn._stream.send_all(rest.wire)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await conn._abort_web_socket()
        raise ConnectionClosed(conn._close_reason) from None
    finally:
        conn._stream_lock.release()


def _write_now(stream: trio.abc.Stream, wire: bytes) -> int:
    """Bytes of ``wire`` a plain TCP stream's socket took at once (0: none, or not plain)."""
    if type(stream) is not trio.SocketStream:
        return 0
    sock = stream.socket
    if sock.did_shutdown_SHUT_WR:
        return 0
    try:
        return os.write(sock.fileno(), wire)
    except OSError:
        # EAGAIN: ``send_all`` waits for room. Any other error (reset, closed): ``send_all``
        # meets it again and raises it as the stream error the library handles.
        return 0


@attrs.define(eq=False)
class FrameTap:
    """Stands in for a connection's message channel (module docstring). ``take(message)``
    returns None when it took the message, else the item to hand to the consumer, which
    calls ``finished`` after each item it got from ``get_message``."""

    take: Callable[[bytes | str], object | None]
    _channel: trio.MemorySendChannel[Any]
    pending: int = 0  # items handed over and not yet finished by the consumer

    @classmethod
    def install(
        cls, ws: WebSocketConnection, take: Callable[[bytes | str], object | None]
    ) -> FrameTap:
        """Put a tap in ``ws``'s channel's place; what is already queued counts as pending."""
        conn: Any = ws
        channel: trio.MemorySendChannel[Any] = conn._send_channel
        if not isinstance(channel, trio.MemorySendChannel):
            raise TypeError("the connection's messages already go through a tap")
        queued = conn._recv_channel.statistics().current_buffer_used
        waiting = channel.statistics().tasks_waiting_send  # the reader, blocked on a full one
        tap = cls(take, channel, queued + waiting)
        conn._send_channel = tap
        return tap

    async def send(self, message: bytes | str) -> None:
        """The reader task's hand-off of one complete message."""
        if not self.pending:
            item = self.take(message)
            if item is None:
                return
        else:
            item = message
        self.pending += 1
        await self._channel.send(item)

    def finished(self) -> None:
        """The consumer is done with one item it got from the channel."""
        if self.pending:
            self.pending -= 1

    async def aclose(self) -> None:
        """The library closing its channel (the connection closed)."""
        await self._channel.aclose()
