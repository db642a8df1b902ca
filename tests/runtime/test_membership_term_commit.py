"""A leader that has not committed an entry of its term yet refuses configuration changes
(univrs/raft/node.py, the single-server-change correction); the runtime's ``change`` waits for
that commit and proposes then, instead of failing a `cluster leave` or a join issued just
after an election or a leader transfer."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.runtime.memcluster import MemCluster, wait_leader, wait_until
from univrs.errors import CommitPending
from univrs.raft.messages import AppendEntriesResponse, Membership
from univrs.runtime import membership as ms


async def test_a_change_waits_for_the_new_leaders_first_commit(nursery: trio.Nursery) -> None:
    """Fails on the old ``change``: it turned the core's refusal into MembershipBusy at once."""
    cluster = MemCluster.build(nursery, ["a", "b", "c"])
    # No follower's acknowledgement reaches anyone: the leader's no-op cannot commit.
    cluster.hold = lambda msg: isinstance(msg, AppendEntriesResponse)
    await cluster.start_all()
    leader = await wait_leader(cluster)
    assert leader.status().commit < leader.status().last_index

    with pytest.raises(CommitPending):  # the core's rule, before the change is asked for
        await leader.call(lambda core: core.propose_membership(core.status().membership))
    done: list[Membership] = []

    async def add() -> None:
        done.append(await ms.add_learner(leader, "d", "d", None, incarnation="i-d"))

    nursery.start_soon(add)
    await trio.testing.wait_all_tasks_blocked()
    assert done == []  # waiting, not failed (a failure would have ended the test's nursery)
    cluster.hold = None
    held, cluster.held = cluster.held, []
    for msg in held:
        cluster.deliver(msg)
    await wait_until(lambda: done, "the change to commit")
    assert "d" in done[0].learners
    assert "d" in leader.status().membership.learners


async def test_a_change_waits_for_the_previous_change_to_commit(nursery: trio.Nursery) -> None:
    """Fails on the old ``change``: the second change failed at once ("the previous one ...
    is not committed yet")."""
    cluster = MemCluster.build(nursery, ["a", "b", "c"])
    await cluster.start_all()
    leader = await wait_leader(cluster)
    await wait_until(lambda: leader.applied_index == leader.status().last_index, "a settled log")
    cluster.hold = lambda msg: isinstance(msg, AppendEntriesResponse)
    done: list[Membership] = []

    async def add(node_id: str) -> None:
        done.append(
            await ms.add_learner(leader, node_id, node_id, None, incarnation=f"i-{node_id}")
        )

    nursery.start_soon(add, "d")
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(add, "e")
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(CommitPending):  # the core refuses a second change now
        await leader.call(lambda core: core.propose_membership(core.status().membership))
    assert done == []
    cluster.hold = None
    held, cluster.held = cluster.held, []
    for msg in held:
        cluster.deliver(msg)
    await wait_until(lambda: len(done) == 2, "both changes to commit")
    assert {"d", "e"} <= leader.status().membership.learners
