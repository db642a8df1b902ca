"""The ticker's late-tick probe (univrs/runtime/ticks.py): a tick that fires more than
``LATE_SECONDS`` after its time is logged, the evidence of a stalled event loop or process
(docs/state-at-scale.md, twelfth increment)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from univrs.runtime.events import TICK
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
