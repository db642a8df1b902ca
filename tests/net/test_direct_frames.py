"""Raft frames in fewer trio task steps (univrs/net/wsdirect.py, univrs/net/inbound_frames.py;
issue 14, s16-links): a link writes its frame in the step that wakes it, a received frame is
delivered on the library's reader task, and neither changes what goes on the wire, its
order, its limits or what a hostile peer gets (tests/net/test_transport_sockets.py HOSTILE
goes through the same paths). Real sockets on 127.0.0.1 unless said otherwise."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)

from tests.net.helpers import FAST, addr, append, heartbeat, make_transport, receive, wait_until
from univrs.net import wsdirect
from univrs.net.inbound_frames import _Reading
from univrs.net.stats import PeerCounters
from univrs.net.transport import RaftTransport, open_transport
from univrs.raft.messages import Message

QUIET = attrs.evolve(FAST, ping_interval=60.0, ping_timeout=60.0)  # no pings during a count


class StepCounter(trio.abc.Instrument):
    """Task steps by task name while installed."""

    def __init__(self) -> None:
        self.steps: collections.Counter[str] = collections.Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] += 1

    def of(self, fragment: str) -> int:
        return sum(n for name, n in self.steps.items() if fragment in name)


@asynccontextmanager
async def counting() -> AsyncIterator[StepCounter]:
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)


@asynccontextmanager
async def linked(
    inbox_size: int = 100,
) -> AsyncIterator[tuple[RaftTransport, RaftTransport, trio.MemoryReceiveChannel[Message]]]:
    """Transports a and b (no pings), a dialed b (b never dials a: one connection) and b
    received a's first heartbeat (ctx 0): (a, b, b's inbox of ``inbox_size``)."""
    a, _ = make_transport("a", settings=QUIET)
    b, b_inbox = make_transport("b", settings=QUIET, inbox_size=inbox_size)
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        a.send(heartbeat("a", "b", ctx=0))
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=0)
        yield a, b, b_inbox


def test_the_pinned_trio_websocket_has_what_wsdirect_drives() -> None:
    """The direct paths rely on trio-websocket 0.12.2's internals; another version without
    them falls back to the library's public path (``usable``), which this test would flag."""
    ws = WebSocketConnection(trio.testing.memory_stream_pair()[0], _server_proto())
    assert wsdirect.usable(ws)
    assert not wsdirect.usable(object())  # type: ignore[arg-type]


def _server_proto() -> Any:
    from wsproto import ConnectionType, WSConnection

    return WSConnection(ConnectionType.SERVER)


async def test_a_link_writes_each_frame_in_the_step_that_wakes_it() -> None:
    """One step of the link's task per frame (the library's send lock and the socket's send
    made it three: wake and yield at the lock, write and yield, return and park)."""
    async with linked() as (a, _, b_inbox):
        frames = 30
        async with counting() as counter:
            for i in range(1, frames + 1):
                a.send(heartbeat("a", "b", ctx=i))  # one driver step: one frame
                assert await receive(b_inbox) == heartbeat("a", "b", ctx=i)
        assert counter.of("PeerLink.run") <= frames + 2, counter.steps
        assert a.statistics().peer("b").frames_sent == frames + 1


async def test_a_received_frame_costs_its_reader_one_step_and_the_handler_none() -> None:
    """The receiving node spends one task step per frame (the library's reader decodes,
    checks and delivers it); it spent three (the reader's hand-off through its channel and
    its next read, then the handler's step)."""
    async with linked() as (a, b, b_inbox):  # b never dials a: one connection
        frames = 30
        async with counting() as counter:
            for i in range(1, frames + 1):
                a.send(append("a", "b", i))
                assert await receive(b_inbox) == append("a", "b", i)
        reading = counter.of("_reader_task") + counter.of("_run_handler")
        assert reading <= frames + 2, counter.steps
        assert b.statistics().peer("a").messages_received == frames + 1


async def test_frames_handed_to_the_handler_keep_their_order() -> None:
    """An inbox that fills makes the reader hand a frame's rest to the handler task, which
    waits for room (the backpressure); nothing is lost or overtaken on the way back to the
    direct path (the rule that keeps the order: the next test). Batches of three into an
    inbox of one."""
    async with linked(inbox_size=1) as (a, _, b_inbox):
        sent = []
        for step in range(40):
            batch = [heartbeat("a", "b", ctx=1 + step * 3 + k) for k in range(3)]
            for msg in batch:
                a.send(msg)
            sent += batch
            await trio.sleep(0)  # the link's frame, then more
        got: list[Message] = []
        with trio.fail_after(20):
            while len(got) < len(sent):
                got.append(await b_inbox.receive())
                for _ in range(3):
                    await trio.sleep(0)  # let the reader and the handler interleave
        assert got == sent
        assert a.statistics().peer("b").dropped == 0


async def test_a_frame_larger_than_the_socket_takes_is_finished_under_the_send_lock() -> None:
    """A frame the kernel takes only part of keeps the connection's send lock until its rest
    is written: a ping or another message waits behind it instead of landing inside it (the
    peer's wsproto would read garbage). The peer reads both messages whole, in order."""
    big = b"x" * (8 * 1024 * 1024)
    async with _ws_pair() as (client, server):
        rest = wsdirect.write_nowait(client, big)
        assert rest is not None and rest.wire is not None  # the socket took part of it
        assert client._stream_lock.locked()
        got: list[bytes | str] = []

        async def read_two() -> None:
            got.append(await server.get_message())
            got.append(await server.get_message())

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_two)
                nursery.start_soon(client.send_message, b"after")  # waits for the lock
                await wsdirect.finish(client, rest)  # the task that holds the lock
        assert got == [big, b"after"]
        assert not client._stream_lock.locked()
        # The lock free and the socket empty: a frame goes out whole at once.
        assert wsdirect.write_nowait(client, b"small") is None
        assert await server.get_message() == b"small"


async def test_a_link_frame_is_written_at_once_on_plain_tcp() -> None:
    async with _ws_pair() as (client, server):
        assert wsdirect.write_nowait(client, b"hello") is None
        assert await server.get_message() == b"hello"
        await client.aclose()
        with pytest.raises(ConnectionClosed):
            wsdirect.write_nowait(client, b"late")


@attrs.define
class _Conn:
    scope: trio.CancelScope
    hello: Any


async def test_a_cancelled_or_closing_connection_delivers_nothing_on_the_reader() -> None:
    """What the reader delivers directly stops with the connection: once its scope is
    cancelled (a newer connection, an incarnation no longer listed, a fence), once it is
    closing, once its handler stopped reading, the frame is handed back (to a handler that
    will not deliver it)."""
    transport, inbox = make_transport("b", listen_addr=None)
    frame = transport.encode(heartbeat("a", "b", ctx=1))

    async with _ws_pair() as (_client, server):

        def reading(**change: Any) -> _Reading:
            conn = _Conn(scope=trio.CancelScope(), hello=attrs.make_class("H", ["src"])("a"))
            r = _Reading(
                transport,
                transport.inbox,  # type: ignore[arg-type]
                server,
                conn,  # type: ignore[arg-type]
                PeerCounters(),
                None,
            )
            for key, value in change.items():
                setattr(r, key, value)
            return r

        live = reading()
        assert live.take(frame) is None
        assert inbox.receive_nowait() == heartbeat("a", "b", ctx=1)
        cancelled = reading()
        cancelled.conn.scope.cancel()
        assert cancelled.take(frame) is frame
        assert reading(live=False).take(frame) is frame
        assert reading().take("text") == "text"
        assert reading().take(b"{not json") == b"{not json"
        forged = transport.encode(heartbeat("evil", "b"))
        assert reading().take(forged) is forged
        await server.aclose()
        assert reading().take(frame) is frame
        assert inbox.statistics().current_buffer_used == 0  # nothing but the live one's


@asynccontextmanager
async def _ws_pair() -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection]]:
    """A client and a server websocket over a real TCP connection on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[WebSocketConnection] = []

        async def serve() -> None:
            stream = await listeners[0].accept()
            await listeners[0].aclose()
            request = await wrap_server_stream(nursery, stream, max_message_size=64 << 20)
            accepted.append(await request.accept())

        nursery.start_soon(serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = await wrap_client_stream(
            nursery, stream, "127.0.0.1", "/raft", max_message_size=64 << 20
        )
        await wait_until(lambda: bool(accepted))
        try:
            yield client, accepted[0]
        finally:
            nursery.cancel_scope.cancel()  # no await after it: a Cancelled would hide a failure


async def test_a_tap_hands_over_everything_after_something_it_handed_over() -> None:
    """``FrameTap``: once a message was handed to the consumer, later ones are handed over
    too (``take`` is not asked) until the consumer finished each: the order of the frames is
    the order they are consumed in. What was queued before the tap went in counts."""
    send, recv = trio.open_memory_channel[Any](8)
    taken: list[object] = []

    def take(message: bytes | str) -> object | None:
        if message == b"bad":
            return message  # declined: the consumer deals with it
        taken.append(message)
        return None

    class Conn:
        _send_channel = send
        _recv_channel = recv

    await send.send(b"queued")
    conn: Any = Conn()
    tap = wsdirect.FrameTap.install(conn, take)
    assert conn._send_channel is tap and tap.pending == 1
    await tap.send(b"1")  # behind the queued one: handed over
    assert taken == [] and recv.receive_nowait() == b"queued"
    tap.finished()
    assert recv.receive_nowait() == b"1"
    tap.finished()
    await tap.send(b"2")  # nothing pending: taken
    await tap.send(b"bad")
    await tap.send(b"3")  # behind "bad": handed over, not taken
    assert taken == [b"2"]
    assert recv.receive_nowait() == b"bad"
    tap.finished()
    assert recv.receive_nowait() == b"3"
    tap.finished()
    await tap.send(b"4")
    assert taken == [b"2", b"4"]
    await tap.aclose()
    with pytest.raises(trio.EndOfChannel):
        recv.receive_nowait()


async def test_a_large_frame_is_read_in_few_steps() -> None:
    """The router's connections read 64 KiB at a time (``RECEIVE_BUFFER``): a 40 KB frame
    costs the reader a step or two, not one per 4 KiB (the library's default, with which the
    reader yielded after every read that found more data waiting: about ten)."""
    async with linked() as (a, _, b_inbox):
        frames = 20
        async with counting() as counter:
            for i in range(1, frames + 1):
                a.send(append("a", "b", i, size=20_000))  # hex in the test codec: 40 KB
                assert await receive(b_inbox) == append("a", "b", i, size=20_000)
        assert counter.of("_reader_task") <= 2 * frames + 2, counter.steps
