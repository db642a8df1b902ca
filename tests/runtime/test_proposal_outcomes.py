"""How the driver ends a proposal's wait (issue 10, bug 5) and its ReadIndex ids (bug 3).

A proposal's waiter says "not applied" (``ProposalDropped``) only when that is proven, and
"unknown" (``OutcomeUnknown``) when its entry was covered by a snapshot. Read ids differ
between two processes of one node, so a late answer to the old process's read cannot release
a read of the new one.
"""

from __future__ import annotations

import trio

from tests.runtime.memcluster import (
    MemCluster,
    create,
    in_background,
    start_cluster,
    wait_leader,
    wait_until,
)
from univrs.errors import OutcomeUnknown, ProposalDropped
from univrs.raft.messages import Message, ReadIndexRequest, ReadIndexResponse
from univrs.raft.ready import Role
from univrs.runtime.driver import RaftRuntime
from univrs.sm.responses import Response

IDS = ["a", "b", "c"]


def failed(cluster: MemCluster, runtime: RaftRuntime, outcome: str) -> float | None:
    """``univrs_raft_proposals_failed_total{outcome}`` of this node."""
    return cluster.metrics[runtime.node_id].registry.value(
        "univrs_raft_proposals_failed_total", {"outcome": outcome}
    )


async def propose_in_background(
    nursery: trio.Nursery, runtime: RaftRuntime, name: str
) -> list[Response | Exception]:
    """Start ``runtime.propose(create(name))``; the list gets its response or its error."""
    return await in_background(nursery, lambda: runtime.propose(create(name)))


async def test_a_snapshot_covering_a_pending_proposal_makes_its_outcome_unknown(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The leader L is cut off inbound while its proposal w1 is in flight: its append still
    reaches the others, who elect a new leader that commits w1, writes on and compacts past it.
    When L hears again it installs the new leader's snapshot, which covers w1: L cannot tell
    whether w1 applied (it did), so its proposer must hear "unknown", not "dropped"."""
    cluster, old = await start_cluster(nursery, IDS)
    await old.propose(create("w0"))
    cluster.deaf.add(old.node_id)
    outcome = await propose_in_background(nursery, old, "w1")
    others = [i for i in IDS if i != old.node_id]
    new = await wait_leader(cluster, others)
    await wait_until(lambda: new.sm.get_workload("w1") is not None, "w1 to apply on the new leader")
    for i in range(5):
        await new.propose(create(f"after-{i}"))
    meta = await new.take_snapshot()
    assert meta is not None and meta.index > new.sm.get_workload("w1").created_index  # type: ignore[union-attr]
    assert new.status().first_index > meta.index  # compacted: w1 can only come in a snapshot
    assert not outcome, "the cut-off leader cannot know anything yet"
    cluster.deaf.clear()
    await wait_until(lambda: outcome, "the proposal on the old leader to end")
    assert isinstance(outcome[0], OutcomeUnknown), outcome
    assert (failed(cluster, old, "unknown"), failed(cluster, old, "dropped")) == (1, 0)
    await wait_until(lambda: old.applied_index >= meta.index, "the old leader to install it")
    assert old.status().role is Role.FOLLOWER
    assert old.sm.get_workload("w1") is not None  # it did apply, once, everywhere


async def test_an_entry_replaced_by_another_leaders_entry_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Proven not applied: the leader's entry never left it (cut off both ways) and the new
    leader committed a different entry at its index, which the old leader then applies."""
    cluster, old = await start_cluster(nursery, IDS)
    await old.propose(create("w0"))
    cluster.cut.add(old.node_id)
    outcome = await propose_in_background(nursery, old, "w1")
    others = [i for i in IDS if i != old.node_id]
    new = await wait_leader(cluster, others)
    await new.propose(create("w2"))
    cluster.cut.clear()
    await wait_until(lambda: outcome, "the proposal on the old leader to end")
    assert isinstance(outcome[0], ProposalDropped), outcome
    assert (failed(cluster, old, "unknown"), failed(cluster, old, "dropped")) == (0, 1)
    await wait_until(lambda: old.sm.get_workload("w2") is not None, "the old leader to catch up")
    assert all(r.sm.get_workload("w1") is None for r in cluster.runtimes.values())


async def test_read_ids_of_a_restarted_process_never_match_the_old_ones(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A follower's read of its previous process is answered late (the answer sat in the
    leader's send queue across the restart). The new process's read must not be released by
    it: with ids restarting at 1, the stale answer matched the new read and served it at the
    old, lower index."""
    cluster, leader = await start_cluster(nursery, IDS)
    await leader.propose(create("w0"))
    fid = next(i for i in IDS if i != leader.node_id)
    requests: list[ReadIndexRequest] = []

    def watch(msg: Message) -> None:
        if isinstance(msg, ReadIndexRequest) and msg.src == fid:
            requests.append(msg)

    cluster.watchers.append(watch)
    old_index = await cluster.runtimes[fid].read_index()
    assert len(requests) == 1
    old_ctx = requests[0].ctx

    await cluster.stop(fid)
    follower = await cluster.start(fid)
    await wait_until(lambda: follower.status().leader == leader.node_id, "the leader to be known")
    for i in range(3):
        await leader.propose(create(f"later-{i}"))
    current = leader.status().commit
    assert current > old_index

    # Hold the new read's request until the stale answer was delivered.
    cluster.hold = lambda msg: isinstance(msg, ReadIndexRequest) and msg.src == fid
    read: list[int] = []

    async def new_read() -> None:
        read.append(await follower.read_index())

    nursery.start_soon(new_read)
    await wait_until(lambda: cluster.held, "the new read's request")
    new_request = cluster.held[0]
    assert isinstance(new_request, ReadIndexRequest)
    cluster.deliver(
        ReadIndexResponse(
            term=leader.status().term,
            src=leader.node_id,
            dst=fid,
            ctx=old_ctx,
            index=old_index,
            ok=True,
        )
    )
    # The stale answer is in the new process's inbox before the leader even sees the request.
    cluster.hold = None
    for msg in cluster.held:
        cluster.deliver(msg)
    await wait_until(lambda: read, "the new read")
    assert read[0] >= current, f"a late answer to the old process's read served it at {read}"
    assert new_request.ctx != old_ctx
