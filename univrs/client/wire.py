"""Writing a fast-protocol connection's frames without scheduling rounds: ``Wire`` (the node's
response writer, univrs/api/fast_writer.py, and the client's request writer, univrs/client/
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

The frame-level work is univrs/net/wsdirect.py's (``write_nowait``/``finish``, shared with the
raft links): it reaches into trio-websocket's connection (``_stream``, ``_stream_lock``,
``_wsproto``, ``_close_reason``, ``_abort_web_socket``), which pyproject.toml pins (0.12.2); if
those are missing (another version) every message goes the ordinary way (``Wire.direct`` is
False), and tests/api/test_inline_frames.py and tests/net/test_direct_frames.py fail, saying so.
"""

from __future__ import annotations

import attrs
from trio_websocket import WebSocketConnection

from univrs.net import wsdirect

__all__ = ["Pending", "Wire"]

Pending = wsdirect.Rest
"""What ``write_now`` could not write at once (``wire`` None: the whole message for
``send_message``; else the frame's unwritten bytes, the stream lock held)."""


@attrs.define(eq=False)
class Wire:
    """Writes one connection's messages, without a scheduling round when the socket takes
    them at once (see the module docstring)."""

    ws: WebSocketConnection
    direct: bool = attrs.field(init=False)
    writes: int = 0  # statistics: messages written whole at once
    deferred: int = 0  # messages (or their rest) sent the ordinary way

    def __attrs_post_init__(self) -> None:
        self.direct = wsdirect.usable(self.ws)

    def write_now(self, message: bytes) -> Pending | None:
        """Write ``message`` now if the socket takes it all (None); else what ``finish`` must
        send. Raises ConnectionClosed if the connection is closing."""
        if not self.direct:
            return Pending(message, None)
        rest = wsdirect.write_nowait(self.ws, message)
        if rest is None:
            self.writes += 1
        return rest

    async def finish(self, pending: Pending) -> None:
        """Send what ``write_now`` left (then release the lock it holds). Raises
        ConnectionClosed if the connection is closed or broken (a broken one is aborted, as
        the library does)."""
        self.deferred += 1
        await wsdirect.finish(self.ws, pending)
