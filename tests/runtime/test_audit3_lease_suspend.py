"""s14-audit L2: the lease clock counts the time the system spent suspended. Trio's clock
(``CLOCK_MONOTONIC`` on Linux) stands still during a suspend; a leader resumed from one held
a lease that had ended long before (docs/performance.md, "Lease reads")."""

from __future__ import annotations

import contextlib

import attrs
import pytest
import trio
import trio.testing

from tests.runtime.test_driver import TICK, leader_of, start_all, wait_until
from tests.runtime.test_lease import lease_cluster
from univrs.errors import Unavailable
from univrs.runtime import ticks
from univrs.runtime.ticks import LeaseClock, suspended_seconds


@attrs.define
class Counter:
    ticks: int = 0

    def tick(self) -> None:
        self.ticks += 1


async def test_the_lease_clock_feeds_the_suspended_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slept = [5.0]  # seconds suspended before the node started: not counted
    clock = LeaseClock(0.1, suspended=lambda: slept[0])
    core = Counter()
    clock.catch_up(core)  # type: ignore[arg-type]
    autojump_clock.jump(0.25)
    clock.catch_up(core)  # type: ignore[arg-type]
    assert core.ticks == 2
    slept[0] += 3.0  # the system was suspended for 3 s: trio's clock did not move
    clock.catch_up(core)  # type: ignore[arg-type]
    assert core.ticks == 32
    slept[0] -= 1e-6  # the two clocks are read a moment apart: never a tick less
    clock.catch_up(core)  # type: ignore[arg-type]
    assert core.ticks == 32


def test_suspended_seconds_is_a_small_non_negative_reading() -> None:
    first = suspended_seconds()
    assert first >= 0.0 or abs(first) < 1e-3
    assert abs(suspended_seconds() - first) < 1.0  # no suspend while this test runs


async def test_a_leader_resumed_from_a_suspend_serves_no_lease_read_from_before_it(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept = [0.0]
    monkeypatch.setattr(ticks, "suspended_seconds", lambda: slept[0])
    net = lease_cluster(["a", "b", "c"])
    await start_all(nursery, net)
    await wait_until(lambda: (lead := leader_of(net)) is not None and lead.status().lease, "lease")
    leader = leader_of(net)
    assert leader is not None
    assert await leader.read_index(lease=True) >= 1  # served from the lease
    # The machine is suspended for a second (20 ticks): trio's clock stands still, the
    # followers (cut off here) elected another leader meanwhile. The lease must be over.
    net.cut |= {n for n in net.runtimes if n != leader.node_id}
    slept[0] += 20 * TICK
    served = None
    with trio.move_on_after(TICK / 2):
        with contextlib.suppress(Unavailable):  # dropped: it stepped down, having no quorum
            served = await leader.read_index(lease=True)
    assert served is None
