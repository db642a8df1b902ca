"""Red team: garbage on the fast client protocol (``/client``) is refused and logged once per
client host and kind, not once per connection (anyone who reaches the port may loop)."""

from __future__ import annotations

import contextlib
import logging
import pathlib

import cbor2
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.api.helpers import open_cluster


async def test_bad_hellos_and_frames_are_logged_once_per_host(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="univrs.api")
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        url = f"ws://127.0.0.1:{node.raft_port}/client"
        for i in range(10):
            async with open_websocket_url(url) as ws:
                await ws.send_message(b"\xff" * (i + 1))  # not a hello
                with trio.move_on_after(5), contextlib.suppress(ConnectionClosed):
                    await ws.get_message()
        for i in range(10):
            async with open_websocket_url(url) as ws:
                await ws.send_message(cbor2.dumps({"univrs": "client", "v": 1}))
                await ws.get_message()  # the server's hello
                await ws.send_message(b"\x9b" + b"\xff" * (i + 1))  # a truncated frame
                with trio.move_on_after(5), contextlib.suppress(ConnectionClosed):
                    while True:
                        await ws.get_message()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([w for w in warnings if "refusing client connection" in w]) <= 1, warnings
        assert len([w for w in warnings if "closing client connection" in w]) <= 1, warnings
        r = await cluster.http(node, "GET", "/v1/health")
        assert r.status == 200
