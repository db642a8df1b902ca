"""A follower's write goes before the apply its append brought (issue 14, round 15; step.py
``apply_committed``).

One client's append N+1 carries the commit of N. The follower's step starts N+1's synced write
(its worker thread needs the GIL to start it) and has N to apply; an apply on the loop right
then runs before the write and delays the fsync, and so the ack the leader waits for, by the
apply's length (docs/performance.md, Round 15). So a follower applies such commits once that
write reported, in order; a leader applies at once.
"""

from __future__ import annotations

import trio
import trio.testing

from tests.runtime.memcluster import MemCluster, create, start_cluster, wait_until
from univrs.runtime.driver import RaftRuntime
from univrs.sm.responses import Failure


def watch_applies(cluster: MemCluster) -> list[tuple[str, int, bool]]:
    """From now on, every apply on every node (on the driver's step or in the apply loop):
    (node, applied index, was a synced write in progress on that node)."""
    seen: list[tuple[str, int, bool]] = []
    for runtime in cluster.runtimes.values():
        applier = runtime._applier
        inner = applier.after_apply

        def after(runtime: RaftRuntime = runtime, inner: object = inner) -> None:
            seen.append((runtime.node_id, runtime.applied_index, runtime._writer.writing))
            inner()  # type: ignore[operator]

        applier.after_apply = after
    return seen


async def settled(cluster: MemCluster, leader: RaftRuntime) -> None:
    last = leader.status().last_index
    await wait_until(
        lambda: all(r.applied_index == last for r in cluster.runtimes.values()),
        "every node applied the leader's log",
    )


async def test_a_follower_applies_after_the_write_its_append_started(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Fails on the driver before round 15, which applied each commit in the step that started
    the next entry's write: every follower apply then ran with that write in progress."""
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    await settled(cluster, leader)
    seen = watch_applies(cluster)
    for i in range(10):
        response = await leader.propose(create(f"w{i}"))
        assert not isinstance(response, Failure), response
    await settled(cluster, leader)
    followers = {n for n in cluster.runtimes if n != leader.node_id}
    applies = [s for s in seen if s[0] in followers]
    assert {n for n, _, _ in applies} == followers
    assert [s for s in applies if s[2]] == [], applies  # none while a write was in progress
    for node in followers:  # each follower applied every write, in order
        indexes = [index for n, index, _ in applies if n == node]
        assert indexes == sorted(indexes) and indexes[-1] == leader.status().last_index
    for runtime in cluster.runtimes.values():
        assert all(runtime.sm.get_workload(f"w{i}") for i in range(10)), runtime.node_id
