"""Complete binary websocket frames read and written without wsproto's per-frame machinery
(issue 14, docs/performance.md "Round 23").

wsproto (RFC 6455 framing, under trio-websocket) parses each frame through a chain of
generators, a header object, a buffer with rollback, a masker object and a message decoder,
and builds each frame the same way: 11 to 35 µs per frame on this machine, three frames in
and three out per one-client write on the leader. Every frame of ours is one complete binary
message (a raft message, a client request or answer frame), so the common case is short:

* **Reading** (``install``): a connection's wsproto ``Connection`` gets an ``events`` of its
  own. While wsproto is between frames (no header half-read, no fragmented message under
  way, nothing queued) and the connection is open, it takes every *complete* frame at the
  front of wsproto's own receive buffer that is a final, unfragmented binary frame with no
  reserved bits, masked exactly when wsproto requires it (a server reads masked frames, a
  client unmasked ones), its length in the shortest encoding and at most ``limit`` (the
  connection's ``max_message_size``, at most ``FAST_MAX``): it unmasks the payload, removes
  the frame's bytes from the buffer and yields the ``BytesMessage`` wsproto would have
  yielded. A fast frame that has not fully arrived stays in the buffer until it has. At the
  first frame that is anything else (a ping, pong or close, a text or fragmented message, a
  bad header, a frame over the limit) the rest of the buffer is wsproto's, untouched: its own
  ``events`` parses it, with its own checks and errors, and the fast path resumes once
  wsproto is between frames again. So every frame the fast path does not take is handled
  exactly as before, and the ones it takes give the same events (tests/net/
  test_wsfast.py compares the two on random streams, split at random and with bits flipped).
  The consumed bytes are removed when the generator ends or is closed (trio-websocket stops
  iterating when the connection closes), so no frame is delivered twice. Once wsproto's own
  parser has stopped for good (a protocol error it reports as a close, e.g. a malformed close
  frame or an unexpected continuation, leaves the state open but parses nothing more),
  nothing is taken either (session 23's review found a client taking frames after one).
  Two differences remain, neither reachable through trio-websocket: a fast frame not yet
  whole is not handed over in pieces, so after ``receive_data(None)`` (which trio-websocket
  never calls) the close comes before that frame's pieces; and two ``events`` generators
  iterated at once (trio-websocket has one reader, which drops its generator) would both
  see the same frames.
* **Writing** (``binary_frame``): one complete binary message (``bytes``) on an open
  connection with no fragmented message under way and no extension: the header, and for a
  client a fresh random masking key (``os.urandom``'s bytes, as wsproto's, drawn for 1,024
  keys at a time: ``_mask_key``) and the masked payload.
  Anything else is wsproto's ``send``, which raises what it raised before.

* **Parts of a fragmented message** (s26-fuzz). trio-websocket keeps every part wsproto
  yields of a message not yet finished (a fragment, or the piece of a frame that has
  arrived) and bounds the message by the bytes of its parts alone (``max_message_size``,
  closing with 1009). A part costs about 40 bytes held whatever it carries, and an empty
  continuation frame is 6 bytes on the wire and adds nothing to that count: a sender that
  opened a message and went on with empty (or one-byte) fragments made the node hold
  memory without end (or 5 bytes per byte sent, up to 4 million parts). Each part of a
  message not yet finished is charged ``PART_COST`` besides its bytes, and a message whose
  parts pass twice ``max_message_size`` is refused as an oversized one is (trio-websocket
  closes with 1009: it is handed a stand-in part of that size, ``_Oversized``, allocating
  nothing). A message of parts of 64 bytes or more on average is read as before.

A hostile sender gains nothing here: a frame is only taken whole, within the connection's
message size limit, and any frame that breaks a rule goes to wsproto, which refuses it as
before (a close with 1002); the buffer never holds more than one frame of at most ``limit``
bytes beyond what wsproto would hold. The internals relied on are wsproto 1.3.2's
(pyproject.toml pins it); ``SUPPORTED`` is false on a wsproto without them, and then nothing
here is used.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Generator
from typing import Any

import attrs
from wsproto import WSConnection
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, Event, TextMessage
from wsproto.frame_protocol import XorMaskerSimple

__all__ = ["FAST_MAX", "PART_COST", "SUPPORTED", "binary_frame", "install", "installed"]

FAST_MAX = 1 << 20  # a larger frame is wsproto's (it hands its payload over as it arrives)
_SMALL_MASK = 2048  # payloads up to this many bytes are (un)masked as one integer

PART_COST = 64
"""Bytes charged per part of an unfinished message besides its own (a bytes object and its
list slot in trio-websocket's parts: about 40)."""

_OPEN = ConnectionState.OPEN
_BINARY_FIN = 0x82  # FIN, no reserved bits, opcode 2 (binary)
_H = struct.Struct("!H")
_Q = struct.Struct("!Q")
_HEAD2 = struct.Struct("!BBH")
_HEAD8 = struct.Struct("!BBQ")


def _supported() -> bool:
    """Whether this wsproto has the internals used here (1.3.2's)."""
    try:
        conn: Any = Connection(ConnectionType.SERVER)
        proto = conn._proto
        decoder = proto._frame_decoder
        return (
            isinstance(conn._state, ConnectionState)
            and hasattr(conn, "_events")
            and isinstance(decoder.buffer.buffer, bytearray)
            and decoder.buffer.bytes_used == 0
            and decoder.header is None
            and proto._message_decoder.opcode is None
            and proto._outbound_opcode is None
            and isinstance(proto.extensions, list)
            and isinstance(proto.client, bool)
            and proto._parse_more.gi_frame is not None
        )
    except AttributeError:
        return False


SUPPORTED = _supported()


# Masking keys not yet used (``_mask_key``).
_mask_keys: list[bytes] = []
_KEYS_AT_ONCE = 1024
if hasattr(os, "register_at_fork"):  # (POSIX) a forked child draws keys of its own
    os.register_at_fork(after_in_child=_mask_keys.clear)


def _mask_key() -> bytes:
    """A fresh random masking key, as wsproto's ``os.urandom(4)`` (RFC 6455 5.3: unpredictable),
    drawn ``_KEYS_AT_ONCE`` at a time: one system call per 1,024 frames, not one per frame.
    Each key is handed out once, whatever the thread (``list.pop`` is atomic)."""
    try:
        return _mask_keys.pop()
    except IndexError:
        pool = os.urandom(4 * _KEYS_AT_ONCE)
        _mask_keys.extend(pool[i : i + 4] for i in range(0, len(pool), 4))
        return _mask_keys.pop()


def _mask(key: bytes, data: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key`` (masking and unmasking are the same)."""
    n = len(data)
    if n > _SMALL_MASK:
        return bytes(XorMaskerSimple(key).process(bytearray(data)))
    if not n:
        return b""
    keys = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")


def _take(conn: Any, limit: int) -> Generator[Event, None, bool]:
    """Yield the complete fast frames at the front of ``conn``'s buffer (module docstring);
    returns True when wsproto's own parser must look at what is left."""
    buf: bytearray = conn._proto._frame_decoder.buffer.buffer
    masked = not conn._proto.client
    pos = 0
    try:
        while True:
            size = len(buf)
            if size - pos < 2:
                return bool(size - pos)  # one byte of a header: wsproto's to keep
            b1 = buf[pos + 1]
            if buf[pos] != _BINARY_FIN or bool(b1 & 0x80) is not masked:
                return True
            length = b1 & 0x7F
            at = pos + 2
            if length == 126:
                if size - at < 2:
                    return False
                length = _H.unpack_from(buf, at)[0]
                if length < 126:
                    return True  # not the shortest encoding: wsproto refuses it
                at += 2
            elif length == 127:
                if size - at < 8:
                    return False
                length = _Q.unpack_from(buf, at)[0]
                if length <= 0xFFFF:
                    return True  # not the shortest encoding: wsproto refuses it
                at += 8
            if length > limit:
                return True  # too long for here: wsproto hands it over as it arrives
            if masked:
                end = at + 4 + length
                if end > size:
                    return False  # not all here yet
                data = _mask(bytes(buf[at : at + 4]), bytes(buf[at + 4 : end]))
            else:
                end = at + length
                if end > size:
                    return False
                data = bytes(buf[at:end])
            pos = end
            yield BytesMessage(data=data, frame_finished=True, message_finished=True)
            if conn._state is not _OPEN or conn._events:
                return True  # the consumer's handler closed or queued something
    finally:
        if pos:
            del buf[:pos]


def _parsing(proto: Any) -> bool:
    """Is wsproto's frame parser still running? (A protocol error ends it for good.)"""
    return proto._parse_more.gi_frame is not None


class _Oversized(bytes):
    """A stand-in part (empty) whose ``len`` is ``size``: handed to trio-websocket, it makes
    the message pass ``max_message_size``, which the library refuses (1009)."""

    size: int

    def __len__(self) -> int:
        return self.size


@attrs.define(eq=False, slots=True)
class _Parts:
    """The cost of the parts of a connection's message not yet finished (module
    docstring)."""

    bound: int  # twice the connection's max_message_size
    held: int = 0


def _events(conn: Any, limit: int, parts: _Parts | None = None) -> Generator[Event, None, None]:
    """``Connection.events`` with the fast path in front and the parts of an unfinished
    message charged (module docstring)."""
    if conn._state is _OPEN and not conn._events:
        proto = conn._proto
        decoder = proto._frame_decoder
        if (
            decoder.header is None
            and not decoder.buffer.bytes_used
            and proto._message_decoder.opcode is None
            and not proto.extensions
            and _parsing(proto)
        ):
            rest = yield from _take(conn, limit)
            if not rest:
                return
    if parts is None:
        yield from Connection.events(conn)
        return
    for event in Connection.events(conn):
        kind = type(event)
        if kind is BytesMessage or kind is TextMessage:
            if event.message_finished:  # type: ignore[attr-defined]
                parts.held = 0
            else:
                parts.held += len(event.data) + PART_COST  # type: ignore[attr-defined]
                if parts.held > parts.bound:
                    parts.held = 0
                    stand_in = _Oversized()
                    stand_in.size = parts.bound
                    yield BytesMessage(data=stand_in, frame_finished=True, message_finished=False)
                    return  # (the library stops reading)
        yield event


def install(ws: Any) -> bool:
    """Give the open trio-websocket connection ``ws``'s wsproto connection the fast reading
    path (idempotent). False when it cannot: another wsproto, the handshake not done, an
    extension negotiated."""
    wsc = getattr(ws, "_wsproto", None)
    if not SUPPORTED or not isinstance(wsc, WSConnection):
        return False
    conn: Any = wsc.connection
    if conn is None or type(conn) is not Connection or conn._proto.extensions:
        return False
    if "events" in vars(conn):
        return True
    max_size = int(getattr(ws, "_max_message_size", FAST_MAX))
    limit = min(FAST_MAX, max_size)
    # (shadows the method)
    vars(conn)["events"] = functools.partial(_events, conn, limit, _Parts(2 * max_size))
    return True


def installed(ws: Any) -> bool:
    """Whether ``install`` gave ``ws`` the fast reading path (tests)."""
    conn = getattr(getattr(ws, "_wsproto", None), "connection", None)
    return conn is not None and "events" in vars(conn)


def binary_frame(wsc: WSConnection, data: bytes) -> bytes:
    """The bytes of one complete binary message ``data`` on ``wsc`` (module docstring); what
    ``wsc.send(BytesMessage(data=data))`` returns, by the short path when it applies."""
    conn: Any = wsc.connection
    if (
        SUPPORTED
        and type(data) is bytes
        and conn is not None
        and conn._state is _OPEN
        and conn._proto._outbound_opcode is None
        and not conn._proto.extensions
    ):
        n = len(data)
        client = conn._proto.client
        second = 0x80 if client else 0
        if n < 126:
            head = bytes((_BINARY_FIN, second | n))
        elif n <= 0xFFFF:
            head = _HEAD2.pack(_BINARY_FIN, second | 126, n)
        else:
            head = _HEAD8.pack(_BINARY_FIN, second | 127, n)
        if not client:
            return head + data
        key = _mask_key()
        return head + key + _mask(key, data)
    return wsc.send(BytesMessage(data=data))
