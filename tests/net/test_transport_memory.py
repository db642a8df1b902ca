"""Transport logic over in-memory streams with trio's autojump clock: timers, backoff, priority.

The connector is injected, so these tests decide what "the network" does: hang, refuse, hand
the stream to another transport's router, break, or pause.
"""

from __future__ import annotations

import itertools
import logging

import attrs
import pytest
import trio
import trio.testing

from tests.net.helpers import (
    FAST,
    NO_JITTER,
    Network,
    append,
    heartbeat,
    make_transport,
    receive,
    wait_until,
)
from univrs.net.transport import open_transport
from univrs.raft.messages import AppendEntries, Heartbeat


async def test_hung_handshake_times_out_and_redials_with_growing_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dials: list[float] = []
    silent_ends: list[trio.abc.Stream] = []

    async def paused_peer(host: str, port: int) -> trio.abc.Stream:
        # TCP connects, but the peer never answers the websocket handshake (SIGSTOP).
        dials.append(trio.current_time())
        client, server = trio.testing.memory_stream_pair()
        silent_ends.append(server)
        return client

    a, _ = make_transport(
        "a", peers={"b": "b:7000"}, settings=NO_JITTER, connector=paused_peer, listen_addr=None
    )
    per_phase = round(NO_JITTER.connect_timeout / NO_JITTER.dial_interval)  # 8 attempts
    async with open_transport(a):
        a.send(heartbeat("a", "b"))
        await wait_until(lambda: len(dials) >= 4 * per_phase + 1, timeout=60)
        stats = a.statistics().peer("b")
    # Within each dialing phase of connect_timeout (2 s), a fresh attempt every dial_interval;
    # between phases the backoff: 1, 2, 4, 4 (capped). Phases start 3, 4, 6, 6 s apart.
    phases = dials[::per_phase][:5]
    assert [round(t1 - t0, 6) for t0, t1 in itertools.pairwise(phases)] == [3.0, 4.0, 6.0, 6.0]
    within = [round(t1 - t0, 6) for t0, t1 in itertools.pairwise(dials[:per_phase])]
    assert within == [NO_JITTER.dial_interval] * (per_phase - 1)
    assert stats.connect_failures == 4
    assert not stats.connected
    assert stats.queued == 1  # the heartbeat waits for a connection


async def test_refused_dials_back_off_then_deliver_when_the_peer_appears(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="univrs.net")
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        a, _ = net.dialer(settings=NO_JITTER)
        b, b_inbox = make_transport("b", listen_addr=None)
        async with open_transport(a), open_transport(b):
            a.send(heartbeat("a", "b", ctx=1))
            await wait_until(lambda: len(net.dials) >= 3, timeout=60)
            net.nodes["b"] = b  # the peer comes up
            assert await receive(b_inbox, timeout=60) == heartbeat("a", "b", ctx=1)
            stats = a.statistics().peer("b")
            assert stats.connected and stats.connect_failures >= 3 and stats.reconnects == 0
            assert b.statistics().peer("a").messages_received == 1
        nursery.cancel_scope.cancel()
    gaps = [round(t1 - t0, 6) for (t0, _), (t1, _) in zip(net.dials, net.dials[1:], strict=False)]
    assert gaps[:2] == [1.0, 2.0]  # refusals are immediate: the gaps are the backoff itself
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # One WARNING for the first failure of the streak; the rest at DEBUG.
    assert sum("cannot reach b" in r.getMessage() for r in warnings) == 1


async def test_two_transports_exchange_messages_in_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        a, a_inbox = net.dialer()
        b, b_inbox = net.dialer("b", "a")
        net.nodes.update(a=a, b=b)
        async with open_transport(a), open_transport(b):
            for i in range(1, 4):
                a.send(append("a", "b", i))
                b.send(heartbeat("b", "a", ctx=i))
            assert [await receive(b_inbox) for _ in range(3)] == [
                append("a", "b", i) for i in range(1, 4)
            ]
            assert [await receive(a_inbox) for _ in range(3)] == [
                heartbeat("b", "a", ctx=i) for i in range(1, 4)
            ]
            sa, sb = a.statistics().peer("b"), b.statistics().peer("a")
            assert sa.messages_sent == 3 and sb.messages_received == 3
            assert sa.bytes_sent == sb.bytes_received > 0
            assert sb.messages_sent == 3 and sa.messages_received == 3
            assert sa.inbound == 1 and sb.inbound == 1
        nursery.cancel_scope.cancel()


async def test_broken_connection_is_redialed(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        a, _ = net.dialer()
        b, b_inbox = net.listener()
        async with open_transport(a), open_transport(b):
            a.send(heartbeat("a", "b", ctx=1))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
            await trio.aclose_forcefully(net.server_ends[0])  # the network breaks
            await wait_until(lambda: a.statistics().peer("b").reconnects == 1)
            a.send(heartbeat("a", "b", ctx=2))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
            assert len(net.dials) == 2
        nursery.cancel_scope.cancel()


async def test_heartbeat_queued_behind_full_batch_queue_goes_out_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = attrs.evolve(FAST, max_bulk_queue=4)
    gate = trio.Event()
    async with trio.open_nursery() as nursery:
        net = Network(nursery)

        async def gated(host: str, port: int) -> trio.abc.Stream:
            await gate.wait()
            return await net.connect(host, port)

        a, _ = make_transport(
            "a", peers={"b": "b:1"}, settings=settings, connector=gated, listen_addr=None
        )
        b, b_inbox = net.listener()
        async with open_transport(a), open_transport(b):
            for i in range(1, 11):
                a.send(append("a", "b", i))
            a.send(heartbeat("a", "b", ctx=7))
            assert a.statistics().peer("b").dropped == 6  # the oldest AppendEntries
            gate.set()
            got = [await receive(b_inbox) for _ in range(5)]
        nursery.cancel_scope.cancel()
    assert got[0] == heartbeat("a", "b", ctx=7)
    assert got[1:] == [append("a", "b", i) for i in range(7, 11)]


class PausableStream(trio.abc.Stream):
    """Wraps the server end; while paused it stops reading, like a SIGSTOPped process."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.running = trio.Event()
        self.running.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await self.running.wait()
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_send_to_a_paused_peer_times_out_and_redials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ends: list[PausableStream] = []
    async with trio.open_nursery() as nursery:
        b, b_inbox = make_transport("b", listen_addr=None)

        async def connect(host: str, port: int) -> trio.abc.Stream:
            # lockstep: send_all completes only as the other side reads, like a full TCP window
            client, server = trio.testing.lockstep_stream_pair()
            end = PausableStream(server)
            ends.append(end)
            nursery.start_soon(b.router.handle_connection, end)
            return client

        a, _ = make_transport("a", peers={"b": "b:1"}, connector=connect, listen_addr=None)
        async with open_transport(a), open_transport(b):
            a.send(heartbeat("a", "b", ctx=1))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
            ends[0].running = trio.Event()  # SIGSTOP
            start = trio.current_time()
            # The read already in progress takes the first frame; the second finds nobody.
            a.send(append("a", "b", 1, size=1000))
            a.send(append("a", "b", 2, size=1000))
            assert await receive(b_inbox) == append("a", "b", 1, size=1000)
            await wait_until(lambda: a.statistics().peer("b").reconnects == 1, timeout=60)
            assert trio.current_time() - start >= FAST.send_timeout
            assert a.statistics().peer("b").dropped == 1  # the frame stuck in the dead socket
            # A write was pending all along: its deadline decides, not the pings.
            assert a.statistics().peer("b").dead_links == 0
            a.send(heartbeat("a", "b", ctx=2))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
        nursery.cancel_scope.cancel()


async def test_inbound_connection_without_handshake_or_hello_is_dropped(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    from trio_websocket import ConnectionClosed, wrap_client_stream

    b, _ = make_transport("b", listen_addr=None)
    async with open_transport(b), trio.open_nursery() as nursery:
        # 1. TCP only, no websocket handshake: dropped after handshake_timeout.
        _client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(b.router.handle_connection, server)
        await wait_until(lambda: b.statistics().rejected_connections == 1, timeout=60)
        # 2. Websocket handshake, then silence: closed with 1008 for the missing hello.
        client2, server2 = trio.testing.memory_stream_pair()
        nursery.start_soon(b.router.handle_connection, server2)
        ws = await wrap_client_stream(nursery, client2, "b:1", "/raft")  # type: ignore[arg-type]
        start = trio.current_time()
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(60):
                await ws.get_message()
        assert info.value.reason is not None and info.value.reason.code == 1008
        assert "no hello" in (info.value.reason.reason or "")
        assert trio.current_time() - start >= FAST.handshake_timeout
        nursery.cancel_scope.cancel()
    assert any("no websocket handshake" in r.getMessage() for r in caplog.records)


async def test_changed_address_redials_the_new_one(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        a, _ = make_transport("a", peers={"b": "old:1"}, connector=net.connect, listen_addr=None)
        b, b_inbox = make_transport("b", listen_addr=None)
        net.nodes["new"] = b
        async with open_transport(a), open_transport(b):
            await wait_until(lambda: any(h == "old" for _, h in net.dials))
            a.set_peer_addresses({"b": "new:1", "a": "ignored:1"})
            a.send(heartbeat("a", "b", ctx=3))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=3)
            assert a.statistics().peer("b").address == "new:1"
            assert a.peer_addresses() == {"b": "new:1"}
            # A removed peer's link stops and its messages are dropped, not queued.
            a.set_peer_addresses({})
            a.send(heartbeat("a", "b", ctx=4))
            stats = a.statistics().peer("b")
            assert stats.address is None and stats.queued == 0 and stats.dropped >= 1
        nursery.cancel_scope.cancel()


def test_bad_peer_address_is_refused_before_any_change() -> None:
    a, _ = make_transport("a", peers={"b": "b:1"}, listen_addr=None)
    with pytest.raises(ValueError, match="address of c"):
        a.set_peer_addresses({"b": "b:2", "c": "nonsense"})
    assert a.statistics().peer("b").address == "b:1"


async def test_message_kinds_keep_their_types(autojump_clock: trio.testing.MockClock) -> None:
    # Guard against a fake codec that would make every other test pass vacuously.
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        a, _ = net.dialer()
        b, b_inbox = net.listener()
        async with open_transport(a), open_transport(b):
            a.send(append("a", "b", 5, size=3))
            a.send(heartbeat("a", "b", ctx=8))
            got = {type(await receive(b_inbox)) for _ in range(2)}
        nursery.cancel_scope.cancel()
    assert got == {AppendEntries, Heartbeat}


async def test_refused_hello_backs_off_and_warns_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="univrs.net")
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        a, _ = net.dialer(settings=NO_JITTER, cluster_id="other")
        b, b_inbox = net.listener()
        async with open_transport(a), open_transport(b):
            a.send(heartbeat("a", "b"))
            await wait_until(lambda: len(net.dials) >= 4, timeout=120)
            assert b.statistics().rejected_connections >= 3
            assert b_inbox.statistics().current_buffer_used == 0  # nothing got through
        nursery.cancel_scope.cancel()
    gaps = [t1 - t0 for (t0, _), (t1, _) in itertools.pairwise(net.dials)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0 and gaps[2] >= 4.0  # backoff grows, never resets
    lost = [
        r
        for r in caplog.records
        if r.name == "univrs.net" and r.getMessage().startswith("lost connection to b")
    ]
    assert len(lost) >= 3
    assert "cluster id mismatch" in lost[0].getMessage()
    assert [r.levelno for r in lost][:3] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
