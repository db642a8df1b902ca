"""The driver's clock (step.py): the ticker task, and the ticks a lease-reading core is fed.

Ticks come from ``run_ticker`` as events on the driver's inbox, in order with everything else;
after a stall it sends one tick, not a burst. With ``[raft] read_lease`` on, the core's clock
must instead follow trio's monotonic clock: ``LeaseClock.catch_up`` feeds it every tick due
since the driver started, at every tick event, before every message is stepped and right
before a lease read, so a stall (a pause, a starved process) never makes a leader think less
time passed than did, nor a follower date a leader's message before it was sent (univrs/raft/
read_only.py, "Leases"; tests/runtime/test_lease.py).
"""

from __future__ import annotations

import logging

import attrs
import trio

from univrs.raft.node import RaftNode
from univrs.runtime.events import TICK
from univrs.runtime.ports import Histogram
from univrs.runtime.stalls import LoopClock, StepTimer, step_timer_wanted

log = logging.getLogger("univrs.node")
LATE_SECONDS = 0.1  # a tick this late is logged: the event loop (or the process) stalled


async def run_ticker(
    send: trio.MemorySendChannel[object], tick_seconds: float, lag: Histogram | None = None
) -> None:
    """Send ``TICK`` every ``tick_seconds`` until cancelled (no catch-up burst after a stall).

    Each tick's lateness goes to ``lag`` (``univrs_event_loop_lag_seconds``); a tick later than
    ``LATE_SECONDS`` is logged ("event loop late") with the evidence of why over the interval
    since the previous tick: the loop thread's CPU, its wait for a CPU, the other threads' CPU,
    the garbage collector's time and, with ``UNIVRS_LOOP_STEPS`` set, the longest task step
    (stalls.py)."""
    clock = LoopClock()
    steps = StepTimer() if step_timer_wanted() else None
    if steps is not None:
        trio.lowlevel.add_instrument(steps)
    try:
        next_tick = trio.current_time() + tick_seconds
        before = clock.sample()
        while True:
            await trio.sleep_until(next_tick)
            now = trio.current_time()
            late = now - next_tick
            if lag is not None:
                lag.observe(late)
            if late > LATE_SECONDS:
                extra = {"late_ms": round(late * 1000), **clock.since(before, clock.sample())}
                if steps is not None:
                    extra.update(steps.take())
                log.info("event loop late", extra=extra)
            elif steps is not None:
                steps.take()
            before = clock.sample()
            await send.send(TICK)
            now = trio.current_time()
            next_tick += tick_seconds
            if next_tick <= now:  # we stalled: do not fire a burst of catch-up ticks
                next_tick = now + tick_seconds
    finally:
        if steps is not None:
            trio.lowlevel.remove_instrument(steps)


@attrs.define(eq=False)
class LeaseClock:
    """Ticks fed to the core by trio's clock (read leases on; module docstring)."""

    tick_seconds: float
    _origin: float | None = attrs.field(default=None, init=False)  # trio time of the first
    _fed: int = attrs.field(default=0, init=False)  # ticks fed since then

    def catch_up(self, core: RaftNode) -> None:
        """Feed ``core`` every tick due since the first call."""
        now = trio.current_time()
        if self._origin is None:
            self._origin = now
        due = int((now - self._origin) / self.tick_seconds)
        while self._fed < due:
            self._fed += 1
            core.tick()
