"""Lease reads in the Trio runtime: the core's clock follows the monotonic clock."""

from __future__ import annotations

import contextlib
import random

import trio
import trio.testing

from tests.runtime.memcluster import MemoryStore
from tests.runtime.test_driver import TICK, MemoryNet, leader_of, start_all, wait_until
from univrs.errors import Unavailable
from univrs.raft import Membership, RaftNode, bootstrap_state
from univrs.raft.ready import RaftConfig
from univrs.runtime.driver import RaftRuntime
from univrs.sm.state import ClusterStateMachine

LEASE = RaftConfig(heartbeat_ticks=1, election_ticks_min=6, election_ticks_max=10, read_lease=True)


def lease_cluster(ids: list[str]) -> MemoryNet:
    net = MemoryNet()
    membership = Membership(voters=frozenset(ids))
    for i, nid in enumerate(ids):
        core = RaftNode(
            nid, rng=random.Random(100 + i), config=LEASE, initial=bootstrap_state(membership)
        )
        net.runtimes[nid] = RaftRuntime(
            core=core,
            sm=ClusterStateMachine(),
            storage=MemoryStore(),
            transport=net,
            tick_seconds=TICK,
            write_in_thread=False,
        )
    return net


async def test_a_stalled_leader_serves_no_lease_read_from_before_the_stall(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = lease_cluster(["a", "b", "c"])
    await start_all(nursery, net)
    await wait_until(lambda: (lead := leader_of(net)) is not None and lead.status().lease, "lease")
    leader = leader_of(net)
    assert leader is not None
    assert await leader.read_index(lease=True) >= 1  # served from the lease
    # The leader's process stalls for a second (20 ticks): the followers elect another leader
    # meanwhile (here: they are cut off). Its first lease read after the stall must not be
    # served from the lease it held before: the driver catches the missed ticks up first (a
    # driver that skipped them, as without leases, answered at once from the stale lease).
    net.cut |= {n for n in net.runtimes if n != leader.node_id}
    autojump_clock.jump(20 * TICK)
    served = None
    with trio.move_on_after(TICK / 2):
        with contextlib.suppress(Unavailable):  # dropped: it stepped down, having no quorum
            served = await leader.read_index(lease=True)
    assert served is None
