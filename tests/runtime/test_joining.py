"""Joining after members were replaced (issue 10, bug 6), in-process nodes on loopback.

A brand-new member receives the log from index 1 and adopts the bootstrap configuration first.
When the leader is not a bootstrap voter, the old runtime gave the transport that
configuration's addresses only, so the joiner forgot its leader ("dropping messages to n4: no
address known for it") and never caught up. Writes here are fat so that the joiner's first
batch of entries holds the bootstrap configuration and none of the later ones.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from tests.api.helpers import WAIT, wait_until
from tests.runtime.nodes import Nodes, configs, settled_leader
from univrs.net.http import request_json
from univrs.raft.ready import Role
from univrs.runtime import membership as ms
from univrs.runtime.membership import DEFAULT_MAX_LAG
from univrs.server import joining
from univrs.server.node import Node

FAT = "x" * 4000  # one entry ~4 KB: a 64 KB append batch holds ~15 of them


async def fat_writes(api: str, prefix: str, count: int) -> None:
    for i in range(count):
        spec = {"name": f"{prefix}{i}", "image": "x", "replicas": 0, "args": [FAT]}
        r = await request_json(api, "POST", "/v1/workloads", body={"spec": spec}, timeout=20)
        assert r.status == 201, r.body


async def small_writes(api: str, prefix: str, count: int) -> None:
    async with trio.open_nursery() as nursery:  # a few at a time: they commit in groups
        for lane in range(5):
            nursery.start_soon(plain_writes, api, f"{prefix}{lane}-", count // 5)


async def plain_writes(api: str, prefix: str, count: int) -> None:
    for i in range(count):
        spec = {"name": f"{prefix}{i}", "image": "x", "replicas": 0}
        r = await request_json(api, "POST", "/v1/workloads", body={"spec": spec}, timeout=20)
        assert r.status == 201, r.body


def joined(node: Node) -> bool:
    return node.join.get("state") == "voter"


@contextmanager
def fail_with_join_state(node: Node) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        s = node.status()
        raise AssertionError(
            f"{exc}; {node.node_id}: join {node.join}, last index {s.last_index}, "
            f"voters {sorted(s.membership.voters)}, transport peers "
            f"{node.transport.peer_addresses()}"
        ) from None


async def replaced_first_member(nursery: trio.Nursery, folder: pathlib.Path) -> tuple[Nodes, Node]:
    """n1-n3 bootstrapped, fat writes, n4 joined and leads, n1 removed, then more writes.

    A later joiner's first batch of entries holds the bootstrap configuration (which lacks the
    leader) and none of the later ones; it ends up more than ``DEFAULT_MAX_LAG`` entries behind,
    so it is not promoted before it has caught up."""
    nodes = Nodes(nursery=nursery, configs=configs(folder, members=3, spares=2))
    for nid in ("n1", "n2", "n3"):
        await nodes.start(nid)
    leader = await settled_leader(nodes)
    await fat_writes(nodes.api(leader.node_id), "fat", 60)  # ~4 append batches of 64 KB
    n4 = await nodes.start("n4", join=nodes.api(leader.node_id))
    await wait_until(lambda: joined(n4), "n4 to join", WAIT * 2)
    leader = await wait_until(nodes.leader, "a leader")
    if leader is not n4:
        await ms.transfer_leader(leader.runtime, "n4", timeout=WAIT)
    await wait_until(lambda: n4.status().role is Role.LEADER, "n4 to lead")
    assert await settled_leader(nodes) is n4
    await ms.remove(n4.runtime, "n1")
    await nodes.kill("n1")
    await small_writes(nodes.api("n4"), "small", DEFAULT_MAX_LAG + 50)
    return nodes, n4


async def test_a_new_member_joins_when_the_leader_is_not_a_bootstrap_voter(
    tmp_path: pathlib.Path,
) -> None:
    """Fails on the old code: n5 stays a learner, dropping its answers to n4."""
    async with trio.open_nursery() as nursery:
        nodes, n4 = await replaced_first_member(nursery, tmp_path)
        n5 = await nodes.start("n5", join=nodes.api("n4"))
        with fail_with_join_state(n5):
            await wait_until(lambda: joined(n5), "n5 to join as a voter", WAIT * 2)
        await wait_until(
            lambda: n5.runtime.applied_index >= n4.runtime.applied_index - 1,
            "n5 to apply what n4 applied",
        )
        assert n5.status().membership.voters == {"n2", "n3", "n4", "n5"}
        # The join-time addresses are released once a configuration listing n5 is applied.
        assert n5.peer_map is not None and n5.peer_map.join_addresses == {}
        assert "n1" not in n5.transport.peer_addresses()
        assert n5.removed is None
        nursery.cancel_scope.cancel()


async def test_a_joiner_killed_while_catching_up_resumes_on_restart(
    tmp_path: pathlib.Path,
) -> None:
    """Fails on the old code: restarted with the same `--join`, the half-joined node (a
    "member" data dir) neither drove its join again nor could answer its leader."""
    async with trio.open_nursery() as nursery:
        nodes, n4 = await replaced_first_member(nursery, tmp_path)
        n5 = await nodes.start("n5", join=nodes.api("n4"))
        # Kill it once it holds entries, long before it has caught up.
        await wait_until(
            lambda: n5.status().last_index > 0,
            "n5 to receive its first entries",
            every=0.002,
        )
        await nodes.kill("n5")
        view = n4.status().membership
        assert "n5" in view.learners, view  # killed while joining: not promoted yet
        n5 = await nodes.start("n5", join=nodes.api("n4"))
        with fail_with_join_state(n5):
            await wait_until(lambda: joined(n5), "n5 to resume and join", WAIT * 2)
        assert n4.status().membership.voters == {"n2", "n3", "n4", "n5"}
        nursery.cancel_scope.cancel()


async def test_a_join_goes_on_through_another_member_when_its_target_dies(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the old code: the join asked only the member it was pointed at, so a joiner
    whose target left or died while it caught up polled the dead address until the join's
    10-minute timeout and never became a voter (chaos join-and-leave-under-load, seed 303 on
    lmdb: the spare joined via the follower that the next fault made leave). The join holds
    back its promotion (a lag bound below any lag) until the target is dead."""
    monkeypatch.setattr(joining, "DEFAULT_MAX_LAG", -1)
    async with trio.open_nursery() as nursery:
        nodes = Nodes(nursery=nursery, configs=configs(tmp_path, members=3, spares=1))
        for nid in ("n1", "n2", "n3"):
            await nodes.start(nid)
        leader = await settled_leader(nodes)
        target = next(n for n in ("n1", "n2", "n3") if n != leader.node_id)
        await small_writes(nodes.api(leader.node_id), "w", 20)
        n4 = await nodes.start("n4", join=nodes.api(target))
        await wait_until(
            lambda: n4.join.get("state") == "catching-up" and n4.status().last_index > 0,
            "n4 to be a learner that receives entries",
        )
        await nodes.kill(target)
        monkeypatch.setattr(joining, "DEFAULT_MAX_LAG", DEFAULT_MAX_LAG)
        with fail_with_join_state(n4):
            await wait_until(lambda: joined(n4), "n4 to join through another member", WAIT * 2)
        live = {"n1", "n2", "n3"} - {target}
        assert n4.status().membership.voters == {*live, target, "n4"}
        nursery.cancel_scope.cancel()
