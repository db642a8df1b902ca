"""A minimal async HTTP/1.1 JSON client over trio (h11), for nodes asking their peers' APIs,
client discovery and tests."""

from __future__ import annotations

import json
from typing import Any

import attrs
import h11
import trio

from univrs.net.address import split_host_port

MAX_BODY = 4 * 1024 * 1024


@attrs.frozen
class HttpResponse:
    """Status, headers (lower-case names) and the decoded JSON body (None if empty)."""

    status: int
    headers: dict[str, str]
    body: Any


async def request_json(
    addr: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw_body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> HttpResponse:
    """One request to ``http://addr/path``; raises OSError, ValueError or trio.TooSlowError."""
    host, port = split_host_port(addr)
    data = raw_body if raw_body is not None else b"" if body is None else json.dumps(body).encode()
    head = [("Host", addr), ("Connection", "close"), ("Accept", "application/json")]
    if data or method in ("POST", "PUT"):
        head += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    head += list((headers or {}).items())
    try:
        return await _request(addr, host, port, method, path, data, head, timeout)
    except h11.ProtocolError as exc:  # the server broke HTTP or hung up mid-response
        raise ConnectionError(f"HTTP exchange with {addr} failed: {exc}") from None


async def _request(
    addr: str,
    host: str,
    port: int,
    method: str,
    path: str,
    data: bytes,
    head: list[tuple[str, str]],
    timeout: float,
) -> HttpResponse:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method=method, target=path, headers=head)
            out = conn.send(request)
            if data:
                out += conn.send(h11.Data(data=data))
            await stream.send_all(out + conn.send(h11.EndOfMessage()))
            status = 0
            got: dict[str, str] = {}
            received = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    got = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    received += event.data
                    if len(received) > MAX_BODY:
                        raise ValueError(f"response from {addr}{path} is too large")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    return HttpResponse(status, got, json.loads(received) if received.strip() else None)


async def get_json(addr: str, path: str, *, timeout: float = 1.0) -> Any:
    """GET ``http://addr/path`` and decode the JSON body; raises OSError or ValueError."""
    response = await request_json(addr, "GET", path, timeout=timeout)
    if response.status != 200:
        raise ValueError(f"GET {addr}{path} answered {response.status}")
    return response.body
