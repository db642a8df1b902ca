"""A minimal async HTTP/1.1 JSON client over trio (h11), for nodes asking their peers' APIs,
client discovery and tests. With ``ssl_context`` it speaks HTTPS: the server's certificate is
verified against the context's CA and the host dialed, and the context's own certificate (a
node's, or a client's) is presented."""

from __future__ import annotations

import json
import ssl
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
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResponse:
    """One request to ``http://addr/path`` (``https://`` with ``ssl_context``); raises
    OSError (a refused TLS handshake too), ValueError or trio.TooSlowError."""
    host, port = split_host_port(addr)
    data = raw_body if raw_body is not None else b"" if body is None else json.dumps(body).encode()
    head = [("Host", addr), ("Connection", "close"), ("Accept", "application/json")]
    if data or method in ("POST", "PUT"):
        head += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    head += list((headers or {}).items())
    try:
        return await _request(addr, host, port, method, path, data, head, timeout, ssl_context)
    except h11.ProtocolError as exc:  # the server broke HTTP or hung up mid-response
        raise ConnectionError(f"HTTP exchange with {addr} failed: {exc}") from None
    except trio.BrokenResourceError as exc:  # TLS refused (certificate) or connection cut
        raise ConnectionError(
            f"HTTPS exchange with {addr} failed: {exc.__cause__ or exc}"
        ) from None


async def _request(
    addr: str,
    host: str,
    port: int,
    method: str,
    path: str,
    data: bytes,
    head: list[tuple[str, str]],
    timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> HttpResponse:
    with trio.fail_after(timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if ssl_context is not None:
            stream = trio.SSLStream(
                stream, ssl_context, server_hostname=host, https_compatible=True
            )
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
                    conn.receive_data(bytes(await stream.receive_some(65536)))
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


async def get_json(
    addr: str, path: str, *, timeout: float = 1.0, ssl_context: ssl.SSLContext | None = None
) -> Any:
    """GET ``http://addr/path`` (HTTPS with ``ssl_context``) and decode the JSON body; raises
    OSError or ValueError."""
    response = await request_json(addr, "GET", path, timeout=timeout, ssl_context=ssl_context)
    if response.status != 200:
        raise ValueError(f"GET {addr}{path} answered {response.status}")
    return response.body
