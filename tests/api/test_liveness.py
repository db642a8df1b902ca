"""Node liveness on a real in-process cluster: a silent node goes down (its live instances
unknown) through the log, a heartbeat brings it back, heartbeating nodes stay ready across a
leader change (the new leader's grace period)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import trio

from tests.api.helpers import BY_HAND, open_cluster, wait_until
from tests.api.test_watch import spec
from univrs.client import NotFound, open_client

TTL_MS = 1500


async def heartbeat_forever(client: Any, node_id: str, every: float) -> None:
    while True:
        await client.heartbeat_node(node_id)
        await trio.sleep(every)  # the heartbeat period itself, not a synchronisation


async def test_a_silent_node_goes_down_and_a_heartbeat_brings_it_back(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        open_cluster(tmp_path, 3, node_ttl_ms=TTL_MS, **BY_HAND) as cluster,
        open_client(cluster.client_addresses(), timeout=20) as client,
    ):
        await client.create_workload(spec("w"), id="w")
        await client.register_node("m1")
        await client.register_node("m2")
        await client.create_instance("w", id="i1", node_id="m1")
        await client.update_instance_status("i1", "running")
        answer = await client.heartbeat_node("m1")
        assert answer["status"] == "ready" and answer["ttl_ms"] == TTL_MS
        with pytest.raises(NotFound):
            await client.heartbeat_node("nobody")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat_forever, client, "m2", TTL_MS / 5000)

            async def m1_down() -> bool:
                return bool((await client.get_node("m1"))["status"] == "down")

            await wait_until(m1_down, "m1 marked down", timeout=30)
            assert (await client.get_instance("i1"))["status"] == "unknown"
            assert (await client.get_node("m2"))["status"] == "ready"

            # A heartbeat through a follower's REST API is forwarded to the leader.
            follower = cluster.followers()[0]
            back = await cluster.http(follower, "POST", "/v1/nodes/m1/heartbeat", body={})
            assert back.status == 200, back.body
            assert back.body["status"] == "ready"
            assert (await client.get_node("m1"))["status"] == "ready"
            nursery.cancel_scope.cancel()


async def test_heartbeating_nodes_stay_ready_across_a_leader_change(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, 3, node_ttl_ms=TTL_MS, **BY_HAND) as cluster,
        open_client(cluster.client_addresses(), timeout=20) as client,
    ):
        await client.register_node("m1")
        start = (await client.list_nodes())["revision"] + 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat_forever, client, "m1", TTL_MS / 5000)
            old = await cluster.wait_leader()
            await cluster.kill(old.node_id)
            new = await cluster.wait_leader()
            assert new.node_id != old.node_id
            # Two TTLs under the new leader: a leader without a grace period (or one that
            # forgot heartbeats) would have marked m1 down by now.
            until = trio.current_time() + 2 * TTL_MS / 1000
            await wait_until(lambda: trio.current_time() >= until, "two ttls", timeout=30)
            page = await client.poll_events(kinds="nodes", from_revision=start)
            nursery.cancel_scope.cancel()
        statuses = [e["object"]["status"] for e in page["events"] if e["object"]]
        assert "down" not in statuses
        assert (await client.get_node("m1"))["status"] == "ready"
