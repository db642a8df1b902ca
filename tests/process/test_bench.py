"""scripts/bench end to end on real processes: a short univrs run, and etcd when installed."""

from __future__ import annotations

import json
import pathlib

import pytest

from univrs.bench import client as bench
from univrs.bench import etcd


def test_a_short_bench_run_writes_its_figures_and_checks_its_sample(
    tmp_path: pathlib.Path,
) -> None:
    out = tmp_path / "bench.json"
    args = ["--clients", "1,16", "--duration", "0.5", "--repeat", "1", "--reads"]
    assert bench.main([*args, "--json", str(out), "--dir", str(tmp_path / "run")]) == 0
    result = json.loads(out.read_text())
    writes = result["univrs"]["writes"]
    assert set(writes) == {"1", "16"} and set(result["univrs"]["reads"]) == {"1", "16"}
    assert writes["16"]["check"]["verdict"] == "linearizable"
    assert writes["16"]["check"]["ops"] > 0
    assert "check" not in writes["1"]  # one client: no sample (its reader would skew it)
    assert writes["16"]["ops_per_s"] > 0
    # The cost per write per process: the three nodes and the client.
    assert len(writes["16"]["cpu_ms_per_op"]) == 4
    assert writes["16"]["cpu_ms_per_op_total"] > 0


@pytest.mark.skipif(etcd.missing() is not None, reason=str(etcd.missing()))
def test_the_etcd_side_runs_the_same_closed_loop(tmp_path: pathlib.Path) -> None:
    binary = etcd.build_loadgen()
    with etcd.EtcdCluster(tmp_path / "etcd") as cluster:
        pids = list(cluster.pids.values())
        result = etcd.run_load(
            binary, cluster, clients=8, connections=2, duration=0.5, warmup=0.3, op="put"
        )
    assert result["ops"] > 0 and result["errors"] == 0
    assert set(result["cpu_ms_per_op"]) == {"etcd0", "etcd1", "etcd2", "client"}
    # Stopped by PID: none of its members is left running.
    for pid in pids:
        assert not pathlib.Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
