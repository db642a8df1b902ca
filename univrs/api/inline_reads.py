"""A fast-protocol frame's reads served with no task of their own: ``start_reads`` and
``ReadWait`` (issue 14, session 22).

Theory of operation. A frame of reads used to start a task (fast.py ``_handle_frame``) that
checked them, waited for a ReadIndex confirmation (``ReadCoalescer.wait``), rendered them and
queued their answers: a task spawned and two of its steps per frame, beside the reader's and
the writer's. Now, on a node that knows its leader, a frame's reads of one consistency (the
reads of a frame that also holds writes: fast.py ``_start_inline`` splits them off) are served
as its writes are (univrs/api/inline.py):

* in the reader's step, ``start_reads`` checks them (``ApiService._check_frame``, as
  ``execute_many`` does: a request that fails a check is answered at once) and, for
  ``linearizable`` and ``lease`` reads, joins the coalescer's round as a reader arriving now
  would (``ReadCoalescer.join``: a round whose request is made after this call, never one made
  before), keeping a ``ReadWait`` in the connection's ``InlineFrames``; ``local`` reads are
  rendered and answered there and then, as ``_reads`` does with no wait;
* the step that ends the round (the driver's, or the coalescer's fallback task) only calls the
  frame's callback, which wakes the connection's writer;
* the writer settles the ``ReadWait`` (``InlineFrames.settle``): the reads are rendered from the
  applied state and answered (``ApiService.render_ready``); those that find no answer-budget
  room are left to a task that waits for it (``ApiService._render_reads``). A round dropped
  (``unavailable``: leadership lost, not confirmed in time) is handled as
  ``RaftStateStore._read_barrier`` handles it: a read past its deadline is answered with the
  barrier's "no leader" ``unavailable``, the others go to a task that pauses as the barrier
  does and then runs the usual path (``ApiService._reads``: a new round, requested after;
  retried until the deadline); a round failed with any other error answers every read with
  it. A read whose deadline passes before its round ends is answered there and then with the
  barrier's own ``unavailable``, and a frame with nothing left to answer leaves its round (a
  round that stays open keeps no frame answered meanwhile). The tasks started here are
  guarded as the frame's task was: a bug answers what they left with ``internal``.

What a reader gets is unchanged: the same checks and errors, a state at least as new as a
confirmation requested after its read arrived (rendered later than before, never earlier),
the same answers, metrics and budget rules. A node that knows no leader, a frame with several
consistencies or anything but reads (watch polls, malformed requests) takes the task as
before.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs.api.auth import Caller
from univrs.api.budget import AnswerBudget
from univrs.api.coalescer import Round
from univrs.api.ops import HANDLERS
from univrs.api.service import Job
from univrs.api.writes import NO_LEADER_MESSAGE
from univrs.client.protocol import BadRequest, Request
from univrs.errors import Unavailable

if TYPE_CHECKING:
    from univrs.api.inline import InlineFrames
    from univrs.api.service import ApiService

__all__ = ["READ_OPS", "Answering", "ReadWait", "jobs_of", "start_reads", "uniform_reads"]

log = logging.getLogger("univrs.api")

# The operations ``start_reads`` takes: reads of the state (no write, no watch poll).
READ_OPS = frozenset(name for name, op in HANDLERS.items() if op.read is not None)

# ``RaftStateStore._read_barrier``'s answer to a read whose confirmation did not come in time.
UNCONFIRMED = "no leader confirmed the read before its deadline; retry"


def jobs_of(
    requests: Sequence[Request], caller: Caller, caller_of: Callable[[Request], Caller]
) -> list[Job]:
    """The ``Job`` of each request, in one pass: ``caller`` (the connection's own) for those
    that name no other, ``caller_of(request)`` for the rest; the fields in ``Job``'s order,
    all by position (a keyword argument makes a dict per call, for ``__init__``)."""
    jobs: list[Job] = []
    append = jobs.append
    for req in requests:
        ms = req.timeout_ms
        append(
            Job(
                req.op,
                req.args,
                req.key,
                req.consistency,
                None if ms is None else ms / 1000,
                req.hops,
                caller if req.token is None and not req.hops else caller_of(req),
                req,
                req.answer,
            )
        )
    return jobs


def uniform_reads(requests: Sequence[Request | BadRequest]) -> bool:
    """Are these requests all reads of one consistency (as sent: none means linearizable)?
    (None is not: an empty frame is the frame task's, which answers nothing.)"""
    if not requests:
        return False
    first = requests[0]
    if type(first) is not Request:
        return False
    how = first.consistency or "linearizable"
    for req in requests:
        if (
            type(req) is not Request
            or req.op not in READ_OPS
            or (req.consistency or "linearizable") != how
        ):
            return False
    return True


@attrs.frozen
class Answering:
    """How a frame's reads are answered: ``send`` queues answers (and records whom it
    answered), ``bug(jobs, exc)`` answers the unanswered of ``jobs`` with ``internal``."""

    send: Callable[[Sequence[Job]], None]
    bug: Callable[[Sequence[Job], BaseException], None]


@attrs.define(eq=False)
class ReadWait:
    """A frame's reads waiting for their round, until each is answered (``InlineFrames``'
    protocol, as ``FrameWait`` for writes: ``watch``, ``pending``, ``deadline``, ``settle``,
    ``abandon``)."""

    service: ApiService
    round: Round
    start: float
    answering: Answering
    budget: AnswerBudget | None
    spawn: Callable[..., None]
    pending: list[Job]
    _notify: Callable[[], None] | None = None

    def watch(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when the round ends (cheap, never raising)."""
        self._notify = fn
        self.round.notify.append(fn)

    def deadline(self) -> float:
        """The earliest deadline of the reads still pending (inf: none)."""
        return min((job.deadline for job in self.pending), default=math.inf)

    def settle(self, now: float) -> None:
        """Answer every read if the round ended (rendered, or handed on: module docstring),
        else those whose deadline passed."""
        jobs = self.pending
        if not jobs:
            return
        service, send = self.service, self.answering.send
        chosen = self.round
        if chosen.done.is_set():
            self.pending = []
            self._notify = None  # called; kept, it is a cycle through the frame's ``_Inline``
            error = chosen.error
            if error is None:
                n = service.render_ready(jobs, None, self.start, send, True, self.budget)
                if n < len(jobs):  # no budget room for the rest: a task waits for it
                    rest = jobs[n:]
                    self._later(
                        rest, service._render_reads, rest, None, self.start, send, True, self.budget
                    )
            elif not isinstance(error, Unavailable):  # answered with it, as the task's path
                service.render_ready(jobs, error, self.start, send, True, None)
            else:  # dropped: the task's path, after its pause (``_read_barrier``)
                late = [job for job in jobs if now >= job.deadline]
                self._answer(late, NO_LEADER_MESSAGE)
                rest = [job for job in jobs if now < job.deadline]
                if rest:
                    self._later(rest, self._retry, rest)
            return
        late = [job for job in jobs if now >= job.deadline]
        if late:
            self.pending = [job for job in jobs if now < job.deadline]
            self._answer(late, UNCONFIRMED)
            if not self.pending:
                self._forget()

    def abandon(self) -> None:
        """The connection is gone: answer nothing more (the round goes on for its others)."""
        self.pending = []
        self._forget()

    def _answer(self, jobs: list[Job], message: str) -> None:
        if jobs:
            for job in jobs:
                job.error = Unavailable(message, retry_after=1.0)
            self.service._count(jobs, self.start)
            self.answering.send(jobs)

    def _forget(self) -> None:
        """Nothing left to answer: the round need not call back (nor keep this frame)."""
        fn, self._notify = self._notify, None
        if fn is not None and not self.round.done.is_set():
            with contextlib.suppress(ValueError):
                self.round.notify.remove(fn)

    async def _retry(self, jobs: list[Job]) -> None:
        """``_read_barrier`` after a dropped round: pause (until the view changes, at most
        ``RETRY_PAUSE``), then the usual path (a new round, retried until the deadline)."""
        store = self.service.store
        await store.settle(min(job.deadline for job in jobs))
        await self.service._reads(jobs, self.start, self.answering.send, True, self.budget)

    def _later(self, jobs: list[Job], fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        _later(self.spawn, self.answering, jobs, fn, *args)


def _later(
    spawn: Callable[..., None],
    answering: Answering,
    jobs: list[Job],
    fn: Callable[..., Awaitable[None]],
    *args: Any,
) -> None:
    """``fn(*args)``, which answers ``jobs``, in a task of the connection's (``spawn``),
    guarded as the frame's task is: an exception (a bug) answers what it left with
    ``internal``."""
    spawn(_guarded, jobs, answering.bug, fn, args)


async def _guarded(
    jobs: list[Job],
    bug: Callable[[Sequence[Job], BaseException], None],
    fn: Callable[..., Awaitable[None]],
    args: tuple[Any, ...],
) -> None:
    try:
        await fn(*args)
    except Exception as exc:  # a bug: answer what is left with `internal`, carry on
        log.error("serving %d reads failed with a bug", len(jobs), exc_info=exc)
        bug(jobs, exc)


def start_reads(
    service: ApiService,
    jobs: list[Job],
    answering: Answering,
    answered_ids: set[int],
    inline: InlineFrames,
    budget: AnswerBudget | None,
    spawn: Callable[..., None],
) -> bool:
    """Serve ``jobs`` (reads of one consistency: ``uniform_reads``) from the reader's step
    (module docstring); ``answering.send`` queues answers and records their jobs' ids in
    ``answered_ids`` (for ``InlineFrames``' bug report). False, nothing done, when this node
    knows no leader or a caller is not identified here (the frame's task then runs
    ``execute_many``)."""
    node = service.node
    if node.runtime.view.last_status().leader is None:
        return False
    identified, known = service._identify_each(jobs)
    if not known:
        return False
    start = trio.current_time()
    send = answering.send
    _, _, reads = service._check_frame(jobs, identified, start, send, True)
    if not reads:
        return True
    how = reads[0].consistency
    if how == "local":
        n = service.render_ready(reads, None, start, send, True, budget)
        if n < len(reads):
            rest = reads[n:]
            _later(
                spawn, answering, rest, service._render_reads, rest, None, start, send, True, budget
            )
        return True
    store = service.store
    coalescer = store.lease_reads if how == "lease" else store.reads
    wait = ReadWait(service, coalescer.join(), start, answering, budget, spawn, reads)
    inline.add(wait, reads, answered_ids)
    return True
