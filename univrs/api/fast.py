"""The server side of the fast client protocol (``univrs.client.protocol``) at ``/client``.

Theory of operation. Each connection has a reader (this handler) and a writer task. The reader
decodes a frame of requests: on trio-websocket's own reader task, synchronously as the frame
completes (``_take``, through ``univrs.net.wsdirect.FrameTap``, s16-ctap), when it can start
without waiting; else (a frame that does not decode or is text, more than ``MAX_FRAME_CHUNK``
requests, no room in ``MAX_IN_FLIGHT`` or the budget) in the connection's handler task, which
then also gets every later frame until it is done with that one, so frames are started in the
order they came. On the leader, a frame made only of writes is served by the reader itself, with
no task of its own (``_start_inline``, s16-api): the writes are checked, built and handed to the
runtime in the reader's step (``ApiService.start_writes``), their waiters tell the writer when
the driver's step fills them, and the writer renders and sends their answers, or answers a write
at its deadline (univrs/api/inline.py). While the driver waits idle, the step that proposes them
runs in the reader too, once the frame is served (univrs/runtime/inline_steps.py, session 28: a
task switch less on a lone client's write); when the writer sleeps and the write applied on the
driver's step, that step renders and writes the answers itself if the socket takes the frame
whole at once (``_answer_on_step``, issue 14 round 19). A frame of reads of one consistency (or
a frame's reads beside its writes) has no task either: checked in the reader's step, its
ReadIndex round joined, rendered and answered by the writer when the round ends
(univrs/api/inline_reads.py, session 22). Any other frame starts *one task per frame* (per
``MAX_FRAME_CHUNK`` requests of a larger one). Either way the reader counts the frame's requests
against ``MAX_IN_FLIGHT`` until their responses are sent: beyond that it stops reading, which
back-pressures the client through TCP. The frame's task answers malformed requests at once,
starts one task per watch poll (a long poll must not hold up the others), and runs the rest
together with ``ApiService.execute_many``: the caller identified once, the writes handed to the
runtime in one event and waited for under one deadline scope, the reads under one ReadIndex
confirmation (docs/api.md, "Per frame, not per request"); their responses are queued as groups
complete. The writer (univrs/api/fast_writer.py) sends everything queued since its last send
as one frame (one encode), written to the socket at once when it takes it (univrs/client/
wire.py: no scheduling round for the stream lock or the send), and drops a client that has not
read its responses for ``SEND_TIMEOUT``. Answers held until written are bounded in bytes, per
connection and per node (univrs/api/budget.py, s15-budget): while the connection's budget is
spent the reader stops reading too, and a frame's reads are rendered only while there is room.
When the connection drops, its nursery is cancelled: the frames' waits end, the inline frames'
waiters are failed (``InlineFrames.abandon``), and proposals not yet handed to the core are
skipped.

A connection may have at most ``MAX_WATCHES`` watch polls (``events.poll``, which wait for
events) in flight; more are answered ``unavailable`` at once (the node's own watcher limit
applies too, univrs/api/watch.py).
Callers: a request runs as the caller its token names (its own ``token``, else the hello's;
``univrs.api.auth``), from the connection's address (for a forwarded request, ``hops`` >= 1,
the address the forwarding node saw). Connections per client address are bounded
(``limits.max_connections_per_address``): one more is rejected at the websocket handshake with
HTTP 429, logged once per address.

A hello or frame that cannot be decoded (or whose objects would take more than
``codec.frame_cost_bound`` bytes while decoded) closes the connection with a protocol error,
counted in the node's ``transport.rejected_connections`` (one WARNING line per client host and
kind of refusal, then DEBUG);
a request with a readable id but bad fields gets an error response. An exception escaping an
operation is a bug: it is logged and answered with ``internal``, and the node carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from univrs.api import inline_reads
from univrs.api.answer_frames import encode_frame, response_of
from univrs.api.auth import Caller
from univrs.api.budget import AnswerBudget
from univrs.api.endpoints import member_endpoints
from univrs.api.fast_watch import WatchPolls
from univrs.api.fast_writer import AnswerWriter
from univrs.api.inline import InlineFrames
from univrs.api.service import WRITE_OPS, Job
from univrs.client import protocol
from univrs.client.protocol import BadRequest, Encoded, Request
from univrs.client.wire import Wire
from univrs.errors import (
    InternalError,
    ProtocolError,
    error_to_plain,
)
from univrs.net import wsdirect, wsfast

if TYPE_CHECKING:
    from univrs.api.service import ApiService
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.api")

WATCH_OP = "events.poll"
MAX_IN_FLIGHT = 4096  # requests per connection being executed at once
HELLO_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0
CLOSE_PROTOCOL_ERROR = 1002
MAX_FRAME_CHUNK = 1024  # requests of one frame handled by one task (a larger frame: several)
SMALL_ANSWER = 128  # bytes charged for an answer not encoded ahead (an error, a small document)


_WARNED: set[tuple[str, str]] = set()  # (client host, kind) already logged at WARNING
_MAX_WARNED = 1024


def _refusal_level(host: str, kind: str) -> int:
    """WARNING the first time a client host breaks the protocol this way (a bad hello, a bad
    frame), DEBUG after that: anyone who reaches the port may send garbage in a loop (red
    team: one WARNING per connection)."""
    key = (host, kind)
    if key in _WARNED:
        return logging.DEBUG
    if len(_WARNED) < _MAX_WARNED:
        _WARNED.add(key)
    return logging.WARNING


def _count_refusal(node: NodeHandle) -> None:
    """Count a connection closed for a bad hello or frame in the listener's
    ``transport.rejected_connections`` (``/client`` is served on the raft listener)."""
    transport = getattr(node, "transport", None)
    if transport is not None:
        transport.count_rejected()


@attrs.define(eq=False, slots=True)
class _Decoded:
    """A frame's requests that ``_take`` decoded but could not start without waiting."""

    requests: list[Request | BadRequest]


@attrs.define(eq=False, slots=True)
class _Refused:
    """A frame ``_take`` could not decode: why (``_read`` refuses it without decoding it a
    second time: a hostile 4 MiB frame costs about 0.35 s of the node's loop to decode)."""

    error: ProtocolError


@attrs.define(eq=False)
class _ClientConnection(WatchPolls, AnswerWriter):
    ws: WebSocketConnection
    service: ApiService
    remote: str
    scope: trio.CancelScope  # the connection's nursery: cancelled to drop a stuck client
    budget: AnswerBudget  # answer bytes held (univrs/api/budget.py)
    wire: Wire  # writes the response frames (univrs/client/wire.py)
    host: str | None = None  # the client's address, for its identity without auth
    token: str | None = attrs.field(default=None, repr=False)  # the hello's token
    _outbox: list[dict[str, Any]] = attrs.field(factory=list)
    _queued: int = 0  # bytes charged to ``budget`` for the outbox's responses
    _wakeup: trio.Event = attrs.field(factory=trio.Event)
    # Requests held from their arrival until their response is *sent* (at most
    # MAX_IN_FLIGHT), so a client that stops reading its responses stops being read from
    # (TCP back-pressure), and the outbox is bounded too.
    _in_flight: int = 0
    _room: trio.Event = attrs.field(factory=trio.Event)  # set when _in_flight went down
    _watches: int = 0  # events.poll requests in flight
    _caller: Caller | None = None  # the connection's own caller (hello token, address)
    # Frames of writes proposed by the reader itself, until answered (univrs/api/inline.py).
    inline: InlineFrames = attrs.field(init=False)
    max_size: int = 0  # of a frame's decoded requests (set by ``read_requests``)
    _reading: bool = True  # False once ``read_requests`` ended: ``_take`` takes nothing more
    # ``_answer_on_step`` is due at the end of the apply under way; and it runs (``_send``
    # then wakes nobody: it writes itself).
    _on_step: bool = False
    _answering: bool = False

    def __attrs_post_init__(self) -> None:
        self.inline = InlineFrames(self._wake, self._bug)

    def _wake(self) -> None:
        """An inline frame's waiter was filled (in the step that applied its write). With the
        writer idle and the write applied on the driver's step (a small commit: one client),
        the answers are settled and written at the end of that apply, in that step
        (``_answer_on_step``); else the writer is woken to do it."""
        if self._on_step:
            return
        if (
            self.inline.sleep is not None  # the writer sleeps (not writing, not woken) ...
            and not self._wakeup.is_set()
            and not self._outbox  # ... with nothing queued
            and self.service.node.runtime.at_apply_end(self._answer_on_step)
        ):
            self._on_step = True
            return
        self._wakeup.set()

    def _answer_on_step(self) -> None:
        """At the end of the apply that filled inline frames' waiters, while the writer sleeps:
        settle them (render the answers, as the writer would) and write the answers' frame
        from this step if the socket takes it whole at once (``wsdirect.write_whole_nowait``:
        never a wait, never half a frame), with the writer's accounting (the budget, the
        requests in flight). Anything else (the writer woke meanwhile, the frame too big, the
        socket's buffer short, a closing connection) is handed to the writer, as before
        (issue 14, round 19: one task step and one scheduling round less per write at one
        client)."""
        self._on_step = False
        inline = self.inline
        if inline.sleep is None or self._wakeup.is_set() or self._outbox:
            self._wakeup.set()
            return
        self._answering = True
        try:
            inline.settle()
        finally:
            self._answering = False
        batch = self._outbox
        if not batch:
            return
        held = self._queued
        if held <= wsdirect.WHOLE_MAX:
            leader = self.service.node.runtime.view.last_status().leader
            frame = encode_frame(leader, batch)
            try:
                written = wsdirect.write_whole_nowait(self.ws, frame)
            except ConnectionClosed:
                written = False  # half a frame: the writer meets the closed connection
            if written:
                self._outbox, self._queued = [], 0
                self.wire.writes += 1
                self._sent(len(batch), held)
                return
        self._wakeup.set()

    def _sent(self, answers: int, held: int) -> None:
        """``answers`` answers holding ``held`` bytes of the budget are written: their room
        and their bytes are given back (the writer's and ``_answer_on_step``'s accounting)."""
        self._in_flight -= answers
        self._room.set()
        self.budget.give(held)

    async def read_requests(self, nursery: trio.Nursery) -> None:
        self.max_size = self.service.node.config.max_payload_size
        tap = None
        if wsdirect.usable(self.ws) and not wsdirect.tapped(self.ws):
            tap = wsdirect.FrameTap.install(self.ws, lambda data: self._take(data, nursery))
        try:
            await self._read(nursery, tap)
        finally:
            self._reading = False

    def _take(self, data: bytes | str, nursery: trio.Nursery) -> object | None:
        """A frame served on trio-websocket's reader task, synchronously (s16-ctap; see the
        docstring): None when done, else what ``_read`` must do (the frame, to decode and
        refuse; its requests, ``_Decoded``, when they must wait for room or the budget)."""
        if not self._reading or self.scope.cancel_called or type(data) is not bytes:
            return data
        try:
            requests = protocol.decode_requests(data, max_size=self.max_size)
        except ProtocolError as exc:
            return _Refused(exc)
        except Exception:
            return data
        n = len(requests)
        if n > MAX_FRAME_CHUNK or self._in_flight + n > MAX_IN_FLIGHT or not self.budget.own_room():
            return _Decoded(requests)
        self._in_flight += n
        # With the driver idle, the proposals this frame hands over are stepped in this task
        # once it is served, not by a wake-up of the driver's (runtime/inline_steps.py).
        runtime = self.service.node.runtime
        held = runtime.hold_proposals()
        try:
            self._start(requests, nursery)
        finally:
            if held:
                runtime.release_proposals()
        return None

    def _start(self, requests: list[Request | BadRequest], nursery: trio.Nursery) -> None:
        """Serve a frame: inline (writes, reads of one consistency) or in a task of its own.
        An exception escaping here (a bug) drops this connection, never the reader task
        (whose exception would end the node): which requests it answered is unknown."""
        try:
            if not self._start_inline(requests, nursery) and not self._start_reads(
                requests, nursery
            ):
                nursery.start_soon(self._handle_frame, requests, nursery)
        except Exception as exc:
            log.error("serving a frame failed with a bug: dropping %s", self.remote, exc_info=exc)
            self.scope.cancel()

    async def _read(self, nursery: trio.Nursery, tap: wsdirect.FrameTap | None) -> None:
        while True:
            try:
                # A frame, or what ``_take`` left to do (through the tap).
                data: object = await self.ws.get_message()
            except ConnectionClosed:
                return  # the client went away; answers to its in-flight requests are dropped
            try:
                if isinstance(data, _Decoded):
                    requests = data.requests
                elif isinstance(data, _Refused):
                    raise data.error
                else:
                    frame = cast(bytes | str, data)
                    requests = protocol.decode_requests(frame, max_size=self.max_size)
            except ProtocolError as exc:
                _count_refusal(self.service.node)
                log.log(
                    _refusal_level(self.host or self.remote, "frame"),
                    "closing client connection from %s: %s",
                    self.remote,
                    exc,
                )
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self.ws.aclose(CLOSE_PROTOCOL_ERROR, str(exc)[:120])
                return
            # No task for a frame of writes on the leader, else one task per frame (per
            # MAX_FRAME_CHUNK requests of a larger one), not per request: see the docstring.
            for first in range(0, len(requests), MAX_FRAME_CHUNK):
                chunk = requests[first : first + MAX_FRAME_CHUNK]
                # No more frames while the answers held spend the connection's budget: a
                # client that pipelines big reads is slowed, not refused (univrs/api/budget.py).
                while not self.budget.own_room():
                    await self.budget.wait_room(own=True)
                while self._in_flight + len(chunk) > MAX_IN_FLIGHT:
                    if self._room.is_set():
                        self._room = trio.Event()
                    await self._room.wait()
                self._in_flight += len(chunk)
                self._start(chunk, nursery)
            if tap is not None:
                tap.finished()

    def _start_inline(self, requests: list[Request | BadRequest], nursery: trio.Nursery) -> bool:
        """A frame of writes on the leader, handled here in the reader's step with no task of
        its own (``ApiService.start_writes``): the writes checked, built and handed to the
        runtime; their waiters tell this connection when they are filled, and the writer
        renders and sends the answers (univrs/api/inline.py), or answers them at their
        deadline. False (nothing done): the frame needs ``_handle_frame`` (a follower, a
        caller to catch up on, no write in it).

        A frame that mixes writes with anything else (reads, watches, bad requests: a client
        that multiplexes them on one connection) is split (session 21): its writes go this
        way and the rest to a ``_handle_frame`` task of its own. ``execute_many`` ran a
        frame's writes and reads concurrently anyway (no order between them, as between any
        two requests in flight), so the answers are the same; before, one read in a frame
        sent all of its writes through the task and ``execute_many``."""
        rest: list[Request | BadRequest] = []
        for req in requests:
            if type(req) is not Request or req.op not in WRITE_OPS:  # (a watch is no write)
                writes: list[Request | BadRequest] = []
                for one in requests:
                    is_write = type(one) is Request and one.op in WRITE_OPS
                    (writes if is_write else rest).append(one)
                if not writes:
                    return False
                requests = writes
                break
        jobs = self._jobs(requests)
        answered, send = self._recorded()
        try:
            taken, wait = self.service.start_writes(jobs, send, nursery.start_soon)
        except Exception as exc:  # a bug: answer what is left with `internal`, carry on
            log.error("serving a frame of %d writes failed with a bug", len(jobs), exc_info=exc)
            self._bug(jobs, answered, exc)
            taken, wait = True, None
        if wait is not None:
            self.inline.add(wait, jobs, answered)
        if taken and rest and not self._start_reads(rest, nursery):
            nursery.start_soon(self._handle_frame, rest, nursery)
        return taken

    def _jobs(self, requests: Sequence[Request | BadRequest]) -> list[Job]:
        """The requests' jobs (all ``Request``), the connection's own caller shared by those
        that name no other (``_caller_of``)."""
        caller = self._caller
        if caller is None:
            caller = self._caller = Caller(token=self.token, address=self.host)
        return inline_reads.jobs_of(cast(Sequence[Request], requests), caller, self._caller_of)

    def _recorded(self) -> tuple[set[int], Callable[[Sequence[Job]], None]]:
        """``_answered`` that also records the ids of the jobs it answered (in the set): what
        ``_bug`` answers with ``internal`` is the rest."""
        answered: set[int] = set()

        def send(done: Sequence[Job]) -> None:
            answered.update(map(id, done))
            self._answered(done)

        return answered, send

    def _start_reads(self, requests: list[Request | BadRequest], nursery: trio.Nursery) -> bool:
        """A frame of reads of one consistency, served from the reader's step with no task of
        its own (univrs/api/inline_reads.py); False (nothing done): the frame needs
        ``_handle_frame``."""
        if not inline_reads.uniform_reads(requests):
            return False
        jobs = self._jobs(requests)
        answered, send = self._recorded()
        try:
            return inline_reads.start_reads(
                self.service,
                jobs,
                inline_reads.Answering(send, lambda left, exc: self._bug(left, answered, exc)),
                answered,
                self.inline,
                self.budget,
                nursery.start_soon,
            )
        except Exception as exc:  # a bug: answer what is left with `internal`, carry on
            log.error("serving a frame of %d reads failed with a bug", len(jobs), exc_info=exc)
            self._bug(jobs, answered, exc)
            return True

    def _bug(self, jobs: Sequence[Job], answered: AbstractSet[int], exc: BaseException) -> None:
        left = [job for job in jobs if id(job) not in answered]
        for job in left:
            job.error = InternalError(f"{type(exc).__name__} serving {job.name}")
        self._answered(left)

    async def _handle_frame(
        self, requests: list[Request | BadRequest], nursery: trio.Nursery
    ) -> None:
        """Answer one frame's requests: malformed ones at once, each watch poll in a task of
        its own (a long poll must not hold up the others), the rest together
        (``ApiService.execute_many``)."""
        served: list[Request] = []
        ready: list[dict[str, Any]] = []
        for req in requests:
            if isinstance(req, BadRequest):
                ready.append({"id": req.id, "error": error_to_plain(req.error)})
            elif req.op == WATCH_OP:
                nursery.start_soon(self._handle_watch, req)
            else:
                served.append(req)
        jobs = self._jobs(served)
        if ready:
            self._send(ready)
        if not jobs:
            return
        answered, send = self._recorded()
        try:
            await self.service.execute_many(jobs, send, encoded=True, budget=self.budget)
        except Exception as exc:  # a bug: answer what is left with `internal`, carry on
            log.error("serving a frame of %d requests failed with a bug", len(jobs), exc_info=exc)
            left = [job for job in jobs if id(job) not in answered]
            for job in left:
                job.error = InternalError(f"{type(exc).__name__} serving {job.name}")
            self._answered(left)

    def _caller_of(self, req: Request) -> Caller:
        """The caller a request runs as: its own token, else the hello's; from the
        connection's address, or for a forwarded request the address the forwarder saw."""
        forwarded_for = req.client if req.hops and req.client else None
        if req.token is None and forwarded_for is None:
            if self._caller is None:
                self._caller = Caller(token=self.token, address=self.host)
            return self._caller
        if forwarded_for is None:
            return Caller(token=req.token or self.token, address=self.host)
        # Its identity without auth is the client it names; its catch-up bounds are this
        # connection's (anyone may claim to forward: univrs/api/auth.py ``Caller.via``).
        return Caller(token=req.token or self.token, address=forwarded_for, via=self.host)

    def _answered(self, jobs: Sequence[Job]) -> None:
        """Queue the answers of ``jobs`` (``response_of``), charged as ``_send`` charges them.
        A write's answer (no error, its meta a log index) is built and charged here in one
        pass, as ``response_of`` and ``_send`` would (session 30: no call and no lookups in
        the response per write); any other goes through ``response_of`` and ``_charge``."""
        responses: list[dict[str, Any]] = []
        append = responses.append
        n = 0
        for job in jobs:
            meta = job.meta
            if job.error is None and job.rendered is None and meta is not None and "index" in meta:
                ok = job.result
                append({"id": job.tag.id, "ok": ok, "meta": meta})
                n += len(ok.data) if type(ok) is Encoded else SMALL_ANSWER
            else:
                resp = response_of(job)
                append(resp)
                n += _charge(resp)
        self._queue(responses, n)

    def _send(self, responses: list[dict[str, Any]]) -> None:
        """Queue ``responses`` for the writer, charged to the budget (``_charge``)."""
        n = 0
        for resp in responses:
            n += _charge(resp)
        self._queue(responses, n)

    def _queue(self, responses: list[dict[str, Any]], n: int) -> None:
        """Queue ``responses`` for the writer, ``n`` bytes charged to the budget for them."""
        self._queued += n
        self.budget.take(n)
        self._outbox.extend(responses)
        if not self._answering:  # (else ``_answer_on_step`` writes them or wakes the writer)
            self._wakeup.set()


def _charge(resp: dict[str, Any]) -> int:
    """The bytes an answer is charged to the budget while held (a length and an add: an
    encoded document's bytes, ``SMALL_ANSWER`` for anything else, and an error its message's
    and field's characters besides: they may quote the request, up to ``MAX_WIRE_MESSAGE``
    characters, s26-fuzz)."""
    ok = resp.get("ok")
    if type(ok) is Encoded:
        return len(ok.data)
    error = resp.get("error")
    if error is not None:
        return SMALL_ANSWER + len(error.get("message") or "") + len(error.get("field") or "")
    return SMALL_ANSWER


async def serve_client(service: ApiService, request: WebSocketRequest) -> None:
    """Route handler for ``/client`` on the raft listener (see the module docstring)."""
    remote = str(request.remote)
    host = getattr(request.remote, "address", None)
    host = None if host is None else str(host)
    limiter = service.fast_connections
    if host is not None and not limiter.acquire(host):
        with trio.move_on_after(CLOSE_TIMEOUT):
            await request.reject(429, body=b"too many connections from this address")
        return
    try:
        await _serve_client(service, request, remote, host)
    finally:
        if host is not None:
            limiter.release(host)


async def _serve_client(
    service: ApiService, request: WebSocketRequest, remote: str, host: str | None
) -> None:
    ws = await request.accept()
    wsfast.install(ws)  # a message's parts are bounded from the hello on (s26-fuzz)
    node = service.node
    try:
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                token = protocol.check_client_hello(await ws.get_message())
        except (trio.TooSlowError, ProtocolError) as exc:
            reason = "no hello in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            _count_refusal(node)
            log.log(
                _refusal_level(host or remote, "hello"),
                "refusing client connection from %s: %s",
                remote,
                reason,
            )
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(CLOSE_PROTOCOL_ERROR, reason[:120])
            return
        status = node.status()
        await ws.send_message(
            protocol.encode_server_hello(node.node_id, status.leader, member_endpoints(node))
        )
        budget = AnswerBudget(service.answer_pool)
        try:
            async with trio.open_nursery() as nursery:
                conn = _ClientConnection(
                    ws=ws,
                    service=service,
                    remote=remote,
                    scope=nursery.cancel_scope,
                    host=host,
                    token=token,
                    budget=budget,
                    wire=Wire(ws),
                )
                try:
                    nursery.start_soon(conn.write_responses)
                    await conn.read_requests(nursery)
                    nursery.cancel_scope.cancel()
                finally:
                    conn.inline.abandon()
        finally:
            budget.release()  # answers not written are dropped with the connection
    except ConnectionClosed:
        pass  # the client went away during the hello
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT):
            await ws.aclose()
