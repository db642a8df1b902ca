"""Watches over the API: the ``events.poll`` operation and the ``GET /v1/watch`` stream.

Both read this node's event history (``univrs.runtime.watch.WatchHub``): a follower serves
watches as well as the leader, from its own applied state, and every node has the same events
at the same revisions. docs/orchestrator.md states the semantics; in short:

* ``events.poll`` (REST ``GET /v1/events``, the fast protocol, ``Client.poll_events`` and
  ``Client.watch``): the events from ``from_revision`` on, waiting up to ``wait_ms`` for one,
  and ``revision``: every revision up to it is covered, so the next poll asks for
  ``revision + 1``: no gap and no duplicate, whichever member answers it. A poll's page is
  bounded in bytes as a list page is (``page_docs``: whole revisions, ending before the one
  that would pass ``opargs.PAGE_BYTES``, its first revision always in).
* ``GET /v1/watch?kinds=...&from_revision=...``: the same as a stream of JSON lines
  (``application/x-ndjson``), one line per revision with events of the watched kinds
  ``{"revision", "events": [...]}``, and a progress line ``{"revision", "events": []}`` after
  ``progress_ms`` (default 5 s) without one, so a client knows where to resume. An error ends
  the stream with one line ``{"error": {...}}`` (``compacted`` with ``current_revision``).

Who may use them: any API client (the read role once the API has tokens). What a hostile or
slow client gets: bad arguments are refused (422) before anything is held; at most
``watch_max_watchers`` watchers per node (``unavailable`` beyond, so a client goes to another
member); nothing is buffered per watcher (a watcher is a cursor into the shared, bounded
history), so a client that reads too slowly falls behind the history and gets ``compacted``.
A ``/v1/watch`` reader that stops reading altogether (its socket buffers full) is dropped:
the stream hands its lines to the HTTP server one at a time, and a line the server could not
take within ``SEND_TIMEOUT`` (30 s, as the fast protocol's stalled-reader bound) ends the
stream: its watcher slot is freed at once, one WARNING line is logged, and the reader, if it
ever reads again, finds the lines it had not read and then ``{"error": {"code":
"unavailable", ...}}`` (watch again from the revision after its last line). The server's
write itself cannot be cancelled (hypercorn shields it): that task and its connection stay
until the connection closes, bounded by ``max_connections_per_address``.
``events.poll`` holds nothing between polls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import cbor2
import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from univrs.api import convert as cv
from univrs.api.opargs import PAGE_BYTES
from univrs.api.rest import authority_of, caller_of, error_response
from univrs.client.protocol import encoded_list
from univrs.errors import (
    InternalError,
    InvalidArgument,
    Unavailable,
    UnivrsError,
    error_to_plain,
)
from univrs.service.operations import OPERATIONS
from univrs.service.schemas import DEFAULT_EVENTS, MAX_EVENTS, MAX_REVISION, MAX_WAIT_MS
from univrs.sm.events import Event, ObjectKind, parse_kinds
from univrs.sm.model import Instance, Node, Workload

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.api")

DEFAULT_PROGRESS_MS = 5_000
MARGIN = 0.25  # seconds a poll leaves of its deadline, so its answer arrives in time
SEND_TIMEOUT = 30.0  # seconds a /v1/watch line may wait for the server to take it (see above)


def object_doc(obj: Workload | Instance | Node | None) -> dict[str, Any] | None:
    """The API document of a watched object (None stays None)."""
    if obj is None:
        return None
    if isinstance(obj, Workload):
        return cv.workload_doc(obj)
    if isinstance(obj, Instance):
        return cv.instance_doc(obj)
    return cv.node_doc(obj)


def event_doc(event: Event) -> dict[str, Any]:
    """The API document of an event (docs/api.md, "Watch")."""
    return {
        "revision": event.revision,
        "type": event.type.value,
        "kind": event.kind.value,
        "id": event.id,
        "object": object_doc(event.object),
        "prev": object_doc(event.prev),
    }


def read_kinds(args: dict[str, Any]) -> frozenset[ObjectKind]:
    """The kinds a watch selects: ``kinds`` is comma-separated (absent or empty: all)."""
    text = cv.read_str(args.get("kinds", ""), "kinds")
    kinds = parse_kinds(text.split(",") if text else [])
    if isinstance(kinds, str):
        raise InvalidArgument(kinds, field="kinds")
    return kinds


def _start(args: dict[str, Any], node: NodeHandle) -> int:
    if "from_revision" not in args:
        return node.runtime.watch_hub.revision + 1
    return cv.read_int(args["from_revision"], "from_revision", minimum=1, maximum=MAX_REVISION)


def check_args(args: dict[str, Any]) -> None:
    """Refuse arguments ``events.poll`` does not declare (InvalidArgument names the field)."""
    declared = OPERATIONS["events.poll"].params
    cv.read_object(args, "", optional=tuple(p.name for p in declared))


async def poll_events(
    node: NodeHandle, args: dict[str, Any], deadline: float, *, encoded: bool = False
) -> dict[str, Any]:
    """The ``events.poll`` operation (see the module docstring); raises ``Compacted``.
    ``encoded`` (the fast protocol): the events are one ``Encoded`` CBOR array, made of the
    bytes the page's size was counted with (each event encoded once, not again in the
    response); otherwise a list of documents (JSON for REST)."""
    check_args(args)
    kinds = read_kinds(args)
    wait_ms = cv.read_int(args.get("wait_ms", 0), "wait_ms", maximum=MAX_WAIT_MS)
    limit = cv.read_int(args.get("limit", DEFAULT_EVENTS), "limit", minimum=1, maximum=MAX_EVENTS)
    hub = node.runtime.watch_hub
    start = _start(args, node)
    wait = max(0.0, min(wait_ms / 1000, deadline - trio.current_time() - MARGIN))
    with hub.watcher():
        events, through = await hub.poll(kinds, start, limit, wait)
    docs, blobs, through = _page(events, through)
    return {
        "events": encoded_list(blobs) if encoded else docs,
        "revision": through,
        "compacted_revision": hub.compacted_revision,
        "node": node.node_id,
    }


def page_docs(events: Sequence[Event], through: int) -> tuple[list[dict[str, Any]], int]:
    """A poll's page of ``events`` (the last revision covered: ``through``) as documents,
    bounded in bytes as a list page is (``opargs.PAGE_BYTES``): it ends before the first
    revision whose events would take the page's encoded events past the bound (the first
    revision always goes in whole), and the revision covered is then the one before it, so
    the next poll starts there. Whole revisions, as ``WatchHub.read`` gives them: a poll's
    ``revision`` says every event up to it was answered."""
    docs, _, through = _page(events, through)
    return docs, through


def _page(events: Sequence[Event], through: int) -> tuple[list[dict[str, Any]], list[bytes], int]:
    """``page_docs``, with each document's CBOR encoding (what its size was counted by)."""
    docs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    total = 0
    i, n = 0, len(events)
    while i < n:
        revision = events[i].revision
        group: list[dict[str, Any]] = []
        group_blobs: list[bytes] = []
        while i < n and events[i].revision == revision:
            doc = event_doc(events[i])
            blob = cbor2.dumps(doc)
            total += len(blob)
            group.append(doc)
            group_blobs.append(blob)
            i += 1
        if total > PAGE_BYTES and docs:  # ended on bytes: the next poll starts here
            return docs, blobs, revision - 1
        docs.extend(group)
        blobs.extend(group_blobs)
    return docs, blobs, through


def _line(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


async def _stream(
    node: NodeHandle, kinds: frozenset[ObjectKind], start: int, progress: float
) -> AsyncGenerator[bytes, None]:
    hub = node.runtime.watch_hub
    try:
        with hub.watcher():
            while True:
                events, through = await hub.poll(kinds, start, DEFAULT_EVENTS, progress)
                if not events:
                    yield _line({"revision": through, "events": []})
                for revision, group in _by_revision(events):
                    yield _line({"revision": revision, "events": group})
                start = through + 1
    except UnivrsError as exc:
        yield _line({"error": error_to_plain(exc)})
    except Exception:
        log.exception("watch stream failed with a bug")
        yield _line({"error": error_to_plain(InternalError("the watch stream failed"))})


class WatchResponse(StreamingResponse):
    """The ``/v1/watch`` stream, bounded against a reader that stops reading.

    A producer task holds the watcher slot and hands the stream's lines to the response
    through an unbuffered channel; a line not taken within ``SEND_TIMEOUT`` (the response is
    still stuck writing the previous one) drops the stream: the producer leaves, freeing the
    slot, and the response ends with an ``unavailable`` error line once its write returns."""

    def __init__(
        self, node: NodeHandle, kinds: frozenset[ObjectKind], start: int, progress: float
    ) -> None:
        send, receive = trio.open_memory_channel[bytes](0)
        self._lines = send
        self._last: list[bytes] = []  # the error line that ends a dropped stream
        self._source = (node, kinds, start, progress)
        super().__init__(self._body(receive), media_type="application/x-ndjson")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream; the producer stops when the response ends (done or disconnect)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._produce)
            try:
                await super().__call__(scope, receive, send)
            finally:
                nursery.cancel_scope.cancel()

    async def _body(self, lines: trio.MemoryReceiveChannel[bytes]) -> AsyncGenerator[bytes, None]:
        async with lines:
            async for line in lines:
                yield line
        for line in self._last:
            yield line

    async def _produce(self) -> None:
        node, kinds, start, progress = self._source
        async with self._lines, aclosing(_stream(node, kinds, start, progress)) as lines:
            async for line in lines:
                with trio.move_on_after(SEND_TIMEOUT):
                    await self._lines.send(line)
                    continue
                log.warning(
                    "watch stream dropped: its reader took no line for %gs",
                    SEND_TIMEOUT,
                    extra={"node": node.node_id},
                )
                dropped = Unavailable(
                    f"this watch stream was dropped: its reader took no line for "
                    f"{SEND_TIMEOUT:g}s; watch again from the revision after the last line read"
                )
                self._last.append(_line({"error": error_to_plain(dropped)}))
                return  # closing the stream frees its watcher slot


def _by_revision(events: list[Event]) -> list[tuple[int, list[dict[str, Any]]]]:
    out: list[tuple[int, list[dict[str, Any]]]] = []
    for event in events:
        if not out or out[-1][0] != event.revision:
            out.append((event.revision, []))
        out[-1][1].append(event_doc(event))
    return out


async def watch_stream(request: Request) -> Response:
    """``GET /v1/watch``: a stream of JSON lines (see the module docstring)."""
    node: NodeHandle = request.app.state.node
    try:
        # Events carry whole objects: a watch needs what a list needs (docs/security.md).
        await authority_of(request).authorize_fresh(caller_of(request), "read", "GET /v1/watch")
        args: dict[str, Any] = {}
        for name, value in request.query_params.multi_items():
            if name not in ("kinds", "from_revision", "progress_ms") or name in args:
                raise InvalidArgument(
                    f"unexpected or repeated query parameter {name!r} (accepted: kinds, "
                    "from_revision, progress_ms)",
                    field=name,
                )
            args[name] = value
        kinds = read_kinds(args)
        for name in ("from_revision", "progress_ms"):
            if name in args:
                if not args[name].isdigit() or len(args[name]) > 19:
                    raise InvalidArgument(f"{name} must be an integer", field=name)
                args[name] = int(args[name])
        start = _start(args, node)
        progress_ms = cv.read_int(
            args.get("progress_ms", DEFAULT_PROGRESS_MS), "progress_ms", minimum=100, maximum=60_000
        )
        hub = node.runtime.watch_hub
        hub.read(kinds, start, 1)  # compacted: answered as a 410 up front
        if hub.watchers >= hub.max_watchers:
            with hub.watcher():  # raises Unavailable: answered as a 503 up front
                pass
    except UnivrsError as exc:
        return error_response(exc)
    return WatchResponse(node, kinds, start, progress_ms / 1000)


def routes() -> list[Route]:
    """The streaming watch endpoint (the poll is an ordinary operation)."""
    return [Route("/v1/watch", watch_stream, methods=["GET"])]
