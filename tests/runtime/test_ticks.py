"""The ticker's late-tick probe (univrs/runtime/ticks.py): a tick that fires more than
``LATE_SECONDS`` after its time is logged, the evidence of a stalled event loop or process
(docs/state-at-scale.md, twelfth increment)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from univrs.runtime.events import TICK
from univrs.runtime.stalls import StepTimer
from univrs.runtime.ticks import LATE_SECONDS, run_ticker


def late_lines(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [
        getattr(r, "late_ms", -1) for r in caplog.records if r.getMessage() == "event loop late"
    ]


def test_a_tick_late_by_more_than_the_bound_is_logged_with_its_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="univrs.node")
    clock = trio.testing.MockClock()
    ticks: list[object] = []

    async def main() -> None:
        send, recv = trio.open_memory_channel[object](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ticker, send, 0.05)
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(0.05)  # the mock clock moves only when told
            ticks.append(await recv.receive())  # on time: t = 0.05
            await trio.testing.wait_all_tasks_blocked()
            # The ticker sleeps until 0.10; the clock jumps past it as a stalled loop would
            # see it: the tick fires at 0.05 + 0.05 + LATE_SECONDS + 0.2.
            clock.jump(0.05 + LATE_SECONDS + 0.2)
            ticks.append(await recv.receive())
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
    assert ticks == [TICK, TICK]
    assert late_lines(caplog) == [round((LATE_SECONDS + 0.2) * 1000)]


def test_ticks_on_time_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="univrs.node")
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        send, recv = trio.open_memory_channel[object](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ticker, send, 0.05)
            for _ in range(20):
                await recv.receive()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
    assert late_lines(caplog) == []


class Lags:
    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, value: float, /) -> None:
        self.seen.append(value)

    def observe_many(self, value: float, count: int, /) -> None:
        self.seen.extend([value] * count)


def test_every_tick_s_lateness_is_observed_and_a_late_one_carries_its_evidence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="univrs.node")
    clock = trio.testing.MockClock()
    lags = Lags()

    async def main() -> None:
        send, recv = trio.open_memory_channel[object](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ticker, send, 0.05, lags)
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(0.05)
            await recv.receive()
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(0.05 + 0.3)
            await recv.receive()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
    assert [round(v, 3) for v in lags.seen] == [0.0, 0.3]
    (late,) = [r for r in caplog.records if r.getMessage() == "event loop late"]
    # The loop thread's CPU, the other threads' and the collector's over the interval
    # (stalls.py); the run-queue wait where Linux reports it.
    for field in ("cpu_ms", "threads_cpu_ms", "gc_ms", "interval_ms"):
        assert isinstance(getattr(late, field), int), field


def test_the_step_timer_names_the_task_of_the_longest_step() -> None:
    now = [0.0]
    timer = StepTimer(clock=lambda: now[0])

    async def slow() -> None:
        now[0] += 0.25  # this step "takes" 250 ms by the timer's clock
        await trio.lowlevel.checkpoint()

    async def quick() -> None:
        now[0] += 0.001
        await trio.lowlevel.checkpoint()

    async def main() -> None:
        trio.lowlevel.add_instrument(timer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(quick, name="quick")
            nursery.start_soon(slow, name="slow")
        trio.lowlevel.remove_instrument(timer)

    trio.run(main)
    taken = timer.take()
    assert taken["step_task"] == "slow" and taken["step_ms"] == 250.0
    assert taken["steps"] >= 4
    assert timer.take()["step_ms"] == 0.0  # taken: it starts over
