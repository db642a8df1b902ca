"""A step that only moves the commit or the applied index does not rebuild the status
(session 30: step.py ``_finish_step``, view.py ``mark_moved``): each follower's append and
commit notice used to rebuild it, once per batch each. What the view shows is unchanged:
``last_status`` still holds the current role, leader, term and commit (and now everything
else: it rebuilds after such a step), ``status`` is the core's own, and ``wait_changed``
still fires when a membership is applied (test_view_waits.py) and not for writes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
import trio.testing

from tests.runtime.memcluster import MemCluster, create, wait_leader, wait_until
from univrs.raft.node import RaftNode
from univrs.runtime import membership as ms
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.step import StepLoop

_SHOWN = ("role", "leader", "term", "vote", "commit", "applied", "membership", "config_index")


@pytest.fixture
def checked_steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """After every driver step of every runtime: ``last_status`` shows the core's current
    role, leader, term, vote, commit, applied index and membership, and ``status`` is equal
    to a status the core builds now. Yields the ids of the nodes checked, once per step."""
    steps: list[str] = []
    finish = StepLoop._finish_step

    def checked(self: RaftRuntime) -> None:
        finish(self)
        core = self.core.status()
        last = self.view.last_status()
        assert {f: getattr(last, f) for f in _SHOWN} == {f: getattr(core, f) for f in _SHOWN}
        assert self.view.status() == core
        steps.append(self.node_id)

    monkeypatch.setattr(StepLoop, "_finish_step", checked)
    yield steps


async def test_the_view_shows_the_cores_state_after_every_step(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, checked_steps: list[str]
) -> None:
    cluster = MemCluster.build(nursery, ["a", "b", "c"])
    await cluster.start_all()
    leader = await wait_leader(cluster)
    for i in range(5):
        await leader.propose(create(f"w{i}"))
    async with trio.open_nursery() as writers:
        for i in range(5, 25):
            writers.start_soon(leader.propose, create(f"w{i}"))
    with trio.fail_after(60):
        await ms.add_learner(leader, "d", "d", None)
    await wait_until(
        lambda: all("d" in r.applied_membership.members for r in cluster.runtimes.values()),
        "the learner applied everywhere",
    )
    for i in range(25, 30):
        await leader.propose(create(f"w{i}"))
    assert {"a", "b", "c"} <= set(checked_steps)
    assert len(checked_steps) > 100


async def test_a_followers_writes_build_no_status_when_nobody_looks(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes move only the followers' commit and applied indexes: their drivers build no
    status for them (the old code built one at every such step), and the first look after
    them builds it, current."""
    cluster = MemCluster.build(nursery, ["a", "b", "c"])
    await cluster.start_all()
    leader = await wait_leader(cluster)
    await leader.propose(create("w"))
    follower = next(r for r in cluster.runtimes.values() if r is not leader)
    await wait_until(lambda: follower.applied_index == leader.applied_index, "caught up")
    follower.view.status()
    built: list[int] = []
    status = RaftNode.status

    def counted(self: RaftNode) -> object:
        if self is follower.core:
            built.append(1)
        return status(self)

    monkeypatch.setattr(RaftNode, "status", counted)
    for i in range(10):
        await leader.propose(create(f"w{i}"))
    await wait_until(lambda: follower.applied_index == leader.applied_index, "caught up")
    assert built == []
    last = follower.view.last_status()
    assert built == [1]
    assert (last.commit, last.applied) == (leader.status().commit, leader.applied_index)
