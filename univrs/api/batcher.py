"""Read batching on the serving node: few ReadIndex confirmations for many concurrent
linearizable reads (``ReadCoalescer``).

Writes are batched by the runtime, not here: the driver gathers concurrent proposals into one
``propose_many`` with one batch in flight (univrs/runtime/batching.py), so
the API calls ``RaftRuntime.propose`` (one write) or ``propose_together`` (a fast-protocol
frame's writes, one hand-off: ``RaftStateStore.submit_many``).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable

import attrs
import trio


@attrs.define(eq=False)
class _Round:
    done: trio.Event = attrs.field(factory=trio.Event)
    started: bool = False  # read_index was called: later readers must wait for the next round
    index: int = 0
    error: Exception | None = None


@attrs.define(eq=False)
class ReadCoalescer:
    """Shares ReadIndex confirmations between concurrent linearizable reads.

    A read may only use a confirmation *requested after it arrived* (one requested earlier may
    have had its heartbeat round answered before the read existed). So one request is in flight
    at a time, driven by a task in ``nursery`` (never by a reader, whose deadline may cancel
    it); reads arriving meanwhile wait for the next request, which starts when the current one
    finishes and serves all of them: about two confirmations per round trip, however many
    readers (Raft dissertation 6.4, batching read-only requests).
    """

    nursery: trio.Nursery
    read_index: Callable[[], Awaitable[int]]
    _running: _Round | None = None
    _next: _Round | None = None
    requests: int = 0  # statistics: read_index calls made

    async def wait(self) -> int:
        """A read index confirmed after this call began (or the error confirming it raised)."""
        running = self._running
        if running is not None and not running.started:
            chosen = running  # its request is not made yet: it will be after this arrival
        else:
            if self._next is None:
                self._next = _Round()
            chosen = self._next
            if running is None:
                self._start()
        await chosen.done.wait()
        if chosen.error is not None:
            raise copy.copy(chosen.error)
        return chosen.index

    def _start(self) -> None:
        chosen, self._next = self._next, None
        assert chosen is not None
        self._running = chosen
        self.nursery.start_soon(self._drive, chosen)

    async def _drive(self, chosen: _Round) -> None:
        try:
            chosen.started = True
            self.requests += 1
            chosen.index = await self.read_index()
        except Exception as exc:  # handed to every reader of this round
            chosen.error = exc
        finally:
            chosen.done.set()
            self._running = None
            if self._next is not None:
                self._start()
