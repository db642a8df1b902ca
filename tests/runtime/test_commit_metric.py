"""The leader's commit latency (``univrs_raft_commit_seconds``) is observed once per run of
proposals handed over together (univrs/runtime/applier.py ``_observe_commits``), and records
exactly what one observation per proposal would."""

from __future__ import annotations

import trio
from prometheus_client import generate_latest

from univrs.metrics import Registry
from univrs.runtime.applier import _observe_commits
from univrs.runtime.events import Propose
from univrs.runtime.waiter import Waiter


async def test_runs_of_one_start_time_are_one_observation_each(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Frames proposed at 1.0 (three writes), 2.5 (two), 1.0 again (one) and 0.25 (one): four
    observations of the right counts, the buckets, sum and count of seven single ones. A
    version that observed each run's first proposal only (or merged runs that are not
    adjacent by their first start) records other buckets or another count and fails here."""
    await trio.sleep(10)  # the clock (frozen between checkpoints) at 10 s
    starts = [1.0, 1.0, 1.0, 2.5, 2.5, 1.0, 0.25]
    proposals = [Propose(b"", Waiter(), started) for started in starts]
    each, runs = Registry(), Registry()
    one = each.histogram("univrs_test_commit_seconds", "test")
    grouped = runs.histogram("univrs_test_commit_seconds", "test")
    calls: list[tuple[float, int]] = []

    class Recording:
        def observe(self, value: float, /) -> None:
            raise AssertionError("observed one by one")

        def observe_many(self, value: float, count: int, /) -> None:
            calls.append((value, count))
            grouped.observe_many(value, count)

    now = trio.current_time()
    for started in starts:
        one.observe(now - started)
    _observe_commits(Recording(), proposals)
    assert calls == [(now - 1.0, 3), (now - 2.5, 2), (now - 1.0, 1), (now - 0.25, 1)]
    assert grouped.count == one.count == 7
    assert generate_latest(runs.prom) == generate_latest(each.prom)
    _observe_commits(Recording(), [])
    assert len(calls) == 4
