"""The probe: one question to a peer's raft listener before bootstrapping a new cluster.

A node about to bootstrap on an empty data dir asks each bootstrap peer (``/probe`` on the
raft listener): "do you hold a history of the cluster I would create, and does it already
know my id?". A peer whose configuration binds the asker's id to an incarnation, or no longer
lists it, shows that this id already served in an existing cluster: the asker lost its data
dir and must be replaced (``univrs cluster join --replace``), never bootstrap a second history.

Frames are CBOR maps, frozen like the hello (any version can read them):

* question ``{"probe": "univrs-raft", "version": int, "src": str, "cluster": str}``;
* answer ``{"probe": "univrs-raft", "node": str, "same_cluster": bool, "history": bool,
  "member": bool, "bound": str | None}`` -- ``bound`` is the incarnation the peer's
  configuration lists for ``src``. The answer never names the peer's cluster id, and to an
  asker of another cluster it says ``member`` False and ``bound`` None.

With TLS the probe travels over the raft listener's TLS, and is answered only to a peer that
shows a node certificate (``probe_route``'s ``admit``); the asker verifies the answering
node's certificate against the cluster CA.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

import attrs
import cbor2
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketRequest,
    wrap_client_stream,
)
from wsproto.utilities import LocalProtocolError

from univrs.codec.strict import load
from univrs.errors import ProtocolError
from univrs.net import wsfast
from univrs.net.address import join_host_port, split_host_port
from univrs.net.hello import WIRE_VERSION
from univrs.net.server import RouteHandler

log = logging.getLogger("univrs.net")

PROBE_PATH = "/probe"
_MAGIC = "univrs-raft"
_MAX_FRAME = 4096
_MAX_DEPTH = 8  # a probe frame is a flat map: decoded strictly, within generous bounds
_MAX_ITEMS = 256


@attrs.frozen(kw_only=True)
class ProbeQuestion:
    """Who asks, and the cluster it would create."""

    src: str
    cluster: str
    version: int = WIRE_VERSION


@attrs.frozen(kw_only=True)
class ProbeAnswer:
    """What the peer's state says about the asker's id."""

    node: str
    same_cluster: bool  # the peer belongs to (or waits for) the cluster the asker would create
    history: bool  # the peer holds a log or a snapshot
    member: bool  # the peer's configuration in effect lists the asker's id
    bound: str | None  # the incarnation it lists for the asker's id (None: unbound)


def _load(data: bytes | str, what: str) -> dict[str, Any]:
    if isinstance(data, str) or len(data) > _MAX_FRAME:
        raise ProtocolError(f"{what}: expected a binary frame of at most {_MAX_FRAME} bytes")
    doc = load(data, max_size=_MAX_FRAME, max_depth=_MAX_DEPTH, what=what, max_items=_MAX_ITEMS)
    if not isinstance(doc, dict) or doc.get("probe") != _MAGIC:
        raise ProtocolError(f"{what}: not a univrs probe frame")
    return doc


def _field(doc: dict[str, Any], key: str, kind: type, what: str, *, optional: bool = False) -> Any:
    value = doc.get(key)
    if value is None and optional:
        return None
    if type(value) is not kind or (kind is str and not value):
        raise ProtocolError(f"{what}: field {key!r} is missing or not a {kind.__name__}")
    return value


def encode_question(q: ProbeQuestion) -> bytes:
    return cbor2.dumps({"probe": _MAGIC, "version": q.version, "src": q.src, "cluster": q.cluster})


def decode_question(data: bytes | str) -> ProbeQuestion:
    doc = _load(data, "probe question")
    return ProbeQuestion(
        version=_field(doc, "version", int, "probe question"),
        src=_field(doc, "src", str, "probe question"),
        cluster=_field(doc, "cluster", str, "probe question"),
    )


def encode_answer(a: ProbeAnswer) -> bytes:
    doc = {
        "probe": _MAGIC,
        "node": a.node,
        "same_cluster": a.same_cluster,
        "history": a.history,
        "member": a.member,
        "bound": a.bound,
    }
    return cbor2.dumps(doc)


def decode_answer(data: bytes | str) -> ProbeAnswer:
    what = "probe answer"
    doc = _load(data, what)
    return ProbeAnswer(
        node=_field(doc, "node", str, what),
        same_cluster=_field(doc, "same_cluster", bool, what),
        history=_field(doc, "history", bool, what),
        member=_field(doc, "member", bool, what),
        bound=_field(doc, "bound", str, what, optional=True),
    )


def probe_route(
    answer: Callable[[ProbeQuestion], ProbeAnswer],
    timeout: float,
    *,
    admit: Callable[[str, str], str | None] | None = None,
) -> RouteHandler:
    """A route handler (for ``RaftTransport.add_route(PROBE_PATH, ...)``) that answers one
    question per connection with ``answer(question)``. ``admit(remote, path)`` returning None
    refuses the connection with HTTP 403 (``RaftTransport.refuse_without_node_certificate``:
    with TLS, only nodes may ask)."""

    async def handle(request: WebSocketRequest) -> None:
        if admit is not None and admit(str(request.remote), PROBE_PATH) is None:
            await request.reject(403, body=b"a node certificate is required")
            return
        ws = await request.accept()
        wsfast.install(ws)  # a message's parts are bounded (s26-fuzz)
        try:
            with trio.move_on_after(timeout):
                question = decode_question(await ws.get_message())
                await ws.send_message(encode_answer(answer(question)))
        except (ConnectionClosed, ProtocolError) as exc:
            log.debug("probe from %s not answered: %s", request.remote, exc)
        finally:
            with trio.move_on_after(1.0):
                await ws.aclose()

    return handle


async def _ask(
    addr: str, question: ProbeQuestion, ssl_context: ssl.SSLContext | None
) -> ProbeAnswer:
    host, port = split_host_port(addr)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    stream = await trio.open_tcp_stream(host, port)
    try:
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
            await stream.do_handshake()
        async with trio.open_nursery() as nursery:  # holds the connection's reader task
            try:
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    join_host_port(host, port),
                    PROBE_PATH,
                    message_queue_size=1,
                    max_message_size=_MAX_FRAME,
                )
                await ws.send_message(encode_question(question))
                answer = decode_answer(await ws.get_message())
                with trio.move_on_after(1.0):
                    await ws.aclose()
                return answer
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def ask_peer(
    addr: str,
    question: ProbeQuestion,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> ProbeAnswer | None:
    """``addr``'s answer to ``question``, or None when it cannot be had within ``timeout``
    (unreachable, paused, an older node without ``/probe``, a refused TLS handshake, or a
    malformed answer). ``ssl_context``: dial with TLS."""
    answer: ProbeAnswer | None = None
    try:
        with trio.move_on_after(timeout):
            answer = await _ask(addr, question, ssl_context)
    except* (
        OSError,
        HandshakeError,
        ConnectionClosed,
        ProtocolError,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        LocalProtocolError,
    ) as group:
        log.debug("probe of %s failed: %r", addr, group.exceptions[0])
    return answer
