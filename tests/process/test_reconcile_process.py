"""The reconciler with real processes: the leader is killed with SIGKILL during a scale from 0
to 50; the new leader's reconciler finishes it. Afterwards exactly 50 instances exist, none on
the machine that went down meanwhile (its instances were replaced elsewhere). The same as the
chaos scenario ``reconcile-leader-kill`` (``univrs chaos run reconcile-leader-kill``), run
here whole with its verdict."""

from __future__ import annotations

import pathlib
from typing import Any

import trio

from tests.api.helpers import wait_until
from univrs.chaos.report import PASS
from univrs.chaos.runner import RunOptions, run_scenario
from univrs.chaos.scenario import load
from univrs.client import open_client
from univrs.tools.devcluster import LocalCluster

from .conftest import DEADLINE

SPEC = {"name": "web", "image": "nginx:1.27", "replicas": 0}
REPLICAS = 50
MACHINES = ("m1", "m2", "m3", "m4", "m5")


async def _instances(client: Any) -> list[dict[str, Any]]:
    page = await client.list_instances(workload_id="w", limit=1000)
    assert not page.get("next")
    items: list[dict[str, Any]] = page["items"]
    return items


async def test_a_leader_killed_during_a_scale_to_50_leaves_exactly_50(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(
        3, extra_config="node_ttl_ms = 0\nreconcile_resync_ms = 1000\n"
    )
    cluster.start_all()
    first = await trio.to_thread.run_sync(cluster.wait_leader, DEADLINE * 2)
    endpoints = [n.raft_addr for n in cluster.nodes]
    async with open_client(endpoints, timeout=DEADLINE) as client:
        for machine in MACHINES:
            await client.register_node(machine)
        await client.create_workload(SPEC, id="w")
        await client.scale_workload("w", REPLICAS)

        async def some() -> bool:
            return len(await _instances(client)) >= 3

        # 16 to 32 of 50 at the kill in trials
        await wait_until(some, "the first placements", DEADLINE * 2)
        await trio.to_thread.run_sync(cluster.kill, first)
        await client.update_node_status("m5", "down")
        second = await trio.to_thread.run_sync(cluster.wait_leader, DEADLINE * 2)
        assert second.node_id != first.node_id

        async def converged() -> bool:
            return bool((await client.reconcile_status())["converged"])

        await wait_until(converged, "the new leader's reconciler to converge", DEADLINE * 4)
        instances = await _instances(client)
        assert len(instances) == REPLICAS
        assert {i["node_id"] for i in instances} <= {"m1", "m2", "m3", "m4"}
        assert len({i["id"] for i in instances}) == REPLICAS


SCENARIO = pathlib.Path(__file__).resolve().parents[2] / "chaos" / "reconcile-leader-kill.toml"


async def test_the_reconcile_leader_kill_chaos_scenario_passes(tmp_path: pathlib.Path) -> None:
    scenario = load(SCENARIO)
    assert scenario.scale is not None and scenario.scale.replicas == 50
    lines: list[str] = []
    with trio.fail_after(240):
        result = await run_scenario(scenario, tmp_path / "out", RunOptions(), lines.append)
    assert result.verdict == PASS, (result.reasons, result.scale)
    assert result.scale["instances"] == 50 and result.scale["converged"]
    assert "m5" not in result.scale["by_machine"]
    assert result.scale["instances_at_kill"] >= 3  # the kill came after placements began
    kills = [f for f in result.faults if f["kind"] == "kill"]
    assert len(kills) == 2 and all(f["targets"] for f in kills)
