"""Status watchers pay only for what they watch (issue 14, univrs/runtime/view.py).

``wait_changed`` wakes on a change of role, leader, term or a membership, not on commit or
apply progress; ``wait_applied(index)`` wakes only once ``index`` is applied. The first test
fails on the old code (42d3147), where every commit and every apply woke every status
watcher: six tasks per node, twice per write.
"""

from __future__ import annotations

import random

import trio
import trio.testing

from tests.runtime.memcluster import TICK, MemCluster, create, wait_leader, wait_until
from univrs.raft import Membership, RaftNode, bootstrap_state
from univrs.runtime import membership as ms
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.view import RuntimeView

QUIET = 20 * TICK  # a wake-up that did not happen can only be seen as none in some time


async def _count_wakes(
    runtime: RaftRuntime, wakes: list[int], *, task_status: trio.TaskStatus[None]
) -> None:
    task_status.started()
    while True:
        await runtime.wait_changed()
        wakes.append(1)


async def _settled(cluster: MemCluster) -> RaftRuntime:
    """The leader, once every node knows it and has applied everything it has."""
    leader = await wait_leader(cluster)

    def settled() -> bool:
        last = leader.status().last_index
        return all(
            r.status().applied == last and r.status().leader == leader.node_id
            for r in cluster.runtimes.values()
        )

    await wait_until(settled, "every node applied the leader's log")
    return leader


async def test_writes_wake_no_status_watcher_but_changes_wake_them_all(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cluster = MemCluster.build(nursery, ["a", "b", "c"])
    await cluster.start_all()
    leader = await _settled(cluster)
    wakes: dict[str, list[int]] = {n: [] for n in cluster.runtimes}
    async with trio.open_nursery() as watchers:
        for node_id, runtime in cluster.runtimes.items():
            await watchers.start(_count_wakes, runtime, wakes[node_id])

        # Writes: commits and applies on every node, nothing else changes.
        for i in range(5):
            await leader.propose(create(f"w{i}"))
        async with trio.open_nursery() as writers:
            for i in range(5, 10):
                writers.start_soon(leader.propose, create(f"w{i}"))
        await _settled(cluster)
        await trio.sleep(QUIET)
        assert {n: len(w) for n, w in wakes.items()} == {"a": 0, "b": 0, "c": 0}

        # A membership change wakes every node's watchers (the newest configuration), and
        # ``change`` itself waits for its index with ``wait_applied``.
        with trio.fail_after(60):
            await ms.add_learner(leader, "d", "d", None)
        await wait_until(
            lambda: all("d" in r.applied_membership.members for r in cluster.runtimes.values()),
            "the learner applied everywhere",
        )
        assert all(wakes.values()), wakes

        # A new leader (role, leader, term) wakes the watchers of the nodes that stay.
        for w in wakes.values():
            w.clear()
        cluster.cut.add(leader.node_id)
        others = [n for n in cluster.runtimes if n != leader.node_id]
        await wait_leader(cluster, others)
        await wait_until(lambda: all(wakes[n] for n in others), "the followers' watchers woke")
        watchers.cancel_scope.cancel()


async def test_wait_applied_wakes_at_its_index_only(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cluster = MemCluster.build(nursery, ["a", "b", "c"])
    await cluster.start_all()
    leader = await _settled(cluster)
    follower = next(r for r in cluster.runtimes.values() if r is not leader)
    target = leader.applied_index + 3
    reached: list[int] = []

    async def wait_for_target() -> None:
        await follower.wait_applied(target)
        reached.append(follower.applied_index)

    nursery.start_soon(wait_for_target)
    for i in range(2):
        await leader.propose(create(f"w{i}"))
    await wait_until(lambda: follower.applied_index == target - 1, "two writes applied")
    await trio.sleep(QUIET)
    assert reached == []
    await leader.propose(create("w2"))
    await wait_until(lambda: reached, "the waiter woke")
    assert reached == [target]
    await follower.wait_applied(target - 5)  # an index already applied returns at once

    # A waiter that gives up leaves no threshold behind (no quorum: its index never comes).
    with trio.move_on_after(1.0):
        await follower.wait_applied(target + 100)
    assert follower.view._applied_waits == {} and follower.view._thresholds == []


async def test_the_applied_membership_wakes_only_when_it_changes() -> None:
    first = Membership(voters=frozenset({"a"}))
    core = RaftNode("a", rng=random.Random(1), initial=bootstrap_state(first))
    view = RuntimeView(core, applied_membership=first)
    woke: list[int] = []

    async def waiter() -> None:
        await view.wait_changed()
        woke.append(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        view.applied_membership = first  # the same configuration again: nothing changed
        view.refresh()  # the driver's, after the apply loop's report
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        view.applied_membership = Membership(voters=frozenset({"a", "b"}))
        view.refresh()
        await trio.testing.wait_all_tasks_blocked()
        assert woke == [1]


def test_the_view_remembers_that_an_applied_configuration_listed_this_node() -> None:
    """``listed_self``: once any applied configuration listed the node, it stays True whatever
    is applied after (the removal watch of univrs/server/node.py relies on it)."""
    other = Membership(voters=frozenset({"b", "c"}))
    core = RaftNode("a", rng=random.Random(1), initial=bootstrap_state(other))
    view = RuntimeView(core, applied_membership=Membership(voters=frozenset()))
    assert not view.listed_self
    view.applied_membership = other
    assert not view.listed_self
    view.applied_membership = Membership(voters=frozenset({"a", "b", "c"}))
    assert view.listed_self
    view.applied_membership = other  # removed again
    assert view.listed_self
