"""A watch across a kill -9 of the node serving it, and node liveness, with real processes.

The watcher lists, then watches workloads from the list's revision + 1 while a writer creates
workloads one by one; once the watcher has seen some, the node serving its polls (the leader:
the client follows it) is killed with SIGKILL. The client resumes on another member from the
last revision it saw + 1: every workload's creation is seen exactly once, in order.

Liveness: a registered machine that stops heartbeating is marked down by the leader within its
TTL (plus the new leader's grace); a heartbeat brings it back.
"""

from __future__ import annotations

from typing import Any

import trio

from tests.api.helpers import wait_until
from univrs.client import open_client
from univrs.tools.devcluster import LocalCluster

from .conftest import DEADLINE

SPEC = {"name": "web", "image": "nginx:1.27"}


async def test_a_watch_resumes_with_no_gap_after_its_node_is_killed(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    await trio.to_thread.run_sync(cluster.wait_leader, DEADLINE * 2)
    endpoints = [n.raft_addr for n in cluster.nodes]
    total, kill_at = 30, 10
    seen: list[dict[str, Any]] = []
    async with (
        open_client(endpoints, timeout=DEADLINE) as watcher,
        open_client(endpoints, timeout=DEADLINE) as writer,
    ):
        start = (await watcher.list_workloads())["revision"] + 1
        served_by: list[str] = []

        async def watch() -> None:
            async for event in watcher.watch(["workloads"], from_revision=start, wait=1.0):
                seen.append(event)
                if len(seen) == total:
                    return

        with trio.fail_after(DEADLINE * 6):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for i in range(total):
                    await writer.create_workload({**SPEC, "name": f"w{i}"}, id=f"w{i:02d}")
                    if i + 1 == kill_at:
                        await wait_until(
                            lambda: len(seen) >= kill_at, "the first events", DEADLINE * 2
                        )
                        serving = watcher.node_id
                        assert serving is not None
                        served_by.append(serving)
                        await trio.to_thread.run_sync(cluster.kill, cluster.node(serving))
        served_by.append(watcher.node_id or "?")
    assert [e["id"] for e in seen] == [f"w{i:02d}" for i in range(total)]  # no gap, no dup
    revisions = [e["revision"] for e in seen]
    assert revisions == sorted(set(revisions))
    assert all(e["type"] == "put" and e["prev"] is None for e in seen)
    assert served_by[0] != served_by[1], served_by


async def test_a_silent_machine_goes_down_and_comes_back_with_a_heartbeat(
    make_cluster: Any,
) -> None:
    # Instances placed by hand: the reconciler (on by default) stays off.
    cluster: LocalCluster = make_cluster(
        3, extra_config="node_ttl_ms = 2000\nreconcile_resync_ms = 0\n"
    )
    cluster.start_all()
    await trio.to_thread.run_sync(cluster.wait_leader, DEADLINE * 2)
    endpoints = [n.raft_addr for n in cluster.nodes]
    async with open_client(endpoints, timeout=DEADLINE) as client:
        await client.create_workload(SPEC, id="w")
        await client.register_node("m1")
        await client.create_instance("w", id="i1", node_id="m1")
        await client.update_instance_status("i1", "running")
        start = (await client.list_nodes())["revision"] + 1
        assert (await client.heartbeat_node("m1"))["ttl_ms"] == 2000

        async def down() -> bool:
            return bool((await client.get_node("m1"))["status"] == "down")

        await wait_until(down, "m1 marked down after its ttl", DEADLINE * 2)
        assert (await client.get_instance("i1"))["status"] == "unknown"
        assert (await client.heartbeat_node("m1"))["status"] == "ready"
        page = await client.poll_events(kinds="nodes", from_revision=start)
    statuses = [e["object"]["status"] for e in page["events"]]
    assert statuses == ["down", "ready"]
