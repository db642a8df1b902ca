"""``/metrics`` follows the Prometheus conventions (issue 13): checked by prometheus-client's
parser always, and by ``promtool check metrics`` when it is installed."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import urllib.request
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.api.helpers import WORKLOAD, open_cluster, wait_until
from univrs.metrics import Registry


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families: dict[str, Any], family: str, **labels: str) -> float:
    for s in families[family].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()) and s.name in (
            family,
            family + "_total",
        ):
            return float(s.value)
    raise AssertionError(f"no sample {family}{labels}")


def check_conventions(text: str) -> dict[str, Any]:
    """The conventions of https://prometheus.io/docs/practices/naming/ that univrs keeps."""
    families = _families(text)
    assert families
    for name, f in families.items():
        assert f.documentation.strip(), f"{name} has no help"
        assert name.startswith(("univrs_", "process_")), name
        for s in f.samples:
            if f.type == "counter":
                assert s.name.endswith("_total"), f"counter sample {s.name} lacks _total"
            else:
                assert not s.name.endswith("_total"), f"{f.type} {s.name} ends in _total"
        if f.type == "histogram":
            assert name.endswith("_seconds"), f"histogram {name} is not in seconds"
        if "bytes" in name:
            assert name.endswith(("_bytes", "_bytes_total")), name
    return families


async def test_a_clusters_metrics_follow_the_conventions(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        leader = await cluster.wait_leader()
        created = await cluster.http(leader, "POST", "/v1/workloads", {"spec": WORKLOAD})
        assert created.status == 201, created.body

        async def leader_text() -> str | None:
            text = await _raw_metrics(cluster.api(leader))
            # A keepalive ping to each follower has come back (every 0.5 s).
            return (
                text if text.count("univrs_network_peer_round_trip_seconds_count{") == 2 else None
            )

        text = await wait_until(leader_text, "the leader's metrics with two peers' round trips")
        families = check_conventions(text)
        assert _sample(families, "univrs_raft_has_leader") == 1
        assert _sample(families, "univrs_raft_is_leader") == 1
        assert _sample(families, "univrs_raft_role", role="leader") == 1
        assert sum(s.value for s in families["univrs_raft_role"].samples) == 1
        info = families["univrs_build_info"].samples[0]
        assert info.value == 1 and info.labels["version"] and info.labels["python"]
        assert _sample(families, "process_cpu_seconds") > 0
        assert _sample(families, "process_resident_memory_bytes") > 0
        assert _sample(families, "univrs_raft_proposals") >= 1
        assert _sample(families, "univrs_raft_proposals_failed", outcome="dropped") == 0
        assert _sample(families, "univrs_raft_proposals_failed", outcome="unknown") == 0
        assert _sample(families, "univrs_raft_proposals_pending") >= 0
        assert _sample(families, "univrs_raft_snapshot_index") >= 0
        assert _sample(families, "univrs_storage_db_bytes") > 0
        assert _sample(families, "univrs_storage_syncs") >= 1
        assert _sample(families, "univrs_api_requests", op="workload.create", outcome="ok") == 1
        follower = cluster.followers()[0]
        on_follower = check_conventions(await _raw_metrics(cluster.api(follower)))
        # One registry per node: the follower's own view, not the leader's.
        assert _sample(on_follower, "univrs_raft_is_leader") == 0
        assert _sample(on_follower, "univrs_raft_role", role="follower") == 1
        assert not on_follower["univrs_api_requests"].samples  # it served no request

        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip(
                "promtool not installed (Debian: apt-get install prometheus); the parser-based "
                "checks above passed"
            )
        for body in (text, await _raw_metrics(cluster.api(follower))):
            result = subprocess.run(
                [promtool, "check", "metrics"],
                input=body,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.strip() == "" and result.stderr.strip() == "", (
                result.stdout + result.stderr
            )


async def _raw_metrics(api: str) -> str:
    """The text of ``/metrics`` (the tests' HTTP helper decodes JSON only)."""

    def get() -> str:
        with urllib.request.urlopen(f"http://{api}/metrics", timeout=10) as resp:
            text: str = resp.read().decode()
            return text

    return await trio.to_thread.run_sync(get)


def test_the_registry_refuses_names_that_break_the_conventions() -> None:
    r = Registry()
    with pytest.raises(AssertionError, match="_total"):
        r.counter("univrs_requests", "Requests.")
    with pytest.raises(AssertionError, match="only counters"):
        r.gauge("univrs_things_total", "Things.")
    with pytest.raises(AssertionError, match="help"):
        r.gauge("univrs_things", " ")
    with pytest.raises(AssertionError, match="univrs_"):
        r.counter("requests_total", "Requests.")


def test_registries_are_per_node() -> None:
    """Two nodes in one process each count their own (nothing in the global registry)."""
    a, b = Registry(), Registry()
    ca = a.counter("univrs_things_total", "Things.")
    b.counter("univrs_things_total", "Things.")  # the same name again: no clash
    ca.inc(3)
    assert a.value("univrs_things_total") == 3
    assert b.value("univrs_things_total") == 0
