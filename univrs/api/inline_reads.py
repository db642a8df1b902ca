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
  room are left to a task that waits for it (``ApiService._render_reads``). A round that ended
  with an error (leadership lost, not confirmed in time) hands the frame's reads to a task that
  runs the usual path (``ApiService._reads``: a new round, requested after; retried until the
  deadline, as ``RaftStateStore._read_barrier`` does). A read whose deadline passes before its
  round ends is answered there and then with ``_read_barrier``'s own ``unavailable``.

What a reader gets is unchanged: the same checks and errors, a state at least as new as a
confirmation requested after its read arrived (rendered later than before, never earlier),
the same answers, metrics and budget rules. A node that knows no leader, a frame with several
consistencies or anything but reads (watch polls, malformed requests) takes the task as
before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from univrs.api.auth import Caller
from univrs.api.budget import AnswerBudget
from univrs.api.coalescer import Round
from univrs.api.ops import HANDLERS
from univrs.api.service import Job
from univrs.client.protocol import BadRequest, Request
from univrs.errors import Unavailable

if TYPE_CHECKING:
    from univrs.api.inline import InlineFrames
    from univrs.api.service import ApiService

__all__ = ["READ_OPS", "ReadWait", "jobs_of", "start_reads", "uniform_reads"]

# The operations ``start_reads`` takes: reads of the state (no write, no watch poll).
READ_OPS = frozenset(name for name, op in HANDLERS.items() if op.read is not None)

# ``RaftStateStore._read_barrier``'s answer to a read whose confirmation did not come in time.
UNCONFIRMED = "no leader confirmed the read before its deadline; retry"


def jobs_of(
    requests: Sequence[Request], caller: Caller, caller_of: Callable[[Request], Caller]
) -> list[Job]:
    """The ``Job`` of each request, in one pass: ``caller`` (the connection's own) for those
    that name no other, ``caller_of(request)`` for the rest; the fields in ``Job``'s order."""
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
                answer=req.answer,
            )
        )
    return jobs


def uniform_reads(requests: Sequence[Request | BadRequest]) -> bool:
    """Are these requests all reads of one consistency (as sent: none means linearizable)?"""
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


@attrs.define(eq=False)
class ReadWait:
    """A frame's reads waiting for their round, until each is answered (``InlineFrames``'
    protocol, as ``FrameWait`` for writes: ``watch``, ``pending``, ``deadline``, ``settle``,
    ``abandon``)."""

    service: ApiService
    round: Round
    start: float
    answered: Callable[[Sequence[Job]], None]
    budget: AnswerBudget | None
    spawn: Callable[..., None]
    pending: list[Job]

    def watch(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when the round ends (cheap, never raising)."""
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
        service = self.service
        if self.round.done.is_set():
            self.pending = []
            if self.round.error is not None:  # the usual path: a new round, retries
                self.spawn(service._reads, jobs, self.start, self.answered, True, self.budget)
                return
            n = service.render_ready(jobs, None, self.start, self.answered, True, self.budget)
            if n < len(jobs):
                rest = jobs[n:]
                self.spawn(
                    service._render_reads, rest, None, self.start, self.answered, True, self.budget
                )
            return
        late = [job for job in jobs if now >= job.deadline]
        if late:
            self.pending = [job for job in jobs if now < job.deadline]
            for job in late:
                job.error = Unavailable(UNCONFIRMED, retry_after=1.0)
            service._count(late, self.start)
            self.answered(late)

    def abandon(self) -> None:
        """The connection is gone: answer nothing more (the round goes on for its others)."""
        self.pending = []


def start_reads(
    service: ApiService,
    jobs: list[Job],
    answered: Callable[[Sequence[Job]], None],
    answered_ids: set[int],
    inline: InlineFrames,
    budget: AnswerBudget | None,
    spawn: Callable[..., None],
) -> bool:
    """Serve ``jobs`` (reads of one consistency: ``uniform_reads``) from the reader's step
    (module docstring); ``answered`` queues answers and records their jobs' ids in
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
    _, _, reads = service._check_frame(jobs, identified, start, answered, True)
    if not reads:
        return True
    how = reads[0].consistency
    if how == "local":
        n = service.render_ready(reads, None, start, answered, True, budget)
        if n < len(reads):
            spawn(service._render_reads, reads[n:], None, start, answered, True, budget)
        return True
    store = service.store
    coalescer = store.lease_reads if how == "lease" else store.reads
    wait = ReadWait(service, coalescer.join(), start, answered, budget, spawn, reads)
    inline.add(wait, reads, answered_ids)
    return True
