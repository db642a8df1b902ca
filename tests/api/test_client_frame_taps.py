"""Client-protocol frames taken on trio-websocket's reader task (``univrs.net.wsdirect.FrameTap``;
issue 14, s16-ctap). The client library's answers matched to their callers there
(univrs/client/connection.py ``Connection._take``): a response frame costs the client's
reading one task step, and a frame the direct path declines (malformed, text) still closes the
connection, with every later frame behind it in order (a fake node on 127.0.0.1 answers each
request frame at once). The node's ``/client`` frames started there
(univrs/api/fast.py ``_ClientConnection._take``): no step of the connection's handler."""

from __future__ import annotations

import contextlib
import pathlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)
from wsproto.events import BytesMessage, TextMessage

from tests.api.helpers import WORKLOAD, open_cluster
from univrs import codec
from univrs.client import protocol
from univrs.client.connection import Connection
from univrs.errors import ConnectionLost


class _ClientSteps(trio.abc.Instrument):
    """Steps of the client connection's reading: its own task (``_run_connection``, which
    runs ``Connection._reader``) and trio-websocket's reader task started in its nursery."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_run_connection"):
            self.steps["connection"] += 1
        elif task.name.endswith("Connection._writer"):
            self.steps["writer"] += 1
        elif task.name.endswith("_reader_task"):
            parent = task.parent_nursery.parent_task if task.parent_nursery else None
            if parent is not None and parent.name.endswith("_run_connection"):
                self.steps["library reader"] += 1


Answer = Callable[[WebSocketConnection, bytes | str], Awaitable[None]]


async def _ok(ws: WebSocketConnection, frame: bytes | str) -> None:
    requests = protocol.decode_requests(frame)
    answers = [{"id": r.id, "ok": r.id} for r in requests]
    await ws.send_message(protocol.encode_responses("n1", answers))


async def _fake_node(nursery: trio.Nursery, answer: Answer = _ok) -> int:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        protocol.check_client_hello(await ws.get_message())
        await ws.send_message(protocol.encode_server_hello("n1", "n1", {}))
        with contextlib.suppress(ConnectionClosed):
            while True:
                await answer(ws, await ws.get_message())

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    port: int = server.port
    return port


async def test_an_answer_costs_the_clients_reading_one_task_step(
    nursery: trio.Nursery,
) -> None:
    """20 requests one at a time: trio-websocket's reader takes each answer frame and wakes
    its caller in one step; the connection's own task does not run, and the writer writes
    each request in one step. Without the tap: the
    library's reader two steps per frame (put in its channel, then wait for data) and the
    connection's task one (take it, match it): 3 per frame, >= 60 here."""
    port = await _fake_node(nursery)
    async with trio.open_nursery() as client:
        conn = await Connection.open(client, f"127.0.0.1:{port}")
        assert await conn.request("warm.up", {}) == (1, None)
        steps = _ClientSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            for i in range(2, 22):
                assert await conn.request("op.x", {}) == (i, None)
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert conn.leader == "n1"
        conn.close()
    # One library reader step per answer frame (a loaded machine may add a stray one or two,
    # a partial read of a frame one more each).
    assert steps.steps["connection"] <= 2, steps.steps
    assert steps.steps["library reader"] <= 26, steps.steps  # without the tap: 40
    # The writer still writes each request in the step that wakes it (client/wire.py) with
    # the tap in the connection's channel: 3 steps per request if the tap made ``Wire`` take
    # the library's ``send_message``.
    assert steps.steps["writer"] <= 24, steps.steps


@pytest.mark.parametrize("bad", [b"\xff\x00 not cbor", "a text frame"])
async def test_a_frame_the_direct_path_declines_closes_the_connection_in_order(
    nursery: trio.Nursery, bad: bytes | str
) -> None:
    """The node answers a bad frame and then a good answer to the same request, in one go:
    the connection closes with a protocol error, and the good answer behind the bad frame is
    not dispatched (the request fails ``ConnectionLost``, sent). Fails if the direct path
    took frames while one was handed over (the request would succeed)."""

    async def bad_then_good(ws: WebSocketConnection, frame: bytes | str) -> None:
        requests = protocol.decode_requests(frame)
        good = protocol.encode_responses("n1", [{"id": r.id, "ok": 1} for r in requests])
        # Both frames in one write: the client's library reader gets them in one read.
        conn: Any = ws
        first = TextMessage(bad) if isinstance(bad, str) else BytesMessage(bad)
        wire = conn._wsproto.send(first) + conn._wsproto.send(BytesMessage(good))
        async with conn._stream_lock:
            await conn._stream.send_all(wire)

    port = await _fake_node(nursery, bad_then_good)
    for _ in range(8):  # which of the two reading tasks runs first is trio's pick
        async with trio.open_nursery() as client:
            conn = await Connection.open(client, f"127.0.0.1:{port}")
            with pytest.raises(ConnectionLost) as caught:
                await conn.request("op.x", {})
        assert caught.value.outcome_unknown
        assert "protocol error" in str(caught.value)
        assert conn.closed


async def test_answers_matched_on_the_reader_keep_many_callers_apart(
    nursery: trio.Nursery,
) -> None:
    """Many requests in flight, answered in reverse order in one frame: each caller gets its
    own answer."""
    held: list[Any] = []

    async def reversed_after_ten(ws: WebSocketConnection, frame: bytes | str) -> None:
        held.extend(protocol.decode_requests(frame))
        if len(held) >= 10:
            answers = [{"id": r.id, "ok": r.args["n"]} for r in reversed(held)]
            held.clear()
            await ws.send_message(protocol.encode_responses(None, answers))

    port = await _fake_node(nursery, reversed_after_ten)
    got: dict[int, Any] = {}
    async with trio.open_nursery() as client:
        conn = await Connection.open(client, f"127.0.0.1:{port}")

        async def call(n: int) -> None:
            got[n] = await conn.request("op.x", {"n": n})

        with trio.fail_after(10):
            async with trio.open_nursery() as calls:
                for n in range(10):
                    calls.start_soon(call, n)
        conn.close()
    assert got == {n: (n, None) for n in range(10)}


class _Steps(trio.abc.Instrument):
    """Task steps by task name."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] += 1


async def test_a_frame_of_writes_costs_the_nodes_connection_handler_no_step(
    tmp_path: pathlib.Path,
) -> None:
    """One write per frame, one frame at a time, on the leader: the frame is decoded and its
    writes proposed on trio-websocket's reader task (``_ClientConnection._take``), so the
    connection's handler task (``serve_client``) does not run. Without the tap: one handler
    step per frame (>= 20 here)."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        port = node.raft_port
        assert port is not None
        async with open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            create = {"id": 0, "op": "workload.create", "args": {"id": "w", "spec": WORKLOAD}}
            await ws.send_message(codec.encode_plain([create]))
            _, answers = protocol.decode_responses(await ws.get_message())
            assert "ok" in answers[0], answers
            steps = _Steps()
            trio.lowlevel.add_instrument(steps)
            try:
                for i in range(1, 21):
                    scale = {"id": i, "op": "workload.scale", "args": {"id": "w", "replicas": i}}
                    await ws.send_message(codec.encode_plain([scale]))
                    with trio.fail_after(30):
                        _, answers = protocol.decode_responses(await ws.get_message())
                    assert answers[0]["id"] == i and "ok" in answers[0], answers
            finally:
                trio.lowlevel.remove_instrument(steps)
    handler = sum(n for name, n in steps.steps.items() if name.endswith("_run_handler"))
    assert handler <= 3, steps.steps  # without the tap: 20
    # trio-websocket's readers: the node's one step per frame, this test's two (it reads
    # through the library's channel); without the tap 3 + 2 per frame (80 here).
    assert steps.steps["trio_websocket._impl.WebSocketConnection._reader_task"] <= 66, steps.steps
