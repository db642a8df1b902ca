"""Few ReadIndex confirmations for many concurrent linearizable reads on the serving node
(``ReadCoalescer``; Raft dissertation 6.4, batching read-only requests). The store's read path
(univrs/api/store.py ``read_at``) waits on one; writes are batched in univrs/api/batcher.py.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from univrs.errors import Unavailable
from univrs.runtime.waiter import Waiter

__all__ = ["ReadCoalescer", "Round"]

log = logging.getLogger("univrs.api")


@attrs.define(eq=False)
class Round:
    """One confirmation request and the readers that share it: ``done`` is set when it ends,
    with its ``index`` or its ``error``; ``notify``'s callbacks are called then (``join``)."""

    done: trio.Event = attrs.field(factory=trio.Event)
    started: bool = False  # read_index was called: later readers must wait for the next round
    index: int = 0
    error: Exception | None = None
    notify: list[Callable[[], None]] = attrs.field(factory=list)


class _RoundWaiter(Waiter[int]):
    """The waiter a round hands to the runtime (``ReadCoalescer.hand_off``): the driver's fill
    ends the round there and then, waking its readers and handing the next round over in the
    same step, with no task of the coalescer's in between."""

    def __init__(self, coalescer: ReadCoalescer, chosen: Round) -> None:
        super().__init__()
        self._coalescer = coalescer
        self._chosen = chosen

    def set(self, value: int) -> None:
        if not self.done:
            super().set(value)
            self._chosen.index = value
            self._coalescer._finish(self._chosen)

    def fail(self, error: BaseException) -> None:
        if not self.done:
            super().fail(error)
            self._chosen.error = (
                error if isinstance(error, Exception) else Unavailable("the read was abandoned")
            )
            self._coalescer._finish(self._chosen)


@attrs.define(eq=False)
class ReadCoalescer:
    """Shares ReadIndex confirmations between concurrent linearizable reads.

    A read may only use a confirmation *requested after it arrived* (one requested earlier may
    have had its heartbeat round answered before the read existed). So one request is in flight
    at a time, never driven by a reader (whose deadline may cancel it); reads arriving meanwhile
    wait for the next request, which starts when the current one finishes and serves all of
    them: about two confirmations per round trip, however many readers (Raft dissertation 6.4,
    batching read-only requests).

    With ``hand_off`` (the runtime's ``read_index_nowait``: what nodes use) a round is handed to
    the driver without a task: the driver's step that confirms it wakes its readers and hands
    the next round over at once (``_RoundWaiter``), two scheduling rounds and a task fewer per
    round than ``read_index`` driven by a task in ``nursery`` (the fallback when the driver's
    inbox is full, and what callers without a runtime use).
    """

    nursery: trio.Nursery
    read_index: Callable[[], Awaitable[int]]
    hand_off: Callable[[Waiter[int]], bool] | None = None
    _running: Round | None = None
    _next: Round | None = None
    requests: int = 0  # statistics: read_index calls made

    async def wait(self) -> int:
        """A read index confirmed after this call began (or the error confirming it raised)."""
        chosen = self.join()
        await chosen.done.wait()
        if chosen.error is not None:
            raise copy.copy(chosen.error)
        return chosen.index

    def join(self, notify: Callable[[], None] | None = None) -> Round:
        """``wait`` without waiting: the round a read arriving now shares, its request made
        after this call (the same rule as ``wait``); ``notify()`` is called when it ends, in
        the task or driver step that ends it (it must be cheap and must not raise). The
        reader reads the round's ``index`` or ``error`` once ``done`` is set (univrs/api/
        inline_reads.py: a frame's reads with no task of their own)."""
        running = self._running
        if running is not None and not running.started:
            chosen = running  # its request is not made yet: it will be after this arrival
        else:
            if self._next is None:
                self._next = Round()
            chosen = self._next
        if notify is not None:
            chosen.notify.append(notify)
        if running is None and chosen is self._next:
            self._start()
        return chosen

    def _start(self) -> None:
        chosen, self._next = self._next, None
        assert chosen is not None
        self._running = chosen
        if self.hand_off is not None:
            chosen.started = True  # before the hand-off: later readers wait for the next round
            self.requests += 1
            if self.hand_off(_RoundWaiter(self, chosen)):
                return
            chosen.started = False  # not handed over (a full inbox): a task makes the request
            self.requests -= 1
        self.nursery.start_soon(self._drive, chosen)

    def _finish(self, chosen: Round) -> None:
        chosen.done.set()
        self._running = None
        notify, chosen.notify = chosen.notify, []
        for fn in notify:
            try:
                fn()
            except Exception:  # a bug in a reader's callback: never into the driver's step
                log.exception("a read round's callback failed")
        if self._next is not None:
            self._start()

    async def _drive(self, chosen: Round) -> None:
        try:
            chosen.started = True
            self.requests += 1
            chosen.index = await self.read_index()
        except Exception as exc:  # handed to every reader of this round
            chosen.error = exc
        finally:
            self._finish(chosen)
