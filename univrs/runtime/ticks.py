"""The driver's clock (step.py): the ticker task, and the ticks a lease-reading core is fed.

Ticks come from ``run_ticker`` as events on the driver's inbox, in order with everything else;
after a stall it sends one tick, not a burst. With ``[raft] read_lease`` on, the core's clock
must instead follow trio's monotonic clock: ``LeaseClock.catch_up`` feeds it every tick due
since the driver started, at every tick event, before every message is stepped and right
before a lease read, so a stall (a pause, a starved process) never makes a leader think less
time passed than did, nor a follower date a leader's message before it was sent (univrs/raft/
read_only.py, "Leases"; tests/runtime/test_lease.py).

Trio's clock is ``CLOCK_MONOTONIC`` on Linux, which stands still while the system is
suspended (a host suspended to RAM, a VM suspended with its guest): a leader resumed from a
suspend thought no time had passed and held a lease that had ended long ago. ``LeaseClock``
adds the time the system spent suspended since it started (``CLOCK_BOOTTIME`` minus
``CLOCK_MONOTONIC``, where the platform has both; s14-audit L2), so such a leader counts
the suspend and a follower's vote hold ends with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

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


def suspended_seconds() -> float:
    """Seconds the system spent suspended since it booted (``CLOCK_BOOTTIME`` counts them,
    ``CLOCK_MONOTONIC`` does not); 0.0 where the platform lacks either clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return 0.0
    return time.clock_gettime(boottime) - time.clock_gettime(time.CLOCK_MONOTONIC)


@attrs.define(eq=False)
class LeaseClock:
    """Ticks fed to the core by trio's clock plus the system's suspended time (read leases
    on; module docstring)."""

    tick_seconds: float
    # The system's suspended seconds (None: ``suspended_seconds``, looked up at each call).
    suspended: Callable[[], float] | None = None
    _origin: float | None = attrs.field(default=None, init=False)  # trio time of the first
    _suspended_at_origin: float = attrs.field(default=0.0, init=False)
    _fed: int = attrs.field(default=0, init=False)  # ticks fed since then

    def catch_up(self, core: RaftNode, at: float | None = None) -> None:
        """Feed ``core`` every tick due since the first call (time suspended included), up
        to trio time ``at`` (None: now; an earlier time than a previous call's feeds none)."""
        now = trio.current_time() if at is None else at
        suspended = (self.suspended or suspended_seconds)()
        if self._origin is None:
            self._origin, self._suspended_at_origin = now, suspended
        # Never less than before: the two clocks are read a moment apart.
        now += max(0.0, suspended - self._suspended_at_origin)
        due = int((now - self._origin) / self.tick_seconds)
        while self._fed < due:
            self._fed += 1
            core.tick()
