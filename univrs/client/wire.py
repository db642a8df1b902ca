"""Writing a fast-protocol connection's frames without scheduling rounds: ``Wire`` (the node's
response writer, univrs/api/fast.py, and the client's request writer, univrs/client/
connection.py).

Theory of operation. ``WebSocketConnection.send_message`` (trio-websocket) takes the
connection's stream lock (``trio.Lock``: a checkpoint, one scheduling round even when it is
free) and then ``SocketStream.send_all`` (another checkpoint after the socket's send): a
frame cost its writer task three steps, the wake-up and these two (docs/performance.md,
"Round 16 (s16-api)"). ``Wire.write_now`` does what ``send_message`` does with no checkpoint
when it can: it takes the same lock without waiting (``acquire_nowait``, only when it is
free, so no other sender of the connection, such as the library's reader answering a ping, is
in the middle of a frame), has the connection's wsproto state frame the message (masked on a
client) as ``send_message`` would, and writes the bytes to the socket at once (a non-blocking
``write``). What the socket does not take now (its buffer is full: a peer not reading) is left,
the lock still held, to ``finish``, which sends it the ordinary way (``send_all``; the node's
writer under its ``SEND_TIMEOUT``) and then releases the lock, so no other frame's bytes can
come between. When the lock is taken, or the stream is not a plain ``trio.SocketStream``
(TLS), or the connection is closing, ``finish`` sends the message with ``send_message`` itself.

This reaches into trio-websocket's connection (``_stream``, ``_stream_lock``, ``_wsproto``,
``_close_reason``), which pyproject.toml pins (0.12.2); if those are missing (another version)
every message goes the ordinary way (``Wire.direct`` is False), and tests/api/
test_inline_frames.py fails, saying so.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection
from wsproto.events import BytesMessage

__all__ = ["Pending", "Wire"]


@attrs.define(eq=False, slots=True)
class Pending:
    """What ``write_now`` could not write at once: ``data`` still to send, with the stream lock
    held (``locked``), or a whole message for ``send_message`` (not ``locked``)."""

    data: bytes | memoryview
    locked: bool


@attrs.define(eq=False)
class Wire:
    """Writes one connection's messages, without a scheduling round when the socket takes
    them at once (see the module docstring)."""

    ws: WebSocketConnection
    direct: bool = attrs.field(init=False)
    writes: int = 0  # statistics: messages written whole at once
    deferred: int = 0  # messages (or their rest) sent the ordinary way

    def __attrs_post_init__(self) -> None:
        ws: Any = self.ws
        self.direct = all(
            hasattr(ws, name) for name in ("_stream", "_stream_lock", "_wsproto", "_close_reason")
        )

    def write_now(self, message: bytes) -> Pending | None:
        """Write ``message`` now if the socket takes it all (None); else what ``finish`` must
        send. Raises ConnectionClosed if the connection is closed."""
        ws: Any = self.ws
        if not self.direct:
            return Pending(message, locked=False)
        if ws._close_reason is not None:
            raise ConnectionClosed(ws._close_reason)
        stream, lock = ws._stream, ws._stream_lock
        if type(stream) is not trio.SocketStream or lock.locked():
            return Pending(message, locked=False)
        lock.acquire_nowait()
        try:
            data = ws._wsproto.send(BytesMessage(data=message))
            try:
                sent = os.write(stream.socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError:  # a broken connection: ``send_all`` reports it as the library does
                sent = 0
        except BaseException:
            lock.release()
            raise
        if sent == len(data):
            lock.release()
            self.writes += 1
            return None
        return Pending(memoryview(data)[sent:], locked=True)

    async def finish(self, pending: Pending) -> None:
        """Send what ``write_now`` left (then release the lock it holds). Raises
        ConnectionClosed if the connection is closed or broken."""
        ws: Any = self.ws
        self.deferred += 1
        if not pending.locked:
            await ws.send_message(bytes(pending.data))
            return
        try:
            await ws._stream.send_all(pending.data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(
                ws._close_reason or CloseReason(1006, "the connection broke")
            ) from None
        finally:
            ws._stream_lock.release()
