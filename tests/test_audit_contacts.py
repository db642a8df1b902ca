"""s13-audit: the driver's last contact per sender is kept for members, not for every id a
peer ever claimed.

``RaftRuntime.last_contact`` (the member list's ``last_contact_s``) was written for the
sender of every message stepped, refused or not: a peer that reconnected under a new made-up
id each time (the transport bounds unlisted peers' open connections and per-peer state, not
ids over time) grew the driver's map by an entry per id, for the node's lifetime."""

from __future__ import annotations

import trio

from tests.runtime.memcluster import start_cluster, wait_until
from univrs.raft.messages import Heartbeat
from univrs.runtime.step import MAX_CONTACTS

FORGED = MAX_CONTACTS * 3


async def test_a_forgers_many_ids_are_not_all_remembered(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Fails on the code before: every forged id was still remembered."""
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    follower = next(r for r in cluster.runtimes.values() if r is not leader)
    term = follower.status().term

    def refused() -> int:
        return dict(follower.status().refused).get("stranger", 0)

    before = refused()
    for start in range(0, FORGED, 100):  # in steps: a full inbox drops, as a network may
        for k in range(start, start + 100):
            cluster.deliver(Heartbeat(term=term, src=f"forger{k}", dst=follower.node_id, commit=0))
        target = before + start + 100
        await wait_until(lambda: refused() >= target, "the forged heartbeats refused")  # noqa: B023
    remembered = sum(follower.last_contact(f"forger{k}") is not None for k in range(FORGED))
    assert remembered <= MAX_CONTACTS
    # Members' contacts are kept: the leader's heartbeats go on being noted.
    await wait_until(
        lambda: (follower.last_contact(leader.node_id) or 0) >= trio.current_time() - 1,
        "the leader's contact",
    )
    assert follower.status().term == term and follower.status().leader == leader.node_id
