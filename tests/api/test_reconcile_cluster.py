"""The reconciler on a real in-process cluster: a scale from 0 to 50 with the leader killed
mid-way (and a machine going down) ends with exactly 50 instances, none on the down machine."""

from __future__ import annotations

import pathlib
from typing import Any

import trio

from tests.api.helpers import open_cluster, wait_until
from tests.api.test_watch import spec
from univrs.client import open_client

REPLICAS = 50


async def all_instances(client: Any, workload_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = None
    while True:
        page = await client.list_instances(workload_id=workload_id, limit=1000, after=after)
        found.extend(page["items"])
        after = page.get("next")
        if not after:
            return found


async def test_scale_to_50_survives_a_leader_kill_and_a_machine_going_down(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        open_cluster(tmp_path, 3, node_ttl_ms=0, reconcile_resync_ms=500) as cluster,
        open_client(cluster.client_addresses(), timeout=20) as client,
    ):
        for m in ("m1", "m2", "m3", "m4", "m5"):
            await client.register_node(m)
        await client.create_workload({**spec("w"), "replicas": 0}, id="w")
        first = await cluster.wait_leader()
        await client.scale_workload("w", REPLICAS)

        # Kill the leader once its reconciler has placed some, but (in trials) not all: its
        # writes go 8 at a time.
        async def some_placed() -> bool:
            return len(await all_instances(client, "w")) >= 5

        await wait_until(some_placed, "the first placements", timeout=30)
        await cluster.kill(first.node_id)
        await client.update_node_status("m5", "down")
        second = await cluster.wait_leader(timeout=30)
        assert second.node_id != first.node_id

        async def converged() -> bool:
            status = await client.reconcile_status()
            return bool(status["converged"])

        await wait_until(converged, "the reconciler converged", timeout=60)
        instances = await all_instances(client, "w")
        assert len(instances) == REPLICAS
        assert all(i["node_id"] in ("m1", "m2", "m3", "m4") for i in instances), instances
        per_node = {
            m: sum(1 for i in instances if i["node_id"] == m) for m in ("m1", "m2", "m3", "m4")
        }
        assert max(per_node.values()) - min(per_node.values()) <= 1, per_node  # spread by load
        assert second.reconciler is not None and second.reconciler.active_term is not None
        status = await client.reconcile_status()
        assert status["workloads"] == [
            {
                "workload": "w",
                "desired": REPLICAS,
                "live": REPLICAS,
                "to_place": 0,
                "to_remove": 0,
                "lost": 0,
                "pending": 0,
                "reason": "",
            }
        ]

        # Scale down: the surplus goes, and the followers' reconcilers never ran.
        await client.scale_workload("w", 7)
        await wait_until(converged, "scaled down", timeout=60)
        assert len(await all_instances(client, "w")) == 7
        for node in cluster.followers():
            assert node.reconciler is not None and node.reconciler.metrics.placed == 0
        with trio.fail_after(5):
            assert (await client.reconcile_status())["converged"]
