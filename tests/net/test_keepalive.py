"""Dead links and quick redials, over in-memory streams with trio's autojump clock.

A partition that drops packets does not close a connection: writes still land in buffers and
nothing comes back. The link must find that out by itself (pings) and redial, and a redial
must get through as soon as the network heals, even while an earlier attempt hangs.
"""

from __future__ import annotations

import attrs
import trio
import trio.testing

from tests.net.helpers import FAST, append, heartbeat, make_transport, receive, wait_until
from tests.net.test_transport_memory import PausableStream
from univrs.net.backoff import BackoffPolicy
from univrs.net.settings import TransportSettings
from univrs.net.transport import open_transport

# The shipped keepalive and dialing timings, with FAST's other deadlines; a small fixed
# backoff so that the phases of dialing are easy to reason about.
KEEPALIVE = attrs.evolve(
    FAST,
    ping_interval=TransportSettings().ping_interval,
    ping_timeout=TransportSettings().ping_timeout,
    dial_interval=TransportSettings().dial_interval,
    backoff=BackoffPolicy(initial=0.05, maximum=0.05, jitter=0.0),
)


async def test_a_silently_cut_link_is_found_dead_by_its_pings_and_comes_back_after_healing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ends: list[PausableStream] = []
    cut = False
    async with trio.open_nursery() as nursery:
        b, b_inbox = make_transport("b", listen_addr=None)

        async def connect(host: str, port: int) -> trio.abc.Stream:
            # Unbounded buffers: writes never block, as with a kernel buffer over a partition.
            client, server = trio.testing.memory_stream_pair()
            end = PausableStream(server)
            if cut:  # the partition drops what this connection sends: b never hears it
                end.running = trio.Event()
            ends.append(end)
            nursery.start_soon(b.router.handle_connection, end)
            return client

        a, _ = make_transport(
            "a", peers={"b": "b:1"}, settings=KEEPALIVE, connector=connect, listen_addr=None
        )
        async with open_transport(a), open_transport(b):
            a.send(heartbeat("a", "b", ctx=1))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
            cut = True
            for end in ends:
                end.running = trio.Event()
            start = trio.current_time()
            # The read already in progress takes this one; nothing after it gets through.
            a.send(heartbeat("a", "b", ctx=2))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
            await wait_until(lambda: a.statistics().peer("b").dead_links == 1, timeout=60)
            found = trio.current_time() - start
            assert found <= KEEPALIVE.ping_interval + KEEPALIVE.ping_timeout + 0.01
            assert not a.statistics().peer("b").connected
            await trio.sleep(0.6)  # a while into the dialing; the attempts hang
            cut = False  # healed; the old connection and the pending attempts stay lost
            healed = trio.current_time()
            a.send(heartbeat("a", "b", ctx=3))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=3)
            assert trio.current_time() - healed <= KEEPALIVE.dial_interval + 0.01
            stats = a.statistics().peer("b")
            assert stats.connected and stats.reconnects == 1 and stats.dead_links == 1
        nursery.cancel_scope.cancel()


async def test_a_fresh_attempt_gets_through_while_an_earlier_one_hangs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dials: list[float] = []
    async with trio.open_nursery() as nursery:
        b, b_inbox = make_transport("b", listen_addr=None)

        async def connect(host: str, port: int) -> trio.abc.Stream:
            dials.append(trio.current_time())
            client, server = trio.testing.memory_stream_pair()
            end = PausableStream(server)
            if len(dials) == 1:  # the first SYN was lost: this attempt never gets an answer
                end.running = trio.Event()
            nursery.start_soon(b.router.handle_connection, end)
            return client

        a, _ = make_transport(
            "a", peers={"b": "b:1"}, settings=KEEPALIVE, connector=connect, listen_addr=None
        )
        async with open_transport(a), open_transport(b):
            start = trio.current_time()
            a.send(heartbeat("a", "b", ctx=1))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
            took = trio.current_time() - start
            # Not after connect_timeout and a backoff: the second attempt, dial_interval later.
            assert took <= KEEPALIVE.dial_interval + 0.01
            assert len(dials) == 2
            stats = a.statistics().peer("b")
            assert stats.connected and stats.connect_failures == 0 and stats.reconnects == 0
            # The abandoned attempt never sent a hello: b counts one connection from a.
            assert b.statistics().peer("a").inbound == 1
        nursery.cancel_scope.cancel()


async def test_a_live_idle_link_answers_its_pings_and_stays_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        b, b_inbox = make_transport("b", listen_addr=None)

        async def connect(host: str, port: int) -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(b.router.handle_connection, server)
            return client

        a, _ = make_transport(
            "a", peers={"b": "b:1"}, settings=KEEPALIVE, connector=connect, listen_addr=None
        )
        async with open_transport(a), open_transport(b):
            a.send(heartbeat("a", "b", ctx=1))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
            await trio.sleep(30)  # sixty pings
            stats = a.statistics().peer("b")
            assert stats.connected and stats.dead_links == 0 and stats.reconnects == 0
        nursery.cancel_scope.cancel()


async def test_a_slow_write_is_not_a_dead_link(autojump_clock: trio.testing.MockClock) -> None:
    """The peer stops reading for 3 s in the middle of a large frame (a busy or slow reader,
    a full window): the write's own deadline decides, the pings do not cut the link."""
    settings = attrs.evolve(KEEPALIVE, send_timeout=5.0)
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

        a, _ = make_transport(
            "a", peers={"b": "b:1"}, settings=settings, connector=connect, listen_addr=None
        )
        async with open_transport(a), open_transport(b):
            a.send(heartbeat("a", "b", ctx=1))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
            ends[0].running = trio.Event()  # the reader stalls ...
            a.send(append("a", "b", 1, size=200_000))  # ... in the middle of this frame
            await trio.sleep(3.0)  # twice ping_interval + ping_timeout
            ends[0].running.set()
            assert await receive(b_inbox) == append("a", "b", 1, size=200_000)
            a.send(heartbeat("a", "b", ctx=2))
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
            await trio.sleep(5.0)  # pings flow again
            stats = a.statistics().peer("b")
            assert stats.dead_links == 0 and stats.reconnects == 0 and stats.connected
        nursery.cancel_scope.cancel()
