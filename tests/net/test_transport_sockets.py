"""The transport over real sockets on 127.0.0.1 (port 0): delivery, hostile peers, restarts."""

from __future__ import annotations

import contextlib
import logging
import random

import attrs
import cbor2
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketRequest,
    open_websocket,
)

from tests.net import fake_codec
from tests.net.helpers import (
    CLUSTER,
    FAST,
    addr,
    append,
    heartbeat,
    make_transport,
    port,
    receive,
    wait_until,
)
from univrs.config import NodeConfig
from univrs.net.hello import WIRE_VERSION, Hello, encode_hello
from univrs.net.transport import RaftTransport, open_transport
from univrs.raft.messages import Message, RequestVote
from univrs.server.wiring import transport_from_config

SMALL = attrs.evolve(FAST, max_payload_size=64 * 1024)


async def test_two_transports_exchange_messages_both_ways() -> None:
    a, a_inbox = make_transport("a")
    b, b_inbox = make_transport("b")
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        b.set_peer_addresses({"a": addr(a)})
        vote = RequestVote(term=2, src="a", dst="b", last_log_index=4, last_log_term=1)
        a.send(vote)
        a.send(append("a", "b", 1, size=200_000))
        assert await receive(b_inbox) == vote
        assert await receive(b_inbox) == append("a", "b", 1, size=200_000)
        b.send(heartbeat("b", "a", ctx=3))
        assert await receive(a_inbox) == heartbeat("b", "a", ctx=3)
        sa, sb = a.statistics().peer("b"), b.statistics().peer("a")
        assert sa.connected and sb.connected
        assert sa.messages_sent == 2 and sb.messages_received == 2
        assert sa.bytes_sent == sb.bytes_received > 200_000
        assert sa.dropped == 0 and sb.dropped == 0


async def test_default_codec_is_univrs_codec() -> None:
    pytest.importorskip("univrs.codec")
    send_a, _a_inbox = trio.open_memory_channel[Message](10)
    send_b, b_inbox = trio.open_memory_channel[Message](10)
    a = RaftTransport(node_id="a", cluster_id=CLUSTER, inbox=send_a, rng=random.Random(1))
    b = RaftTransport(node_id="b", cluster_id=CLUSTER, inbox=send_b, rng=random.Random(2))
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        a.send(append("a", "b", 1))
        assert await receive(b_inbox) == append("a", "b", 1)


Frame = bytes | str


def hello(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "version": WIRE_VERSION,
        "cluster": CLUSTER,
        "src": "evil",
        "dst": "b",
    }
    fields.update(overrides)
    return encode_hello(Hello(**fields))  # type: ignore[arg-type]


def frame(msg: Message) -> bytes:
    return fake_codec.encode(msg)


def batch(*msgs: Message) -> bytes:
    return fake_codec.encode_batch([frame(m) for m in msgs])


# Each case: the frames a hostile client sends, the close code B answers with, a log fragment.
HOSTILE: dict[str, tuple[list[Frame], int, str]] = {
    "wrong cluster": ([hello(cluster="other")], 1008, "cluster id mismatch"),
    "wrong version": ([hello(version=99)], 1008, "wire version 99 unsupported"),
    "wrong node": ([hello(dst="c")], 1008, "addressed to node 'c'"),
    "garbage hello": ([b"\xff\xfe\xfd"], 1002, "malformed hello"),
    "not a hello": ([cbor2.dumps({"x": 1})], 1002, "not a univrs raft hello"),
    "malformed message": ([hello(), b"{not json"], 1002, "malformed message"),
    "text frame": ([hello(), "hi"], 1003, "text frame"),
    "spoofed source": ([hello(), frame(heartbeat("a", "b"))], 1008, "on 'evil''s connection"),
    # A batch frame is checked whole before any of it is delivered (the test's next receive
    # would see the first heartbeat otherwise).
    "spoofed source in a batch": (
        [hello(), batch(heartbeat("evil", "b"), heartbeat("a", "b"))],
        1008,
        "on 'evil''s connection",
    ),
    "malformed message in a batch": (
        [hello(), fake_codec.encode_batch([frame(heartbeat("evil", "b")), b"{not json"])],
        1002,
        "malformed message",
    ),
    "oversized frame": ([hello(), b"x" * (100 * 1024)], 1009, "larger than max_payload_size"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_connection_is_closed_alone(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    frames, code, fragment = HOSTILE[case]
    caplog.set_level(logging.INFO, logger="univrs.net")
    a, _ = make_transport("a")
    b, b_inbox = make_transport("b", settings=SMALL)
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        a.send(heartbeat("a", "b", ctx=1))
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)

        async with open_websocket("127.0.0.1", port(b), "/raft", use_ssl=False) as ws:
            for f in frames:
                await ws.send_message(f)
            with pytest.raises(ConnectionClosed), trio.fail_after(10):
                await ws.get_message()
            assert ws.closed is not None and ws.closed.code == code
            # An unauthenticated dialer never learns our cluster id (issue 12, item 7).
            assert CLUSTER not in (ws.closed.reason or "")

        # The good connection and the listener are unaffected.
        a.send(heartbeat("a", "b", ctx=2))
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
        sa = a.statistics().peer("b")
        assert sa.reconnects == 0 and sa.connect_failures == 0 and sa.dropped == 0
        assert b.statistics().peer("a").inbound == 1
        await wait_until(lambda: b.statistics().rejected_connections == 1)
        c, _ = make_transport("c")
        async with open_transport(c):
            c.set_peer_addresses({"b": addr(b)})
            c.send(heartbeat("c", "b", ctx=3))
            assert await receive(b_inbox) == heartbeat("c", "b", ctx=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    refusals = [w for w in warnings if w.startswith("closing raft connection")]
    assert len(refusals) == 1 and fragment in refusals[0], warnings
    assert "\n" not in refusals[0]


async def test_unknown_path_is_refused_and_extra_routes_are_served() -> None:
    b, _ = make_transport("b")

    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with contextlib.suppress(ConnectionClosed):
            await ws.send_message(await ws.get_message())
        await ws.aclose()

    b.add_route("/client", echo)
    with pytest.raises(ValueError, match="already taken"):
        b.add_route("/raft", echo)
    async with open_transport(b):
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket("127.0.0.1", port(b), "/nope", use_ssl=False):
                pass
        assert info.value.status_code == 404
        async with open_websocket("127.0.0.1", port(b), "/client", use_ssl=False) as ws:
            await ws.send_message(b"ping")
            with trio.fail_after(10):
                assert await ws.get_message() == b"ping"
        assert b.statistics().rejected_connections == 1


async def test_oversized_outbound_message_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _ = make_transport("a", settings=SMALL)
    b, b_inbox = make_transport("b")
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        a.send(append("a", "b", 1, size=40_000))  # hex-encoded by the test codec: 80 kB
        a.send(append("a", "b", 2, size=100))
        assert await receive(b_inbox) == append("a", "b", 2, size=100)
        stats = a.statistics().peer("b")
        assert stats.dropped == 1 and stats.messages_sent == 1 and stats.reconnects == 0
    assert any(
        r.levelno == logging.WARNING and "dropped AppendEntries to b" in r.getMessage()
        for r in caplog.records
    )


async def test_reconnects_after_the_peer_restarts() -> None:
    a, _ = make_transport("a")
    b1, inbox1 = make_transport("b")
    async with open_transport(a):
        async with open_transport(b1):
            port = b1.listen_port
            a.set_peer_addresses({"b": addr(b1)})
            a.send(heartbeat("a", "b", ctx=1))
            assert await receive(inbox1) == heartbeat("a", "b", ctx=1)
        # b is down: a notices, queues what it is given, and keeps redialing.
        await wait_until(lambda: not a.statistics().peer("b").connected)
        a.send(heartbeat("a", "b", ctx=2))
        await wait_until(lambda: a.statistics().peer("b").connect_failures >= 1)
        b2, inbox2 = make_transport("b", listen_addr=f"127.0.0.1:{port}")
        async with open_transport(b2):
            assert await receive(inbox2) == heartbeat("a", "b", ctx=2)
            stats = a.statistics().peer("b")
            assert stats.connected and stats.reconnects == 1


async def test_newer_connection_from_a_peer_replaces_the_older() -> None:
    b, b_inbox = make_transport("b")
    async with (
        open_transport(b),
        # (with-items enter in order: the port is known by the time the dials start)
        open_websocket("127.0.0.1", port(b), "/raft", use_ssl=False) as old,
        open_websocket("127.0.0.1", port(b), "/raft", use_ssl=False) as new,
    ):
        await old.send_message(hello(src="a"))
        await old.send_message(frame(heartbeat("a", "b", ctx=1)))
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
        await new.send_message(hello(src="a"))
        with pytest.raises(ConnectionClosed), trio.fail_after(10):
            await old.get_message()
        await new.send_message(frame(heartbeat("a", "b", ctx=2)))
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
        assert b.statistics().peer("a").inbound == 1


async def test_transport_from_config_listens_where_configured() -> None:
    config = NodeConfig(
        node_id="solo", cluster_id="c9", raft_addr="127.0.0.1:0", api_addr="127.0.0.1:0"
    )
    send, _ = trio.open_memory_channel[Message](1)
    t = transport_from_config(config, inbox=send, rng=random.Random(0))
    assert t.settings.max_payload_size == config.max_payload_size
    async with open_transport(t):
        assert t.listen_port is not None and t.listen_port > 0
        assert t.statistics().node_id == "solo"
