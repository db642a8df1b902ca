"""A connection whose socket fails under its handler ends that connection, not the listener.

A peer that resets its connection makes even ``getpeername`` raise ``OSError(ENOTCONN)`` in
the handler (trio-websocket's ``request.remote``). Before, the error escaped the listener's
task group and the node stopped ("cannot start the node: [Errno 107] ..."), found by the
chaos scenario mixed-faults with connection resets."""

from __future__ import annotations

import errno

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket
from wsproto.utilities import LocalProtocolError

from univrs.net.server import WebSocketRouter

FAILURES = [
    OSError(errno.ENOTCONN, "Transport endpoint is not connected"),
    # trio-websocket's reader answering a ping while the connection closes (chaos
    # mixed-faults: "Event Pong ... cannot be sent in state ConnectionState.LOCAL_CLOSING").
    LocalProtocolError("Event Pong cannot be sent in state ConnectionState.LOCAL_CLOSING"),
]


@pytest.mark.parametrize("failure", FAILURES, ids=["enotconn", "pong-while-closing"])
async def test_a_handler_os_error_ends_only_its_connection(failure: Exception) -> None:
    calls = 0

    async def failing(request: WebSocketRequest) -> None:
        nonlocal calls
        calls += 1
        await request.accept()
        raise failure

    router = WebSocketRouter(max_message_size=1 << 16, handshake_timeout=5.0)
    router.add_route("/x", failing)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(router.serve, "127.0.0.1", 0)
        for _ in range(2):  # the listener survives the first: a second connection is served
            with trio.fail_after(20):
                try:
                    async with open_websocket("127.0.0.1", port, "/x", use_ssl=False) as ws:
                        await ws.get_message()
                except (ConnectionClosed, OSError, trio.BrokenResourceError):
                    pass
        assert calls == 2
        nursery.cancel_scope.cancel()
