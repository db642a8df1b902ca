"""A frame's reads, rendered and answered: ``FrameReads``, the layer of ``ApiService``
(univrs/api/service.py) that serves the reads of ``execute_many`` and of the fast protocol's
inline path (univrs/api/inline_reads.py). Split out of service.py in session 31 (it had passed
600 lines); ``ApiService`` declares every attribute named here.

The local reads are rendered at once; the linearizable (or lease) ones after one confirmation
per distinct (consistency, deadline), each group rendered from one state (``_reads``,
``_linearizable``). A fast-protocol connection's answer budget (univrs/api/budget.py) bounds
the bytes rendered and not yet answered: ``render_ready`` renders while it has room and says how
many it answered, ``_render_reads`` waits for room for the rest, each read at most until its own
deadline (then ``Timeout``, with ``BUDGET_TIMEOUT``).

``Job`` (one request of a frame; ``univrs.api.service.Job`` too, where the rest of the code
imports it from) is defined here, below the service: this layer fills it in, and a module may
not import the service back (tests/test_layers.py: no import cycle, ``TYPE_CHECKING`` imports
included).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs.api.auth import ANONYMOUS, Caller
from univrs.api.budget import AnswerBudget
from univrs.api.ops import Handler
from univrs.api.rendered import RenderCache, Rendered, drop_results, encoded_result
from univrs.client.protocol import Encoded
from univrs.errors import Timeout

if TYPE_CHECKING:
    from univrs.api.store import RaftStateStore
    from univrs.service.node import NodeHandle

__all__ = ["BUDGET_TIMEOUT", "FrameReads", "Job"]

# A read still waiting for answer-budget room at its deadline (univrs/api/budget.py).
BUDGET_TIMEOUT = (
    "the read waited past its deadline for room to answer: this connection's (or the "
    "node's) answers are not being read; read them, or retry"
)


@attrs.define(eq=False, slots=True)
class Job:
    """One request of a client frame for ``ApiService.execute_many``: ``execute``'s arguments
    in, its answer out (``result`` and ``meta``, or ``error``: a ``UnivrsError`` to send, or
    any other exception, a bug)."""

    name: str
    args: dict[str, Any]
    key: tuple[str, int] | None = None
    consistency: str | None = None
    timeout: float | None = None
    hops: int = 0
    caller: Caller = ANONYMOUS
    tag: Any = None  # the caller's own (the fast protocol: the request id)
    # Before the answer's fields: ``inline_reads.jobs_of`` passes it and those above by position.
    answer: str | None = None  # the request's "answer": "minimal" | "full" | None (full)
    op: Handler | None = None
    deadline: float = 0.0
    result: Any = None
    meta: dict[str, Any] | None = None
    error: Exception | None = None
    rendered: Rendered | None = None  # ``result`` shared with other reads (rendered.py)


class FrameReads:
    """The reads of a client frame, rendered and answered (see the module docstring)."""

    if not TYPE_CHECKING:  # no instance dict (the service is slotted)
        __slots__ = ()

    if TYPE_CHECKING:  # declared and built by the service (service.py)
        store: RaftStateStore
        _rendered: RenderCache

        @property
        def node(self) -> NodeHandle: ...

        def _count(self, jobs: Sequence[Job], start: float) -> None: ...

    async def _reads(
        self,
        jobs: list[Job],
        start: float,
        answered: Callable[[Sequence[Job]], None],
        encoded: bool = False,
        budget: AnswerBudget | None = None,
    ) -> None:
        """The reads of a frame: the local ones at once; the linearizable ones after one
        confirmation per distinct deadline (requested after all of them arrived; a frame's
        requests of one timeout share a deadline), each group rendered from one state."""
        local = [job for job in jobs if job.consistency == "local"]
        if local:
            await self._render_reads(local, None, start, answered, encoded, budget)
        groups: dict[tuple[str | None, float], list[Job]] = {}  # lease reads apart
        for job in jobs:
            if job.consistency != "local":
                groups.setdefault((job.consistency, job.deadline), []).append(job)
        if len(groups) == 1:
            (((_, deadline), group),) = groups.items()
            await self._linearizable(group, deadline, start, answered, encoded, budget)
        elif groups:
            async with trio.open_nursery() as nursery:
                for (_, deadline), group in groups.items():
                    nursery.start_soon(
                        self._linearizable, group, deadline, start, answered, encoded, budget
                    )

    async def _linearizable(
        self,
        jobs: list[Job],
        deadline: float,
        start: float,
        answered: Callable[[Sequence[Job]], None],
        encoded: bool = False,
        budget: AnswerBudget | None = None,
    ) -> None:
        barrier: Exception | None = None
        try:  # a group's reads share one consistency: linearizable or lease
            await self.store.read_at(jobs[0].consistency or "linearizable", deadline)
        except Exception as exc:  # every read of the group is answered with it
            barrier = exc
        await self._render_reads(jobs, barrier, start, answered, encoded, budget)

    async def _render_reads(
        self,
        jobs: list[Job],
        barrier: Exception | None,
        start: float,
        answered: Callable[[Sequence[Job]], None],
        encoded: bool = False,
        budget: AnswerBudget | None = None,
    ) -> None:
        """Render ``jobs`` from the applied state (they all passed their read barrier);
        ``encoded``: each result as ``protocol.Encoded``. With a ``budget``, a read is rendered
        only while it has room beyond the bytes rendered and not yet answered (checked and
        rendered with no wait between: held stays within the budget plus one answer, however
        many frames wait); else those are answered and the rest wait for room (a later state
        than the barrier's: still linearizable, as a read served later is), each at most until
        its own deadline: one still without room then is answered ``Timeout`` (it took no
        bytes, so it gives none back); an answered job's result is then dropped (its answer
        holds it)."""
        while jobs:
            jobs = jobs[self.render_ready(jobs, barrier, start, answered, encoded, budget) :]
            if not jobs:
                return
            assert budget is not None  # (``render_ready`` stops early for want of room only)
            with trio.move_on_at(jobs[0].deadline) as waited:
                await budget.wait_room()
            if waited.cancelled_caught:
                job, jobs = jobs[0], jobs[1:]
                job.error = Timeout(BUDGET_TIMEOUT, retry_after=1.0)
                self._count([job], start)
                answered([job])

    def render_ready(
        self,
        jobs: Sequence[Job],
        barrier: Exception | None,
        start: float,
        answered: Callable[[Sequence[Job]], None],
        encoded: bool = False,
        budget: AnswerBudget | None = None,
    ) -> int:
        """``_render_reads`` without waiting: render and answer ``jobs`` from the first while
        the budget (if any) has room beyond the bytes rendered so far; how many it answered
        (the rest, from the first without room, are left to the caller). Rendered from the
        applied state now (they all passed their read barrier, or are answered with
        ``barrier``, a copy each)."""
        state = self.node.runtime.sm
        meta: dict[str, Any] | None = None
        cache = self._rendered
        done: list[Job] = []
        pending = 0  # bytes of ``done``'s encoded results
        for job in jobs:
            if budget is not None and not budget.has_room(pending):
                break
            done.append(job)
            try:
                if barrier is not None:
                    raise copy.copy(barrier)
                op = job.op
                read = op.read if op is not None else None
                assert op is not None and read is not None
                # One object's document at this revision: rendered once (univrs/api/rendered.py).
                rendered = cache.render(op.name, job.args, state, read)
                if rendered is None:
                    job.result = read(job.args, state)
                    if encoded:
                        job.result = encoded_result(job.result)
                else:
                    job.result, job.rendered = rendered.doc, rendered
                    if encoded:
                        job.result = rendered.encoded() or job.result
                if type(job.result) is Encoded:
                    pending += len(job.result.data)
                if meta is None:
                    meta = self.store.meta(job.consistency or "linearizable")
                job.meta = meta
            except Exception as exc:
                job.error = exc
        if done:
            self._count(done, start)
            answered(done)
            if budget is not None:
                drop_results(done)
        return len(done)
