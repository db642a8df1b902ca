"""A minimal async HTTP/1.1 GET over trio (h11), for a node asking its peers' APIs."""

from __future__ import annotations

import json
from typing import Any

import h11
import trio

from univrs.net.address import split_host_port

MAX_BODY = 4 * 1024 * 1024


async def get_json(addr: str, path: str, *, timeout: float = 1.0) -> Any:
    """GET ``http://addr/path`` and decode the JSON body; raises OSError or ValueError."""
    host, port = split_host_port(addr)
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method="GET",
                target=path,
                headers=[("Host", addr), ("Connection", "close"), ("Accept", "application/json")],
            )
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            status = 0
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        raise ValueError(f"response from {addr}{path} is too large")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    if status != 200:
        raise ValueError(f"GET {addr}{path} answered {status}")
    return json.loads(body)
