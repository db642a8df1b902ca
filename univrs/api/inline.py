"""A fast-protocol connection's frames of writes (and, since session 22, of reads) that no task
waits for: ``InlineFrames`` (s16-api, docs/performance.md "Round 16" and "Round 22").

Theory of operation. On the leader, a frame made only of writes is checked, built and handed
to the runtime by the connection's reader itself, in the step that decoded it
(``ApiService.start_writes``); what is left is a ``FrameWait`` (univrs/api/batcher.py) per
frame. Nothing awaits it: each of its waiters calls ``filled`` when the driver's step fills
it (an append and an event set, nothing else: it runs inside the apply), which wakes the
connection's writer (or, the writer asleep and the apply on the driver's step, has
``settle`` run at the end of that apply: univrs/api/fast.py ``_answer_on_step``); the writer
calls ``settle``, which answers the writes whose waiters are
filled (rendering them there, as the frame's task did, with the same rules: ``FrameWait
.settle``) and those whose deadline passed (``expired``, their waiters failed). To wake at the
earliest deadline the writer sleeps under a cancel scope (``sleep``) whose deadline ``add``
brings forward when a frame with an earlier one arrives (no wake-up for it). The frames are
kept in a heap by deadline; an answered frame's entry stays until it reaches the top or the
heap is rebuilt (past ``4 x`` the frames waiting, at least 256 entries), so the heap is
bounded by the frames in flight (``MAX_IN_FLIGHT`` requests per connection). An answered
frame's entry lets go of what the frame held (its waiter, jobs and answers: ``_ANSWERED``
takes their place), so it keeps two small objects alive, not a frame's fifty: kept whole, a
one-client leader's 256 answered frames held some 12,000 containers, each young collection of
the cyclic GC walked them (its threshold is 10,000: univrs/server/heap.py) and they were
promoted on to be walked again (session 29). ``abandon`` (the
connection is gone) fails every waiter still waiting, so a proposal not yet handed to the core
is skipped, as the frame task's cancellation did.

Per frame of one write at one client, the leader's API went from seven task steps (the reader
one, the frame's task three, the writer three) to two (the reader one, the writer one with
univrs/client/wire.py): docs/performance.md.

A frame of reads waits here the same way (session 22): its ``ReadWait`` (univrs/api/
inline_reads.py) is filled when its ReadIndex round ends, and ``settle`` renders and answers
the reads, or answers those whose deadline passed first. Both follow the ``Waiting`` protocol.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from univrs.api.service import Job

__all__ = ["InlineFrames", "Waiting"]

log = logging.getLogger("univrs.api")

MIN_PRUNE = 256  # heap entries kept before answered frames' entries are dropped


class Waiting(Protocol):
    """What a frame waits for: its writes (univrs/api/batcher.py ``FrameWait``) or its reads'
    round (univrs/api/inline_reads.py ``ReadWait``)."""

    pending: Any  # what is not answered yet (a sequence; emptied when abandoned for a bug)

    def watch(self, fn: Callable[[], None]) -> None: ...

    def deadline(self) -> float: ...

    def settle(self, now: float) -> None: ...

    def abandon(self) -> None: ...


class _Answered:
    """What an answered frame's ``_Inline`` waits for in its place (``Waiting``): nothing."""

    pending: Sequence[Job] = ()

    def watch(self, fn: Callable[[], None]) -> None:
        """Never called back: nothing to wait for."""

    def deadline(self) -> float:
        """None pending."""
        return math.inf

    def settle(self, now: float) -> None:
        """Nothing to answer."""

    def abandon(self) -> None:
        """Nothing to fail."""


_ANSWERED = _Answered()
_NO_IDS: frozenset[int] = frozenset()  # an answered frame's ``answered`` (read-only)


@attrs.define(eq=False, slots=True)
class _Inline:
    """A frame of writes proposed (or reads started) by the reader, until answered."""

    wait: Waiting
    jobs: Sequence[Job]
    answered: AbstractSet[int]  # ids of the jobs answered
    queued: bool = False  # in ``_filled`` (or being settled)
    deadline: float = math.inf  # the deadline it is kept under in the heap


@attrs.define(eq=False)
class InlineFrames:
    """One connection's frames of writes waiting for their outcomes (see the module
    docstring). ``wake()`` wakes the connection's writer; ``bug(jobs, answered, exc)`` answers
    a frame's unanswered jobs with ``internal``."""

    wake: Callable[[], None]
    bug: Callable[[Sequence[Job], AbstractSet[int], BaseException], None]
    sleep: trio.CancelScope | None = None  # the writer's, while it sleeps
    _heap: list[tuple[float, int, _Inline]] = attrs.field(factory=list)
    _filled: list[_Inline] = attrs.field(factory=list)
    _seq: int = 0
    _prune_at: int = MIN_PRUNE

    def add(self, wait: Waiting, jobs: Sequence[Job], answered: set[int]) -> None:
        """Wait for ``wait``'s writes or reads (the jobs of its frame; ``answered``: those
        answered)."""
        inline = _Inline(wait, jobs, answered)
        wait.watch(functools.partial(self._filled_one, inline))
        self._keep(inline, wait.deadline())

    def has_filled(self) -> bool:
        """Has a frame's waiter been filled since the last ``settle``?"""
        return bool(self._filled)

    def due(self, now: float) -> bool:
        """Is there something for ``settle`` to do at ``now``?"""
        return bool(self._filled) or (bool(self._heap) and self._heap[0][0] <= now)

    def earliest(self) -> float:
        """The earliest deadline of a frame still waiting (inf: none)."""
        heap = self._heap
        while heap and (heap[0][2].deadline != heap[0][0] or not heap[0][2].wait.pending):
            heapq.heappop(heap)  # answered, or kept again under a later deadline
        return heap[0][0] if heap else math.inf

    def _filled_one(self, inline: _Inline) -> None:
        """A waiter of ``inline`` was filled (in the driver's step): cheap, never raising."""
        if not inline.queued:
            inline.queued = True
            self._filled.append(inline)
            self.wake()

    def _keep(self, inline: _Inline, deadline: float) -> None:
        """Keep ``inline`` under ``deadline`` (the sleeping writer's scope brought forward)."""
        self._seq += 1
        inline.deadline = deadline
        heapq.heappush(self._heap, (deadline, self._seq, inline))
        sleep = self.sleep
        if sleep is not None and deadline < sleep.deadline:
            sleep.deadline = deadline
        if len(self._heap) > self._prune_at:
            kept = [e for e in self._heap if e[2].deadline == e[0] and e[2].wait.pending]
            heapq.heapify(kept)
            self._heap = kept
            self._prune_at = max(MIN_PRUNE, 4 * len(kept))

    def settle(self) -> None:
        """Answer the writes whose waiters were filled, and those whose deadline passed
        (``FrameWait.settle``)."""
        now = trio.current_time()
        ready, self._filled = self._filled, []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, inline = heapq.heappop(heap)
            if inline.wait.pending and inline.deadline <= now and not inline.queued:
                inline.queued = True
                ready.append(inline)
        for inline in ready:
            inline.queued = False
            wait = inline.wait
            if not wait.pending:
                continue
            try:
                wait.settle(now)
            except Exception as exc:  # a bug: answer what is left with `internal`
                log.error(
                    "settling a frame of %d requests failed with a bug",
                    len(inline.jobs),
                    exc_info=exc,
                )
                wait.pending = []
                wait.abandon()
                self.bug(inline.jobs, inline.answered, exc)
                continue
            if wait.pending:
                deadline = wait.deadline()
                if deadline != inline.deadline or inline.deadline <= now:
                    self._keep(inline, deadline)
            else:  # answered: its heap entry, if any, need not keep the frame alive
                inline.wait, inline.jobs, inline.answered = _ANSWERED, (), _NO_IDS

    def abandon(self) -> None:
        """The connection is gone: fail every waiter still waiting (a proposal not yet
        handed to the core is skipped)."""
        heap, filled = self._heap, self._filled
        self._heap, self._filled = [], []
        for _, _, inline in heap:
            inline.wait.abandon()
        for inline in filled:
            inline.wait.abandon()

    def waiting(self) -> int:
        """Frames still waiting (statistics, tests)."""
        return sum(1 for e in self._heap if e[2].deadline == e[0] and e[2].wait.pending)
