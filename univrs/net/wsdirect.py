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
else it serialises (``wsfast.binary_frame``: the bytes wsproto would make, by a short path),
and on a plain TCP socket writes the bytes with one non-blocking
``os.write`` of the socket's descriptor. Bytes the kernel did not take (its buffer full: the
backpressure) are written by ``finish`` through the stream's ``send_all`` with the lock held
from ``write_nowait`` on, so nothing else can write in between. A TLS stream or a test stream
is always finished by ``send_all`` (TLS records are the SSL object's to make), which saves the
lock's round only. A stream error is what ``send_message`` makes of it: the connection is
aborted (``_abort_web_socket``) and ``ConnectionClosed`` raised.

Writing from outside the connection's writer (``write_whole_nowait``, s17-lat1). The raft
links' frames written from the step that queued them (the driver's, or the storage writer's
completion: univrs/net/peer.py ``PeerLink.flush``), not by the link's task a scheduling round
later. That caller cannot hold the send lock across a partial write (a trio lock belongs to
the task that took it, and the caller is not the link's task), so it writes only a frame the
kernel takes whole in practice: at most ``WHOLE_MAX`` bytes, on a plain TCP socket whose send
buffer has ample room for it (``SO_MEMINFO``, Linux), the lock free and the connection not
closing. Should
the kernel still take part of it (memory pressure), the frame cannot be finished without the
lock and another writer could put its bytes inside it: the socket is shut down instead (the
link ends, redials, and Raft sends again what was lost), never left with half a frame. A
frame that does not qualify is the link task's to write, as before.

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
(it drops the message). Installing a tap also gives the connection wsfast's reading path
(univrs/net/wsfast.py): its complete binary frames are parsed without wsproto's per-frame
machinery, everything else by wsproto as before.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from univrs.net import wsfast

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
    wire: bytes = wsfast.binary_frame(conn._wsproto, message)
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


# A frame ``write_whole_nowait`` writes is at most this long (a one-client append is ~120
# bytes, an ack ~20, 64 clients' batch ~13 KB), and it needs twice its size plus ``SLACK`` of
# room in the socket's send buffer (the kernel counts a buffer's memory with its overhead).
WHOLE_MAX = 16 * 1024
SLACK = 8 * 1024

_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux: u32 counters, SK_MEMINFO_*
_MEMINFO = struct.Struct("9I")  # ..., [3] SNDBUF, [4] FWD_ALLOC, [5] WMEM_QUEUED, ...
_write = os.write  # (the tests make it take part of a frame)


def _room(sock: trio.socket.SocketType) -> int:
    """Bytes the socket's send buffer can still queue (-1: unknown, e.g. not Linux)."""
    try:
        info = _MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO.size))
    except (OSError, struct.error):
        return -1
    return int(info[3]) - int(info[5])


def write_whole_nowait(ws: WebSocketConnection, message: bytes) -> bool:
    """Write ``message`` as one binary message from any step, if the kernel takes it whole
    (module docstring): True when written; False when it does not qualify (nothing written:
    the caller hands it to the connection's own writer). Raises ``ConnectionClosed`` if the
    kernel took only part of it (the socket is shut down: no frame may follow half a frame)."""
    conn: Any = ws
    if conn._close_reason or conn._stream_lock.locked() or len(message) > WHOLE_MAX:
        return False
    stream = conn._stream
    if type(stream) is not trio.SocketStream:
        return False
    sock = stream.socket
    if sock.did_shutdown_SHUT_WR or _room(sock) < 2 * len(message) + SLACK:
        return False
    # A complete data frame leaves wsproto's state as it was: unwritten, it can be written
    # again later (by the link's task).
    wire: bytes = wsfast.binary_frame(conn._wsproto, message)
    try:
        sent = _write(sock.fileno(), wire)
    except OSError:
        return False  # EAGAIN; any other error the link's task meets again and handles
    if sent == len(wire):
        return True
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionClosed(None)


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
        wsfast.install(ws)  # its frames read without wsproto's per-frame machinery
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
