"""Complete binary frames read and written without wsproto's per-frame machinery
(univrs/net/wsfast.py; issue 14, docs/performance.md "Round 23"): the fast paths give exactly
the events and bytes wsproto gives, on random streams split at random and with bits flipped,
and hand everything else to wsproto. Each check is shown to catch the bug it guards against."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from tests.net.test_direct_frames import _ws_pair
from univrs.net import wsdirect, wsfast

SIZES = (0, 1, 5, 125, 126, 127, 300, 4096, 65535, 65536, 70000)
LIMIT = 65536  # the fast path's limit in these tests: 70,000-byte frames are wsproto's

EventsFn = Callable[[Any], Iterator[Event]]


def _plain(conn: Any) -> Iterator[Event]:
    return Connection.events(conn)


def _fast(conn: Any) -> Generator[Event, None, None]:
    return wsfast._events(conn, LIMIT)


def _raw(rnd: random.Random, first: int, payload: bytes, masked: bool) -> bytes:
    """A frame as a hostile sender may write it: any first byte, either mask bit, and
    sometimes a length in a longer encoding than it needs."""
    n = len(payload)
    second = 0x80 if masked else 0
    form = rnd.choice(("short", "short", "two", "eight")) if n < 126 else "two"
    if form == "short" and n < 126:
        head = bytes((first, second | n))
    elif form == "two" and n <= 0xFFFF:
        head = bytes((first, second | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, second | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = rnd.randbytes(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


HOSTILE_FIRST = (
    0x88,  # a close (its payload below may be malformed)
    0x80,  # a final continuation with no message under way
    0x00,  # a continuation
    0x02,  # a first binary fragment
    0xC2,  # binary with RSV1
    0x83,  # a reserved data opcode
    0x8B,  # a reserved control opcode
    0x09,  # a ping without FIN
)


def _stream(rnd: random.Random, sender: Connection) -> bytes:
    """Random frames from ``sender``: binary of many sizes, text, pings, pongs, fragmented
    messages, a close; and frames as a hostile sender writes them (malformed closes, stray
    continuations, reserved bits and opcodes, the wrong mask bit, longer length encodings),
    with more frames after them."""
    data = b""
    masked = sender.client
    for _ in range(rnd.randint(1, 12)):
        r = rnd.random()
        event: Event
        if r < 0.12:
            payload = rnd.choice(
                (
                    b"",
                    b"\x03",
                    (999).to_bytes(2, "big"),
                    (1005).to_bytes(2, "big"),
                    (1000).to_bytes(2, "big") + b"\xff",
                    (1000).to_bytes(2, "big") + b"bye",
                    rnd.randbytes(rnd.choice((1, 5, 200))),
                )
            )
            wrong_mask = rnd.random() < 0.15
            data += _raw(rnd, rnd.choice(HOSTILE_FIRST), payload, masked != wrong_mask)
            continue
        if r < 0.18:  # a well-formed binary frame, but perhaps not in the shortest form
            data += _raw(rnd, 0x82, rnd.randbytes(rnd.choice((3, 100))), masked)
            continue
        if r < 0.6:
            event = BytesMessage(data=rnd.randbytes(rnd.choice(SIZES)))
        elif r < 0.7:
            event = Ping(payload=b"p")
        elif r < 0.75:
            event = Pong(payload=b"q")
        elif r < 0.85:
            event = TextMessage(data="text")
        elif r < 0.95:
            event = BytesMessage(data=rnd.randbytes(50), message_finished=rnd.random() < 0.5)
        else:
            event = CloseConnection(code=1000)
        try:
            data += sender.send(event)
        except TypeError:
            continue  # text inside a binary message (or the reverse): not sendable
        except LocalProtocolError:
            data += _raw(rnd, 0x82, b"after the close", masked)  # a sender that goes on
    return data


def _read(
    data: bytes, side: ConnectionType, events: EventsFn, rnd: random.Random
) -> tuple[Any, ...]:
    """What a ``side`` connection makes of ``data`` fed in random pieces: the messages
    (fragments joined), other events, the error that stopped it and its final state."""
    conn: Any = Connection(side)
    got: list[Event] = []
    error = None
    i = 0
    while i < len(data):
        j = min(len(data), i + rnd.choice((1, 2, 3, 7, 100, 4096, 70_000)))
        try:
            conn.receive_data(data[i:j])
        except LocalProtocolError as exc:
            error = str(exc)
            break
        i = j
        got.extend(events(conn))
    got.extend(events(conn))  # asked once more, as a reader would be after more data
    merged: list[tuple[str, object]] = []
    part = b""
    for event in got:
        if isinstance(event, BytesMessage):
            part += event.data
            if event.message_finished:
                merged.append(("bytes", part))
                part = b""
        else:
            merged.append((type(event).__name__, repr(event)))
    # ``part``, the bytes of a message not finished when the stream ends, is left out: wsproto
    # hands a frame's bytes over as they arrive, the fast path a frame only whole, and
    # trio-websocket delivers neither until the message is finished.
    return merged, error, conn.state


def _first_difference(fast: EventsFn, trials: int, seed: int) -> int | None:
    """The first trial whose stream the fast ``events`` reads differently from wsproto's."""
    rnd = random.Random(seed)
    for trial in range(trials):
        side = rnd.choice((ConnectionType.SERVER, ConnectionType.CLIENT))
        sender = Connection(
            ConnectionType.CLIENT if side is ConnectionType.SERVER else ConnectionType.SERVER
        )
        data = bytearray(_stream(rnd, sender))
        if data and rnd.random() < 0.3:
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)  # a flipped bit
        split = rnd.random()
        plain = _read(bytes(data), side, _plain, random.Random(split))
        if _read(bytes(data), side, fast, random.Random(split)) != plain:
            return trial
    return None


def test_the_pinned_wsproto_has_what_the_fast_paths_use() -> None:
    """wsproto 1.3.2's internals (pyproject.toml pins it); another version: ``SUPPORTED`` is
    false and nothing fast is used."""
    assert wsfast.SUPPORTED


def test_reading_gives_wsproto_s_events_on_random_streams() -> None:
    """Servers (masked frames) and clients (unmasked), every frame size around the length
    encodings and the limit, control frames, text, fragmented messages, closes, random split
    points and flipped bits: the same messages, events, errors and final state."""
    assert _first_difference(_fast, 600, seed=2301) is None


def _rewriting(monkeypatch: pytest.MonkeyPatch, rewrite: Callable[[bytearray], None]) -> None:
    """A mutant fast path: ``rewrite`` edits wsproto's buffer in place before each fast
    parse, making the fast path take what the real one must leave to wsproto."""
    original = wsfast._take

    def mutant(conn: Any, limit: int) -> Iterator[Event]:
        rewrite(conn._proto._frame_decoder.buffer.buffer)
        return original(conn, limit)

    monkeypatch.setattr(wsfast, "_take", mutant)


def test_the_comparison_catches_a_fast_path_that_ignores_fin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fast path that took a first fragment (no FIN) for a whole message differs."""

    def set_fin(buf: bytearray) -> None:
        if len(buf) >= 2 and buf[0] == 0x02:  # a first binary fragment: FIN set
            buf[0] = 0x82

    _rewriting(monkeypatch, set_fin)
    assert _first_difference(_fast, 600, seed=2301) is not None


def test_the_comparison_catches_a_fast_path_without_the_mask_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server must refuse an unmasked frame (wsproto closes with 1002); a fast path that
    took it (here: as if masked with a zero key) differs."""
    frame = Connection(ConnectionType.SERVER).send(BytesMessage(data=b"unmasked"))
    plain = _read(frame, ConnectionType.SERVER, _plain, random.Random(1))
    assert plain[0] == [("CloseConnection", plain[0][0][1])] and "1002" in str(plain[0])
    assert _read(frame, ConnectionType.SERVER, _fast, random.Random(1)) == plain

    def as_masked(buf: bytearray) -> None:
        if len(buf) >= 2 and buf[0] == 0x82 and not buf[1] & 0x80 and buf[1] < 126:
            buf[1:2] = bytes((buf[1] | 0x80,)) + bytes(4)

    _rewriting(monkeypatch, as_masked)
    assert _read(frame, ConnectionType.SERVER, _fast, random.Random(1)) != plain


def test_the_comparison_catches_a_fast_path_with_an_unchecked_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 2-byte length under 126 (not the shortest encoding) is refused by wsproto; a fast
    path that took it (here: as if written in the short form) differs."""
    frame = bytes((0x82, 126)) + (5).to_bytes(2, "big") + b"hello"
    plain = _read(frame, ConnectionType.CLIENT, _plain, random.Random(1))
    assert plain[0][-1][0] == "CloseConnection" and "1002" in str(plain[0])
    assert _read(frame, ConnectionType.CLIENT, _fast, random.Random(1)) == plain

    def shorten(buf: bytearray) -> None:
        if len(buf) >= 4 and buf[:2] == bytes((0x82, 126)) and buf[2] == 0 and buf[3] < 126:
            buf[1:4] = bytes((buf[3],))

    _rewriting(monkeypatch, shorten)
    assert _read(frame, ConnectionType.CLIENT, _fast, random.Random(1)) != plain


def test_the_comparison_catches_a_fast_path_that_reads_on_after_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed close or a stray continuation ends wsproto's parser (it reports a close
    with 1002 and reads nothing more, the state still open); a fast path that went on taking
    binary frames after it (session 23's review found a client doing so) differs."""
    sender = Connection(ConnectionType.SERVER)
    for bad in (
        bytes((0x88, 2)) + (999).to_bytes(2, "big"),  # a close with an invalid code
        bytes((0x80, 1)) + b"x",  # a final continuation with no message under way
    ):
        frames = bad + sender.send(BytesMessage(data=b"injected"))
        plain = _read(frames, ConnectionType.CLIENT, _plain, random.Random(3))
        assert ("bytes", b"injected") not in plain[0]
        assert _read(frames, ConnectionType.CLIENT, _fast, random.Random(3)) == plain
    monkeypatch.setattr(wsfast, "_parsing", lambda proto: True)
    assert _read(frames, ConnectionType.CLIENT, _fast, random.Random(3)) != plain
    assert _first_difference(_fast, 600, seed=2301) is not None


def test_a_frame_taken_is_not_delivered_again_when_the_reader_stops_early() -> None:
    """trio-websocket stops iterating when the connection closes: the frames already yielded
    leave the buffer even if the generator is closed mid-way."""
    sender = Connection(ConnectionType.CLIENT)
    conn: Any = Connection(ConnectionType.SERVER)
    conn.receive_data(sender.send(BytesMessage(data=b"one")) + sender.send(BytesMessage(b"two")))
    events = _fast(conn)
    first = next(events)
    assert isinstance(first, BytesMessage) and first.data == b"one"
    events.close()
    assert [e.data for e in _fast(conn)] == [b"two"]  # type: ignore[attr-defined]
    assert list(_fast(conn)) == []


def test_a_fast_frame_not_all_here_waits_in_wsproto_s_buffer() -> None:
    """Half a frame: nothing yielded, wsproto's decoder untouched (between frames); the rest
    arrives: one whole message, as wsproto would give after joining its partial frames."""
    wire = Connection(ConnectionType.CLIENT).send(BytesMessage(data=b"x" * 5000))
    conn: Any = Connection(ConnectionType.SERVER)
    conn.receive_data(wire[:3000])
    assert list(_fast(conn)) == []
    assert conn._proto._frame_decoder.header is None
    conn.receive_data(wire[3000:])
    (message,) = _fast(conn)
    assert isinstance(message, BytesMessage) and message.data == b"x" * 5000
    assert message.message_finished and message.frame_finished


def test_a_frame_over_the_limit_is_wsproto_s() -> None:
    """Over the limit, wsproto hands the payload over as it arrives (trio-websocket then
    enforces ``max_message_size`` as before): partial frames, not one buffered message."""
    wire = Connection(ConnectionType.CLIENT).send(BytesMessage(data=b"y" * (LIMIT + 10)))
    conn: Any = Connection(ConnectionType.SERVER)
    conn.receive_data(wire[: LIMIT // 2])
    partial = list(_fast(conn))
    assert partial and not partial[-1].frame_finished  # type: ignore[attr-defined]


@pytest.mark.parametrize("side", [ConnectionType.CLIENT, ConnectionType.SERVER])
def test_writing_gives_frames_wsproto_reads_as_the_same_message(side: ConnectionType) -> None:
    """Every size around the length encodings; a server's frames are byte for byte
    wsproto's, a client's are masked with a fresh key each time."""
    other = ConnectionType.SERVER if side is ConnectionType.CLIENT else ConnectionType.CLIENT
    for size in (*SIZES, 1 << 20):
        payload = os.urandom(size)
        wsc: Any = _open(side)
        frame = wsfast.binary_frame(wsc, payload)
        if side is ConnectionType.SERVER:
            assert frame == _open(side).send(BytesMessage(data=payload))
        reader = Connection(other)
        reader.receive_data(frame)
        (message,) = reader.events()
        assert isinstance(message, BytesMessage) and message.data == payload
        assert message.message_finished
    if side is ConnectionType.CLIENT:
        wsc = _open(side)
        assert wsfast.binary_frame(wsc, b"same") != wsfast.binary_frame(wsc, b"same")


def test_writing_anything_but_bytes_is_wsproto_s() -> None:
    """A ``bytearray`` or a ``memoryview`` of wider items is framed by wsproto (its length in
    bytes, not items), a ``str`` as text: the same frames."""
    from array import array

    data: Any
    for data in (bytearray(b"abcd"), memoryview(array("H", [1, 2, 3])), "text"):
        event: Event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        expected = _open(ConnectionType.SERVER).send(event)
        assert wsfast.binary_frame(_open(ConnectionType.SERVER), data) == expected


def test_writing_mid_message_or_after_close_is_wsproto_s() -> None:
    """A fragmented message under way: the frame is wsproto's continuation; closed: the
    error wsproto raises."""
    wsc: Any = _open(ConnectionType.SERVER)
    wsc.send(BytesMessage(data=b"first", message_finished=False))
    continuation = wsfast.binary_frame(wsc, b"rest")
    assert continuation[0] == 0x80  # FIN, opcode 0: a continuation
    wsc.send(CloseConnection(code=1000))
    with pytest.raises(LocalProtocolError):
        wsfast.binary_frame(wsc, b"late")


def _open(side: ConnectionType) -> Any:
    """A wsproto ``WSConnection`` whose handshake is done."""
    from wsproto import WSConnection

    wsc = WSConnection(side)
    wsc.connection = Connection(side)
    assert wsc.connection.state is ConnectionState.OPEN
    return wsc


async def test_over_real_connections_messages_pings_limits_and_closes_are_as_before() -> None:
    """Both ends of a real trio-websocket connection on 127.0.0.1 with the fast paths: small
    and large messages both ways, a ping answered, a message over ``max_message_size`` closed
    with 1009 as before."""
    async with _ws_pair() as (client, server):
        assert wsfast.install(client) and wsfast.install(server)
        assert wsfast.installed(client) and wsfast.install(server)  # idempotent
        for size in (0, 10, 200, 70_000, 300_000):
            payload = os.urandom(size)
            rest = wsdirect.write_nowait(client, payload)
            if rest is not None:
                await wsdirect.finish(client, rest)
            assert await server.get_message() == payload
            await server.send_message(payload)
            assert await client.get_message() == payload
        with trio.fail_after(10):
            await client.ping(b"alive")
        server_any: Any = server
        server_any._max_message_size = 1000
        await client.send_message(b"z" * 2000)
        with pytest.raises(ConnectionClosed) as closed:
            await server.get_message()
        assert closed.value.reason is not None and closed.value.reason.code == 1009


def test_install_refuses_what_it_cannot_drive() -> None:
    """No wsproto connection, or one not open yet: nothing installed."""
    assert not wsfast.install(object())

    class NotOpen:
        from wsproto import WSConnection

        _wsproto = WSConnection(ConnectionType.SERVER)  # handshake not done: no connection

    assert not wsfast.install(NotOpen())
