"""The fault proxy on loopback (127.0.0.1, port 0): pass, partition, delay, loss, resets."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from tests.net.helpers import append, heartbeat, make_transport, receive
from univrs.chaos.proxy import (
    DATA_RTO,
    MAX_RTO,
    PARTITION,
    PASS,
    SYN_RTO,
    FaultProxy,
    LinkPolicy,
    retransmissions,
)
from univrs.net.settings import TransportSettings
from univrs.net.transport import open_transport

DEADLINE = 10.0
# The shipped transport settings, with shorter close deadlines for a quick test teardown.


async def _echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


@asynccontextmanager
async def echo_and_proxy(**policy: object) -> AsyncIterator[tuple[FaultProxy, trio.Nursery]]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        proxy = FaultProxy(src="a", dst="b", target=f"127.0.0.1:{port}", rng=random.Random(5))
        proxy.set_policy(LinkPolicy(**policy))  # type: ignore[arg-type]
        await nursery.start(proxy.run)
        yield proxy, nursery
        nursery.cancel_scope.cancel()


async def connect(proxy: FaultProxy) -> trio.SocketStream:
    host, port = proxy.address.rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    with trio.fail_after(DEADLINE):
        while len(buf) < n:
            data = await stream.receive_some(n - len(buf))
            if not data:
                raise EOFError(f"closed after {len(buf)} of {n} bytes")
            buf += data
    return bytes(buf)


async def test_pass_forwards_both_ways() -> None:
    async with echo_and_proxy() as (proxy, _):
        s = await connect(proxy)
        await s.send_all(b"hello" * 1000)
        assert await read_exactly(s, 5000) == b"hello" * 1000
        # the counters move just after a chunk is handed on: wait for them, with a deadline
        with trio.fail_after(DEADLINE):
            while proxy.statistics().bytes < 10000:
                await trio.sleep(0.01)
        stats = proxy.statistics()
        assert stats.connections == 1 and stats.active == 1
        assert stats.bytes == 10000  # 5000 each way
        await s.aclose()


async def test_partition_stalls_then_delivers_in_order_after_healing() -> None:
    async with echo_and_proxy() as (proxy, _):
        s = await connect(proxy)
        await s.send_all(b"1")
        assert await read_exactly(s, 1) == b"1"
        proxy.set_policy(PARTITION)
        await s.send_all(b"234")
        with trio.move_on_after(0.3) as waited:
            await s.receive_some(10)
        assert waited.cancelled_caught, "bytes crossed a partition"
        proxy.set_policy(PASS)
        assert await read_exactly(s, 3) == b"234"


async def test_connection_made_during_a_partition_is_held_until_it_heals() -> None:
    async with echo_and_proxy(partitioned=True) as (proxy, _):
        s = await connect(proxy)
        await s.send_all(b"x")
        with trio.move_on_after(0.3) as waited:
            await s.receive_some(10)
        assert waited.cancelled_caught
        assert proxy.statistics().held == 1
        proxy.set_policy(PASS)
        assert await read_exactly(s, 1) == b"x"


async def test_delay_per_chunk_keeps_order() -> None:
    async with echo_and_proxy(delay=0.1, jitter=0.05) as (proxy, _):
        s = await connect(proxy)
        start = trio.current_time()
        payload = b"".join(i.to_bytes(2, "big") for i in range(200))
        for i in range(0, len(payload), 8):
            await s.send_all(payload[i : i + 8])
        assert await read_exactly(s, len(payload)) == payload
        # two proxied directions, each at least 0.1 s late
        assert trio.current_time() - start >= 0.2


async def test_loss_is_a_retransmission_stall() -> None:
    async with echo_and_proxy(loss=1.0, loss_stall=0.15) as (proxy, _):
        s = await connect(proxy)
        start = trio.current_time()
        await s.send_all(b"ping")
        assert await read_exactly(s, 4) == b"ping"
        assert trio.current_time() - start >= 0.3
        assert proxy.statistics().stalls >= 2


async def test_reset_connections() -> None:
    async with echo_and_proxy() as (proxy, _):
        s = await connect(proxy)
        await s.send_all(b"a")
        assert await read_exactly(s, 1) == b"a"
        assert proxy.reset_connections() == 1
        with pytest.raises((trio.BrokenResourceError, EOFError)):
            for _ in range(50):  # bounded: the reset shows on a read or a later write
                await s.send_all(b"b")
                await read_exactly(s, 1)
        with trio.fail_after(DEADLINE):
            while proxy.statistics().active:
                await trio.sleep(0.01)
        assert proxy.statistics().resets == 1
        # the proxy still accepts new connections
        s2 = await connect(proxy)
        await s2.send_all(b"c")
        assert await read_exactly(s2, 1) == b"c"


async def test_reset_rate_one_resets_on_the_first_chunk() -> None:
    async with echo_and_proxy(reset_rate=1.0) as (proxy, _):
        s = await connect(proxy)
        await s.send_all(b"a")
        with pytest.raises((trio.BrokenResourceError, EOFError)):
            await read_exactly(s, 1)
        assert proxy.statistics().chunks == 0


async def test_target_down_closes_the_dialer() -> None:
    free = trio.socket.socket()
    await free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    async with trio.open_nursery() as nursery:
        proxy = FaultProxy(src="a", dst="b", target=f"127.0.0.1:{port}", rng=random.Random(1))
        await nursery.start(proxy.run)
        s = await connect(proxy)
        with trio.fail_after(DEADLINE):
            assert await s.receive_some(10) == b""
        nursery.cancel_scope.cancel()


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="probability"):
        LinkPolicy(loss=1.5)
    with pytest.raises(ValueError, match="delay"):
        LinkPolicy(delay=-1)
    assert PASS.clean and not PARTITION.clean


async def test_raft_transport_through_the_proxy_one_way_partition() -> None:
    """Two real transports, a -> b through the proxy: a partition of that link stops a's
    messages to b; healing lets later ones through (b -> a is untouched throughout)."""
    a, _a_inbox = make_transport("a")
    b, b_inbox = make_transport("b")
    async with open_transport(a), open_transport(b), trio.open_nursery() as nursery:
        proxy = FaultProxy(
            src="a", dst="b", target=f"127.0.0.1:{b.listen_port}", rng=random.Random(2)
        )
        await nursery.start(proxy.run)
        a.set_peer_addresses({"b": proxy.address})
        a.send(append("a", "b", 1))
        assert await receive(b_inbox) == append("a", "b", 1)
        proxy.set_policy(PARTITION)
        a.send(append("a", "b", 2))
        with trio.move_on_after(0.3) as waited:
            await b_inbox.receive()
        assert waited.cancelled_caught, "a message crossed the partition"
        proxy.set_policy(PASS)
        a.send(append("a", "b", 3))
        got = []
        with trio.fail_after(DEADLINE * 2):
            while append("a", "b", 3) not in got:
                got.append(await b_inbox.receive())
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------- TCP-like healing


def test_retransmission_instants_double_and_are_capped() -> None:
    assert list(itertools.islice(retransmissions(10.0, 0.2), 5)) == pytest.approx(
        [10.2, 10.6, 11.4, 13.0, 16.2]
    )
    late = list(itertools.islice(retransmissions(0.0, 1.0), 12))
    assert late[-1] - late[-2] == MAX_RTO


async def test_retransmit_partition_delivers_at_the_next_retransmission() -> None:
    async with echo_and_proxy() as (proxy, _):
        s = await connect(proxy)
        await s.send_all(b"1")
        assert await read_exactly(s, 1) == b"1"
        proxy.set_policy(LinkPolicy(partitioned=True, retransmit=True))
        sent = trio.current_time()
        await s.send_all(b"2")  # stalls at once: retransmissions at +0.2, +0.6, +1.4 s
        await trio.sleep(0.45)  # healed between the second and the third
        proxy.set_policy(PASS)
        assert await read_exactly(s, 1) == b"2"
        took = trio.current_time() - sent
        print(f"\ndelivered {took:.3f}s after sending; healed after 0.45s")
        assert took >= DATA_RTO * 3 - 0.02  # not at the healing: at the retransmission


async def test_retransmit_connection_made_during_a_partition_waits_for_its_syn() -> None:
    async with echo_and_proxy(partitioned=True, retransmit=True) as (proxy, _):
        start = trio.current_time()
        s = await connect(proxy)
        await s.send_all(b"x")
        await trio.sleep(0.2)
        proxy.set_policy(PASS)
        assert await read_exactly(s, 1) == b"x"
        assert trio.current_time() - start >= SYN_RTO - 0.02  # the SYN's first retransmission


async def test_a_link_cut_one_way_is_back_soon_after_healing() -> None:
    """a -> b through the proxy, a sending heartbeats every 50 ms like a leader; the link cut
    for 3.2 s and healed the way TCP sees a real network heal (retransmit). Without pings and
    fresh dials b heard a again only at TCP's next retransmission (~3 s later)."""
    a, _a_inbox = make_transport("a", settings=attrs.evolve(TransportSettings(), close_timeout=0.5))
    b, b_inbox = make_transport("b")
    async with open_transport(a), open_transport(b), trio.open_nursery() as nursery:
        proxy = FaultProxy(
            src="a", dst="b", target=f"127.0.0.1:{b.listen_port}", rng=random.Random(3)
        )
        await nursery.start(proxy.run)
        a.set_peer_addresses({"b": proxy.address})

        async def leader() -> None:
            for ctx in itertools.count(1):
                a.send(heartbeat("a", "b", ctx=ctx))
                await trio.sleep(0.05)

        nursery.start_soon(leader)
        await receive(b_inbox)
        proxy.set_policy(LinkPolicy(partitioned=True, retransmit=True))
        await trio.sleep(0.2)
        while True:  # whatever was on its way before the cut
            with trio.move_on_after(0.3):
                await b_inbox.receive()
                continue
            break
        await trio.sleep(3.2 - 0.5)
        proxy.set_policy(PASS)
        healed = trio.current_time()
        await receive(b_inbox, timeout=DEADLINE)
        took = trio.current_time() - healed
        print(f"\nb heard a {took:.3f}s after healing; a: {a.statistics().peer('b')}")
        assert took < 1.5
        nursery.cancel_scope.cancel()
