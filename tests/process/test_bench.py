"""scripts/bench end to end on real processes: a short univrs run, and etcd when installed."""

from __future__ import annotations

import json
import os
import pathlib
import socket

import pytest

from univrs.bench import client as bench
from univrs.bench import etcd, workers


def test_a_short_bench_run_writes_its_figures_and_checks_its_sample(
    tmp_path: pathlib.Path,
) -> None:
    out = tmp_path / "bench.json"
    args = [
        "--clients",
        "1,16",
        "--duration",
        "0.5",
        "--repeat",
        "1",
        "--reads",
        "--client-procs",
        "1",
        "--loadgen",
        "python",
        "--raft",
        "batch_gather_ms=40",
    ]
    assert bench.main([*args, "--json", str(out), "--dir", str(tmp_path / "run")]) == 0
    # --raft: a line of every node's [raft] table (their default is 50).
    configs = sorted((tmp_path / "run" / "univrs").glob("*.toml"))
    assert len(configs) == 3
    assert all("batch_gather_ms = 40" in c.read_text() for c in configs)
    result = json.loads(out.read_text())
    assert result["config"]["raft"] == ["batch_gather_ms = 40"]
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


@pytest.mark.skipif(etcd.missing() is not None, reason=str(etcd.missing()))
def test_compare_etcd_interleaves_the_two_systems_repeats(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each repeat of etcd runs next to the same repeat of univrs (after it in even repeats,
    before it in odd ones), not after univrs's whole sweep: the machine's speed drifts."""
    out = tmp_path / "bench.json"
    args = ["--clients", "4", "--duration", "0.3", "--repeat", "3", "--no-check"]
    args += ["--compare-etcd", "--json", str(out), "--dir", str(tmp_path / "run")]
    assert bench.main(args) == 0
    runs = [
        line.split(",")[0].strip().split()[0] + line.split("run ")[1].split(":")[0]
        for line in capsys.readouterr().err.splitlines()
        if "writes, 4 clients, run" in line
    ]
    assert runs == ["univrs1", "etcd1", "etcd2", "univrs2", "univrs3", "etcd3"]
    result = json.loads(out.read_text())
    assert len(result["etcd"]["writes"]["4"]["runs"]) == 3
    assert len(result["univrs"]["writes"]["4"]["runs"]) == 3
    assert result["etcd"]["writes"]["4"]["ops_per_s"] > 0


@pytest.mark.skipif(etcd.missing() is not None, reason=str(etcd.missing()))
def test_etcd_starts_again_on_other_ports_when_a_picked_port_is_taken(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process bound a port between the pick and etcd's bind: the member exits at once
    ("address already in use"); the cluster starts again on other ports instead of waiting out
    the start's timeout and failing the run."""
    cluster = etcd.EtcdCluster(tmp_path / "etcd")
    taken = cluster.client_ports[1]
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        with cluster:
            assert taken not in cluster.client_ports + cluster.peer_ports
            assert cluster._healthy()
            pids = list(cluster.pids.values())
            assert len(pids) == 3
    for pid in pids:
        assert not pathlib.Path(f"/proc/{pid}").exists() or _zombie(pid)
    err = capsys.readouterr().err
    assert "address already in use" in err and "starting etcd again on other ports" in err


def test_an_etcd_that_exits_for_another_reason_fails_the_start_at_once(
    tmp_path: pathlib.Path,
) -> None:
    """Not a taken port: no retry, the member's own last log line in the error."""
    err = etcd.EtcdExited("etcd0", 1, '{"level":"fatal","msg":"bad flag"}')
    assert not err.port_taken and "bad flag" in str(err)
    taken = etcd.EtcdExited("etcd1", 1, "listen tcp 127.0.0.1:2380: bind: address already in use")
    assert taken.port_taken


@pytest.mark.skipif(
    workers.go_worker_missing() is not None, reason=str(workers.go_worker_missing())
)
def test_the_go_worker_runs_the_same_loads_and_its_sample_checks(tmp_path: pathlib.Path) -> None:
    """``--loadgen go``: the closed loops run in one Go process (univrs_loadgen/) that
    speaks the Python worker's protocol, answers with the same histogram, and sends the same
    requests (keyed writes through sessions, linearizable and lease reads); the
    linearizability sample's writers and readers stay in the bench's process beside it."""
    out = tmp_path / "bench.json"
    args = ["--clients", "16", "--duration", "0.5", "--repeat", "1", "--reads"]
    args += ["--loadgen", "go", "--json", str(out), "--dir", str(tmp_path / "run")]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    uni = result["univrs"]
    assert uni["loadgen"] == "go" and uni["client_procs"] == 1
    writes, reads = uni["writes"]["16"], uni["reads"]["16"]
    for m in (writes, reads, uni["lease-reads"]["16"]):
        assert m["ops_per_s"] > 0 and m["errors"] == 0
        assert m["p50_ms"] > 0 and m["p99_ms"] >= m["p50_ms"]
        # The nodes, the bench's own process and the one Go worker.
        assert set(m["cpu_ms_per_op"]) >= {"client", "client-1"}
        assert len(m["cpu_ms_per_op"]) == 5
    # The Go worker did the load: its CPU per read is most of the clients' side.
    assert reads["cpu_ms_per_op"]["client-1"] > reads["cpu_ms_per_op"]["client"]
    assert writes["check"]["verdict"] == "linearizable" and writes["check"]["ops"] > 0
    # Its writes reached the leader's batches (the nodes' metrics).
    assert writes["runs"][0]["servers"]["proposals_per_batch"] >= 1
    assert not _children_running(b"univrs_loadgen")


def _children_running(name: bytes) -> list[int]:
    """Live child processes of this one whose command line holds ``name``."""
    alive = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and name in cmdline:
            alive.append(int(stat.parent.name))
    return alive


def _zombie(pid: int) -> bool:
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_two_client_processes_spread_reads_over_every_node(tmp_path: pathlib.Path) -> None:
    # Default tier: 8 clients (no sample), 0.5 s per phase, one repeat.
    out = tmp_path / "bench.json"
    args = ["--clients", "8", "--duration", "0.5", "--repeat", "1", "--reads"]
    args += ["--client-procs", "2", "--loadgen", "python", "--read-nodes", "all"]
    args += ["--json", str(out)]
    assert bench.main([*args, "--dir", str(tmp_path / "run")]) == 0
    result = json.loads(out.read_text())
    uni = result["univrs"]
    assert uni["client_procs"] == 2 and uni["read_nodes"] == "all"
    reads, writes = uni["reads"]["8"], uni["writes"]["8"]
    assert reads["ops_per_s"] > 0 and writes["ops_per_s"] > 0
    assert reads["errors"] == 0 and writes["errors"] == 0
    # CPU per operation of the three nodes, the bench's process and both workers.
    assert {"client", "client-1", "client-2"} <= set(reads["cpu_ms_per_op"])
    assert len(reads["cpu_ms_per_op"]) == 6
    # The workers did the load: their CPU per read is most of the clients' side.
    assert reads["cpu_ms_per_op"]["client-1"] > reads["cpu_ms_per_op"]["client"]
    # Every node served reads (pinned connections), and each confirmation served at least one.
    servers = reads["runs"][0]["servers"]
    assert all(n > 0 for n in servers["reads_served"].values()), servers
    assert len(servers["reads_served"]) == 3
    assert reads["reads_per_confirmation"] >= 1
    # The leader label is the node the metrics say led, one of the three.
    assert reads["leaders"] == [uni["leader"]] and uni["leader"] in servers["reads_served"]
    assert not _children_running(b"bench.workers")
