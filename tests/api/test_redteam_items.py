"""Red team: a frame of millions of tiny CBOR items, on each listener that decodes network
CBOR (the raft listener's ``/raft`` and its fast client protocol ``/client``).

Before the item bound (session 11's ``MAX_FRAME_ITEMS``; since s13-small the memory bound,
``univrs.codec.frame_cost_bound``) 4 MiB of empty maps under one
request's args or one raft message's field decoded to 4 million dicts: a tracemalloc peak of
300 MB in the node for one frame. Now the connection is closed (1002) before cbor2 builds an
item, counted in ``transport.rejected_connections`` and logged at WARNING once per host.
"""

from __future__ import annotations

import logging
import pathlib
import tracemalloc

import cbor2
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.api.helpers import open_cluster
from univrs.client import protocol
from univrs.net.hello import WIRE_VERSION, Hello, encode_hello
from univrs.server.node import Node

FRAME = 4 * 1024 * 1024 - 64  # under the listener's max_payload_size (4 MiB)
# The process's peak while the node reads and refuses the frame: the frame's bytes are buffered
# a few times on the way (the sender's and the receiver's websocket buffers), never decoded.
BOUND = 32 * 1024 * 1024  # measured: 12.6 MB (before the bound: 307 MB)


def _empty_maps(prefix: bytes) -> bytes:
    n = FRAME - len(prefix) - 5
    return prefix + b"\x9a" + n.to_bytes(4, "big") + b"\xa0" * n


# One request, whose args hold the array (under MAX_FRAME_REQUESTS by its head); one raft
# message frame whose third field is the array.
FAST = _empty_maps(b"\x81\xa3" + b"".join(cbor2.dumps(x) for x in ("id", 1, "op", "x", "args")))
RAFT = _empty_maps(b"\x84\x01\x01\x01")


async def _closed_with(ws: WebSocketConnection) -> int | None:
    with trio.fail_after(60):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            return None if exc.reason is None else exc.reason.code


async def _raft(node: Node) -> int | None:
    hello = Hello(
        version=WIRE_VERSION,
        cluster=node.cluster_id,
        src="mallory",
        dst=node.node_id,
        incarnation="0" * 16,
        addr="127.0.0.1:1",
    )
    async with open_websocket_url(f"ws://127.0.0.1:{node.raft_port}/raft") as ws:
        await ws.send_message(encode_hello(hello))
        await ws.send_message(RAFT)
        return await _closed_with(ws)


async def _fast(node: Node) -> int | None:
    async with open_websocket_url(f"ws://127.0.0.1:{node.raft_port}/client") as ws:
        await ws.send_message(protocol.encode_client_hello())
        await ws.get_message()  # the server's hello
        await ws.send_message(FAST)
        return await _closed_with(ws)


@pytest.mark.parametrize(("listener", "logger"), [("raft", "univrs.net"), ("fast", "univrs.api")])
async def test_a_frame_of_millions_of_empty_maps_is_refused_in_bounded_memory(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, listener: str, logger: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=logger)
    attack = _raft if listener == "raft" else _fast
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        before = node.transport.statistics().rejected_connections
        tracemalloc.start()
        try:
            first = await attack(node)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        second = await attack(node)  # the same host again: counted, logged at DEBUG
        assert (first, second) == (1002, 1002)
        assert peak < BOUND, peak
        assert node.transport.statistics().rejected_connections - before == 2
        # Logged each time, at WARNING once per host (the fast listener's memory of warned
        # hosts is the process's: another test's refusal may have used it up already).
        lines = [r for r in caplog.records if "while decoded" in r.getMessage()]
        assert len(lines) == 2, [r.getMessage() for r in lines]
        warned = len([r for r in lines if r.levelno >= logging.WARNING])
        assert warned == 1 if listener == "raft" else warned <= 1
        r = await cluster.http(node, "GET", "/v1/health")
        assert r.status == 200
