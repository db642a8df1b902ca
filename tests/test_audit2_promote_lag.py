"""s13-audit2: a promotion judges the learner's lag when it is proposed, not when it was asked.

``membership.promote`` measured the learner's lag once, before ``change`` ran; ``change`` then
waits when the core refuses (``CommitPending``: the first entry of a new leader's term, or an
earlier configuration change, is uncommitted) and builds the change again: with the lag of
before the wait. A learner that fell far behind meanwhile (cut off while the leader appended)
was promoted to voter past ``max_lag``. The lag is now measured each time the change is built.
"""

from __future__ import annotations

import contextlib
import functools

import trio
import trio.testing

from tests.runtime.memcluster import MemCluster, create, wait_leader, wait_until
from univrs.errors import UnivrsError
from univrs.raft.messages import AppendEntriesResponse
from univrs.runtime import membership as ms


async def test_a_promotion_waiting_for_a_commit_measures_the_lag_again(
    nursery: trio.Nursery,
) -> None:
    cluster = MemCluster.build(nursery, ["a", "b", "c"])
    await cluster.start_all()
    leader = await wait_leader(cluster)
    # A learner with no process: the leader's log is ahead of it by its whole length.
    await ms.add_learner(leader, "d", "d", None, incarnation="i-d")
    await wait_until(lambda: leader.applied_index == leader.status().last_index, "a settled log")
    lag = ms.learner_lag(leader, "d")
    assert lag is not None

    # An earlier change pending (no acknowledgement reaches the leader): a promotion waits.
    cluster.hold = lambda msg: isinstance(msg, AppendEntriesResponse)
    nursery.start_soon(functools.partial(ms.add_learner, leader, "e", "e", None, incarnation="i-e"))
    await trio.testing.wait_all_tasks_blocked()
    outcome: list[object] = []

    async def promote() -> None:
        try:
            outcome.append(await ms.promote(leader, "d", max_lag=lag + 1))
        except ms.MembershipError as exc:
            outcome.append(exc)

    nursery.start_soon(promote)
    await trio.testing.wait_all_tasks_blocked()
    assert outcome == []  # waiting for the pending change to commit

    # Meanwhile the leader appends: the learner falls further behind than max_lag allows.
    async def write(name: str) -> None:
        with contextlib.suppress(UnivrsError):  # its outcome is not what is tested
            await leader.propose(create(name))

    for i in range(5):
        nursery.start_soon(write, f"w{i}")
    await trio.testing.wait_all_tasks_blocked()
    behind = ms.learner_lag(leader, "d")
    assert behind is not None and behind > lag + 1

    cluster.hold = None
    held, cluster.held = cluster.held, []
    for msg in held:
        cluster.deliver(msg)
    await wait_until(lambda: outcome, "the promotion to be decided")
    assert isinstance(outcome[0], ms.MembershipError), outcome
    assert "not caught up" in str(outcome[0])
    assert "d" in leader.status().membership.learners
