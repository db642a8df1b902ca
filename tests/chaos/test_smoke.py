"""Real processes: the digest endpoint, and the smoke scenario end to end (under 2 minutes).

The smoke scenario starts three `univrs node start` processes behind fault proxies, runs the
workload while it kills the leader and isolates a follower, heals, and checks everything; it
must pass. A deliberately broken variant (a node's data wiped while it is down, so it comes
back as a stranger) must be caught by the checks, showing they can fail.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import pytest
import trio

from tests.api.helpers import wait_until
from univrs.chaos.history import read_jsonl
from univrs.chaos.monitor import fetch_json
from univrs.chaos.report import PASS
from univrs.chaos.runner import RunOptions, run_scenario
from univrs.chaos.scenario import load, parse
from univrs.client import open_client
from univrs.tools.devcluster import LocalCluster

pytestmark = pytest.mark.process

SMOKE = pathlib.Path(__file__).resolve().parents[2] / "chaos" / "smoke.toml"
DEADLINE = 60.0


async def test_digest_endpoint_agrees_across_replicas(tmp_path: pathlib.Path) -> None:
    cluster = LocalCluster.with_free_ports(tmp_path / "c", size=3)
    try:
        await trio.to_thread.run_sync(cluster.start_all)
        await trio.to_thread.run_sync(cluster.wait_leader, DEADLINE)
        async with open_client([n.raft_addr for n in cluster.nodes], timeout=10.0) as client:
            for i in range(5):
                spec = {"name": f"w{i}", "image": "x", "labels": {"k": str(i)}}
                await client.create_workload(spec, id=f"w{i}")
        api = [n.api_addr for n in cluster.nodes]

        async def same_applied() -> Any:
            views = [await fetch_json(a, "/v1/node/digest", 2.0) for a in api]
            if all(views) and len({v["applied_index"] for v in views}) == 1:
                return views
            return None

        views = await wait_until(
            same_applied, "replicas to apply the same index", DEADLINE, every=0.2
        )
        assert len({v["state_digest"] for v in views}) == 1
        assert views[0]["state_digest"].startswith("sha256:")
        hi = views[0]["applied_index"]
        logs = [await fetch_json(a, f"/v1/node/digest?log_from=1&log_to={hi}", 2.0) for a in api]
        assert len({doc["log_digest"] for doc in logs}) == 1
        assert logs[0]["log_from"] == 1 and logs[0]["log_to"] == hi
        shorter = await fetch_json(api[0], f"/v1/node/digest?log_from=1&log_to={hi - 1}", 2.0)
        assert shorter["log_digest"] != logs[0]["log_digest"]
        # beyond the applied index: refused with a JSON error
        beyond = await fetch_json(api[0], f"/v1/node/digest?log_from=1&log_to={hi + 100}", 2.0)
        assert beyond is None  # 422: get_json raises, fetch_json answers None
    finally:
        await trio.to_thread.run_sync(cluster.stop_all)


async def test_smoke_scenario_passes(tmp_path: pathlib.Path) -> None:
    scenario = load(SMOKE)
    assert scenario.duration + scenario.recovery <= 60  # stays a smoke test
    out = tmp_path / "out"
    lines: list[str] = []
    with trio.fail_after(110):
        result = await run_scenario(scenario, out, RunOptions(check_timeout=30.0), lines.append)
    assert result.verdict == PASS, (result.reasons, result.linearizability)
    assert result.ok_ops > 50
    assert [f["kind"] for f in result.faults] == ["kill", "partition"]
    assert all(f["targets"] for f in result.faults)
    assert result.convergence["same_state"] and result.convergence["same_log"]
    assert result.lost_writes == [] and result.dead == []
    # the out dir a person looks at
    events = read_jsonl(out / "history.jsonl")
    assert len(events) >= 2 * result.ok_ops
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == PASS
    page = (out / "report.html").read_text()
    assert "<svg" in page and "kill leader" in page
    assert (out / "summary.txt").read_text().startswith("scenario smoke")
    assert sorted(p.name for p in (out / "cluster").glob("*.log")) == ["n1.log", "n2.log", "n3.log"]
    assert any("healed" in line for line in lines)


async def test_checks_catch_lost_acknowledged_writes(tmp_path: pathlib.Path) -> None:
    """Sabotage: every node's data dir is wiped while the cluster is down, so it comes back
    empty when everything is healed (and the workload stops). With two clients writing three
    keys, at least one key's acknowledged writes can only be lost: the run must fail."""
    scenario = parse(
        {
            "name": "sabotage",
            "duration": 5,
            "recovery": 0,
            "workload": {"clients": 2, "keys": 3, "rate": 20, "timeout": 2.0,
                         "mix": {"write": 1}},
            "fault": [{"kind": "full-restart", "at": 2, "duration": 10}],
        }
    )  # fmt: skip
    import univrs.chaos.faults as faults_module

    original = faults_module.Injector._proc_sync

    def wipe_on_start(self: Any, action: str, node: Any) -> None:
        if action == "start":
            shutil.rmtree(node.data_dir, ignore_errors=True)
        original(self, action, node)

    faults_module.Injector._proc_sync = wipe_on_start  # type: ignore[method-assign]
    try:
        with trio.fail_after(110):
            result = await run_scenario(
                scenario, tmp_path / "out", RunOptions(check_timeout=10.0), lambda _line: None
            )
    finally:
        faults_module.Injector._proc_sync = original  # type: ignore[method-assign]
    assert result.verdict != PASS
    assert result.linearizability["verdict"] == "not-linearizable", result.linearizability
    assert "the history is not linearizable" in result.reasons
    assert result.lost_writes, result.final_values


async def test_a_node_killed_from_outside_fails_the_run(tmp_path: pathlib.Path) -> None:
    """A node that dies without the injector killing it is reported with time and signal,
    restarted at healing, and fails the verdict."""
    import os
    import signal

    scenario = parse(
        {
            "name": "outside-kill",
            "duration": 6,
            "recovery": 2,
            "workload": {"clients": 2, "keys": 1, "rate": 20, "timeout": 2.0},
        }
    )
    out = tmp_path / "out"

    async def assassin() -> None:
        history = out / "history.jsonl"
        pid_file = out / "cluster" / "n2.pid"

        async def started() -> bool:
            return history.exists() and len(history.read_text().splitlines()) > 10

        await wait_until(started, "the workload to start", DEADLINE, every=0.2)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    result: Any = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(assassin)
        with trio.fail_after(110):
            result = await run_scenario(scenario, out, RunOptions(), lambda _line: None)
    assert result.verdict != PASS
    (death,) = [d for d in result.dead if "died at" in d]
    assert death.startswith("n2 died at") and "SIGKILL" in death
    assert result.convergence["same_state"]  # healing restarted it: the checks still ran
