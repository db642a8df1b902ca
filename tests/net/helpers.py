"""Shared helpers of the transport tests: message factories, transports, bounded waits, and
``Network``, an in-memory network of transports whose connector the test controls."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio
import trio.testing

from tests.net import fake_codec
from univrs.net.backoff import BackoffPolicy
from univrs.net.peer import Connector
from univrs.net.settings import TransportSettings
from univrs.net.tls import TlsContexts
from univrs.net.transport import RaftTransport
from univrs.raft.messages import AppendEntries, Entry, Heartbeat, Message

CLUSTER = "test-cluster"

FAST = TransportSettings(
    connect_timeout=2.0,
    handshake_timeout=2.0,
    send_timeout=2.0,
    close_timeout=0.5,
    backoff=BackoffPolicy(initial=0.05, maximum=0.5, jitter=0.5),
    stable_after=1.0,
)


def heartbeat(src: str, dst: str, ctx: int = 0) -> Heartbeat:
    return Heartbeat(term=1, src=src, dst=dst, commit=0, ctx=ctx)


def append(src: str, dst: str, index: int, size: int = 10) -> AppendEntries:
    entry = Entry(term=1, index=index, data=b"e" * size)
    return AppendEntries(
        term=1,
        src=src,
        dst=dst,
        prev_log_index=index - 1,
        prev_log_term=1 if index > 1 else 0,
        entries=(entry,),
        commit=0,
    )


def make_transport(
    node_id: str,
    *,
    peers: Mapping[str, str] | None = None,
    settings: TransportSettings = FAST,
    connector: Connector | None = None,
    listen_addr: str | None = "127.0.0.1:0",
    cluster_id: str = CLUSTER,
    inbox_size: int = 100,
    seed: int = 0,
    incarnation: str | None = None,
    bound: Mapping[str, str] | None = None,
    binding: tuple[int, bool] = (0, False),
    tls: TlsContexts | None = None,
    read_batches: bool = True,
    payload_version: int = 1,
) -> tuple[RaftTransport, trio.MemoryReceiveChannel[Message]]:
    """A transport on the fake codec. ``bound`` (read live, so a test may change it) is the
    configuration's incarnation per peer; ``incarnation`` this node's own; ``binding`` the index
    of its configuration and whether that binds it to ``incarnation``."""
    send, recv = trio.open_memory_channel[Message](inbox_size)
    listed = bound if bound is not None else {}
    transport = RaftTransport(
        node_id=node_id,
        cluster_id=cluster_id,
        inbox=send,
        rng=random.Random(seed),
        listen_addr=listen_addr,
        peers=dict(peers or {}),
        settings=settings,
        encode=fake_codec.encode,
        decode=fake_codec.decode,
        encode_batch=fake_codec.encode_batch,
        connector=connector or trio.open_tcp_stream,
        incarnation=incarnation,
        bound_incarnation=lambda nid: listed.get(nid),
        own_binding=lambda: binding,
        tls=tls,
        read_batches=read_batches,
        payload_version=payload_version,
    )
    return transport, recv


def port(t: RaftTransport) -> int:
    """The port ``t`` listens on (it must be listening)."""
    assert t.listen_port is not None, "the transport is not listening"
    return t.listen_port


def addr(t: RaftTransport) -> str:
    """Where ``t`` listens on 127.0.0.1 (it must be listening)."""
    return f"127.0.0.1:{port(t)}"


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (virtual or real)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def receive(inbox: trio.MemoryReceiveChannel[Message], timeout: float = 10.0) -> Message:
    with trio.fail_after(timeout):
        return await inbox.receive()


NO_JITTER = attrs.evolve(
    FAST, backoff=BackoffPolicy(initial=1.0, maximum=4.0, multiplier=2.0, jitter=0.0)
)


class Network:
    """A connector factory: each dial opens a memory stream served by the target's router."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.nodes: dict[str, RaftTransport] = {}
        self.server_ends: list[trio.abc.Stream] = []
        self.dials: list[tuple[float, str]] = []

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        self.dials.append((trio.current_time(), host))
        target = self.nodes.get(host)
        if target is None:
            raise OSError(f"connection refused by {host}")
        client, server = trio.testing.memory_stream_pair()
        self.server_ends.append(server)
        self.nursery.start_soon(target.router.handle_connection, server)
        return client

    def dialer(
        self, node_id: str = "a", peer: str = "b", **options: Any
    ) -> tuple[RaftTransport, trio.MemoryReceiveChannel[Message]]:
        """A transport of ``node_id`` that reaches ``peer`` (at ``peer:1``) through this
        network, without a listener of its own (``options``: ``make_transport``'s)."""
        return make_transport(
            node_id,
            peers={peer: f"{peer}:1"},
            connector=self.connect,
            listen_addr=None,
            **options,
        )

    def listener(
        self, node_id: str = "b", **options: Any
    ) -> tuple[RaftTransport, trio.MemoryReceiveChannel[Message]]:
        """A transport of ``node_id`` that this network's dials of ``node_id`` reach from now
        on (``options``: ``make_transport``'s)."""
        transport, inbox = make_transport(node_id, listen_addr=None, **options)
        self.nodes[node_id] = transport
        return transport, inbox
