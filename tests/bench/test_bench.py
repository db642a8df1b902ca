"""scripts/bench: its bounds, its linearizability sample, its report and plot (no processes).

The sample is checked on fake clients: one that answers like a register and one that serves a
stale read, which the bench must flag (the checker is the chaos suite's, tested there).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any, cast

import pytest
import trio

from univrs.bench import client as bench
from univrs.bench import report as bench_report
from univrs.bench import sample as sample_module
from univrs.bench.sample import Sample
from univrs.bench.workers import load_ops
from univrs.client.client import Client


class FakeClient:
    """Just what the bench calls: a register per key, optionally serving stale reads."""

    def __init__(self, stale: bool = False, read_delay: float = 0.001) -> None:
        self.values: dict[str, int] = {}
        self.previous: dict[str, int] = {}
        self.stale = stale
        self.read_delay = read_delay
        self.leader = "n1"
        self.answers: list[str | None] = []  # what each write asked for

    async def scale_workload(
        self, key: str, replicas: int, answer: str | None = None
    ) -> dict[str, Any]:
        await trio.sleep(0.001)
        self.previous[key] = self.values.get(key, replicas)
        self.values[key] = replicas
        self.answers.append(answer)
        if answer == "minimal":  # the sampled writes ask for their version only
            return {"id": key, "version": 1}
        return {"id": key, "spec": {"replicas": replicas}}

    async def get_workload(self, key: str, consistency: str | None = None) -> dict[str, Any]:
        await trio.sleep(self.read_delay)
        value = self.previous.get(key) if self.stale else self.values.get(key)
        return {"id": key, "spec": {"replicas": value}}


async def _measure_sample(fake: FakeClient) -> dict[str, Any]:
    keys = ["bench-0", "bench-1"]
    sample = Sample(keys, dict.fromkeys(keys, 0))

    async def write(client: Client, i: int) -> None:
        await client.scale_workload(f"bench-{i}", 1)

    return await bench.measure([cast(Client, fake)], 4, 0.2, write, None, sample)


async def test_a_register_like_cluster_passes_the_sample() -> None:
    fake = FakeClient()
    result = await _measure_sample(fake)
    assert result["check"]["verdict"] == "linearizable"
    assert result["check"]["ops"] > 10
    assert result["ops"] > 0 and result["errors"] == 0
    # The sampled writes asked for minimal answers: the history needs no document.
    assert "minimal" in fake.answers


async def test_the_load_writes_ask_for_what_write_answer_says() -> None:
    assert bench.parse_args([]).write_answer == "minimal"
    assert bench.parse_args(["--write-answer", "full"]).write_answer == "full"
    for answer in ("minimal", "full"):
        fake = FakeClient()
        await load_ops(["bench-0"], answer)["writes"](cast(Client, fake), 0)
        assert fake.answers == [answer]


async def test_a_full_sample_stops_recording_only_once_its_reads_are_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sample fills within the window while a slow read is in flight; the writer of that
    # key then goes on with the load's own (unrecorded, not unique) writes. Found by CI: they
    # began as soon as the sample was full, and the read in flight returned one of them.
    monkeypatch.setattr(sample_module, "SAMPLE_OPS", 30)
    result = await _measure_sample(FakeClient(read_delay=0.02))
    assert result["check"]["verdict"] == "linearizable", result["check"]
    assert result["check"]["ops"] >= 2 * 30


async def test_a_stale_read_fails_the_sample() -> None:
    result = await _measure_sample(FakeClient(stale=True))
    assert result["check"]["verdict"] == "not-linearizable"
    summary = bench.median_of([result])["check"]
    assert summary["verdict"] == "not-linearizable"
    assert "bench-" in summary["summary"]


def test_the_sweep_and_the_repeats_are_bounded() -> None:
    args = bench.parse_args(["--clients", "1024,1,64,256", "--duration", "1", "--repeat", "2"])
    assert args.clients == [1, 64, 256, 1024]
    for bad in (
        ["--clients", "0"],
        ["--clients", ",".join(str(i) for i in range(1, bench.MAX_POINTS + 2))],
        ["--clients", str(bench.MAX_CLIENTS + 1)],
        ["--repeat", str(bench.MAX_REPEAT + 1)],
        ["--duration", "0"],
        ["--duration", str(bench.MAX_DURATION + 1)],
        # 8 points x 10 repeats x 2 phases x 2 systems x 61 s: far over the default budget
        [
            "--clients",
            "1,2,3,4,5,6,7,8",
            "--repeat",
            "10",
            "--duration",
            "60",
            "--reads",
            "--compare-etcd",
        ],
        ["--compare-etcd", "--endpoints", "127.0.0.1:1"],
    ):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def _point(ops: float, p99: float) -> dict[str, Any]:
    return bench.median_of(
        [
            {
                "ops_per_s": ops,
                "p50_ms": p99 / 3,
                "p99_ms": p99,
                "max_ms": p99 * 2,
                "cpu_ms_per_op": {"n1": 0.2, "client": 0.1},
                "leader": "n1",
                "errors": 0,
                "first_error": None,
            }
        ]
    )


def _result() -> dict[str, Any]:
    return {
        "univrs": {
            "writes": {"1": _point(200, 8), "64": _point(3000, 50)},
            "reads": {"64": _point(8000, 20)},
            "leader": "n1",
            "connections": 4,
        },
        "etcd": {
            "writes": {"1": _point(900, 2.3), "64": _point(5000, 28)},
            "reads": {"64": _point(10000, 10)},
            "version": "3.4.23",
        },
        "config": {
            "clients": [1, 64],
            "duration_s": 5.0,
            "repeat": 3,
            "nodes": 3,
            "load_before": "0.1 0.2 0.3",
            "load_after": "0.1 0.2 0.3",
            "commit": "abc1234",
        },
    }


def test_the_report_puts_both_systems_side_by_side_with_the_ratio() -> None:
    result = _result()
    result["univrs"]["profile"] = {
        "node": "n1",
        "clients": 64,
        "samples": 10,
        "self_pct": [["encode (univrs/codec.py)", 30.0]],
        "total_pct": [["drive (univrs/runtime/driver.py)", 40.0]],
    }
    text = bench_report.report(result)
    assert "30.0%  encode (univrs/codec.py)" in text
    assert "40.0%  drive (univrs/runtime/driver.py)" in text
    assert "univrs     3000/s" in text and "etcd       5000/s" in text
    assert "univrs/etcd throughput 0.60x" in text
    assert "total 0.300: client 0.100, n1 (leader) 0.200" in text
    assert "lease reads: not measured" in text  # --reads against an older result


def test_lease_reads_are_reported_apart_or_as_not_offered() -> None:
    result = _result()
    result["univrs"]["lease_reads"] = "not offered by the cluster ([raft] read_lease off)"
    assert "lease reads: not offered by the cluster" in bench_report.report(result)
    result["univrs"]["lease-reads"] = {"64": _point(20000, 4)}
    text = bench_report.report(result)
    assert "lease reads (clock-bound" in text and "univrs    20000/s" in text
    assert "not offered" not in text


def test_the_plot_is_a_png(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    assert bench_report.plot(_result(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(_result())  # what --json writes


def test_the_json_figures_end_stdout_in_one_line_and_fill_the_json_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = {"objects": 1000, "runs": [{"snapshot_s": 0.5}], "median": {"gap_s": None}}
    bench_report.print_json(figures)
    path = tmp_path / "out.json"
    bench_report.print_json(figures, path)
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in out] == [figures, figures]
    assert path.read_text().endswith("}\n") and json.loads(path.read_text()) == figures


def test_the_profile_summary_ranks_functions_by_self_and_total_share(
    tmp_path: pathlib.Path,
) -> None:
    raw = tmp_path / "leader.txt"
    raw.write_text(
        "run (a.py:1);apply (sm.py:10);encode (codec.py:5) 30\n"
        "run (a.py:1);apply (sm.py:12) 10\n"
        "run (a.py:1);send (net.py:3);encode (codec.py:7) 60\n"
    )
    with_univrs = tmp_path / "univrs.txt"
    with_univrs.write_text(
        "node_start (univrs/cli/node.py:3);drive (univrs/runtime/driver.py:9) 3\n"
        "node_start (univrs/cli/node.py:3);serve (univrs/api/fast.py:2) 1\n"
    )
    assert bench_report.summarise_profile(with_univrs)["total_pct"] == [
        ["drive (univrs/runtime/driver.py)", 75.0],
        ["serve (univrs/api/fast.py)", 25.0],
    ]
    summary = bench_report.summarise_profile(raw, top=4)
    assert summary["samples"] == 100
    assert summary["self_pct"] == [
        ["encode (codec.py)", 90.0],
        ["apply (sm.py)", 10.0],
    ]
    assert summary["total_pct"] == []  # no univrs function in these stacks


def test_client_processes_get_their_share_of_clients_and_connections() -> None:
    from univrs.bench.workers import connection_plan, spread

    assert spread(list(range(4, 11)), 2) == [[4, 6, 8, 10], [5, 7, 9]]
    assert connection_plan(4, 2, None) == [None, None]
    assert connection_plan(4, 1, None) == [None] * 4
    nodes = ["a:1", "b:1", "c:1"]
    # Pinned connections: a multiple of the nodes, rotated per process.
    assert connection_plan(4, 1, nodes) == ["a:1", "b:1", "c:1"] * 2
    assert connection_plan(4, 2, nodes, proc=1) == ["b:1", "c:1", "a:1"]
    for bad in (["--client-procs", "0"], ["--client-procs", str(bench.MAX_CLIENT_PROCS + 1)]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
    assert bench.parse_args(["--read-nodes", "all"]).read_nodes == "all"
    with pytest.raises(SystemExit):
        bench.parse_args(["--client-procs", "two"])
    # auto (the default): one worker per CPU the bench may use, as Go's GOMAXPROCS.
    cpus = min(len(os.sched_getaffinity(0)), bench.MAX_CLIENT_PROCS)
    assert bench.parse_args([]).client_procs == cpus
    assert bench.parse_args(["--client-procs", "auto"]).client_procs == cpus
    assert bench.parse_args(["--client-procs", "1"]).client_procs == 1


_METRICS = """# HELP univrs_raft_is_leader 1 on the leader
univrs_raft_is_leader {leader}
univrs_raft_leader_changes_total {changes}
univrs_api_requests_total{{op="workload.get",outcome="ok"}} {reads}
univrs_api_requests_total{{op="workload.scale",outcome="ok"}} 7.0
univrs_api_read_confirmations_total {confirmations}
"""


def test_the_nodes_metrics_give_the_leader_and_reads_per_confirmation() -> None:
    from univrs.bench.nodes import parse_metrics, window_figures

    def node(leader: int, changes: int, reads: int, confirmations: int) -> dict[str, float]:
        return parse_metrics(
            _METRICS.format(
                leader=leader, changes=changes, reads=reads, confirmations=confirmations
            )
        )

    before = {"n1": node(1, 1, 100, 10), "n2": node(0, 1, 0, 0), "n3": node(0, 1, 50, 5)}
    after = {"n1": node(1, 1, 1100, 30), "n2": node(0, 1, 0, 0), "n3": node(0, 1, 650, 25)}
    figures = window_figures(before, after)
    assert figures["leader"] == "n1" and "leader_at_start" not in figures
    assert figures["leader_changes"] == 0
    assert figures["reads_served"] == {"n1": 1000, "n2": 0, "n3": 600}
    assert figures["reads_per_confirmation"] == 1600 / 40
    assert figures["reads_per_confirmation_by_node"] == {"n1": 50.0, "n3": 30.0}
    # A leader change within the window: the new leader is the one labelled.
    after["n1"], after["n2"] = node(0, 2, 1100, 30), node(1, 2, 0, 0)
    moved = window_figures(before, after)
    assert (moved["leader"], moved["leader_at_start"], moved["leader_changes"]) == ("n2", "n1", 1)
    run = {**bench.median_of([{**_run(9000, 20), "servers": moved, "leader": "n2"}])}
    assert run["leaders"] == ["n2"] and run["leader_changes"] == 1
    assert run["reads_per_confirmation"] == 40.0


def test_the_nodes_metrics_give_the_collectors_time_per_node() -> None:
    from univrs.bench.nodes import parse_metrics, window_figures

    def node(young: float, full: float, fulls: int) -> dict[str, float]:
        return parse_metrics(
            _METRICS.format(leader=0, changes=0, reads=0, confirmations=0)
            + f'univrs_gc_pause_seconds_total{{generation="0"}} {young}\n'
            + 'univrs_gc_pause_seconds_total{generation="1"} 0.5\n'
            + f'univrs_gc_pause_seconds_total{{generation="2"}} {full}\n'
            + f'univrs_gc_collections_total{{generation="2"}} {fulls}\n'
        )

    figures = window_figures(
        {"n1": node(1.0, 2.0, 3), "n2": node(0.0, 0.0, 0)},
        {"n1": node(1.25, 2.5, 5), "n2": node(0.0, 0.0, 0)},
    )
    assert figures["gc_ms"] == {"n1": 750.0, "n2": 0.0}
    assert figures["gc_full"] == {"n1": 2, "n2": 0}


def _run(ops: float, p99: float) -> dict[str, Any]:
    return {
        "ops_per_s": ops,
        "p50_ms": p99 / 3,
        "p99_ms": p99,
        "max_ms": p99 * 2,
        "cpu_ms_per_op": {"n1": 0.05, "n2": 0.04, "client-1": 0.03, "client-2": 0.03},
        "errors": 0,
        "first_error": None,
    }


def test_the_report_names_the_worker_processes_and_reads_per_confirmation() -> None:
    result = _result()
    point = bench.median_of([{**_run(21000, 9), "leader": "n2"}])
    point["reads_per_confirmation"] = 35.5
    result["univrs"]["reads"] = {"64": point}
    result["univrs"]["client_procs"] = 2
    result["univrs"]["read_nodes"] = "all"
    text = bench_report.report(result)
    assert "in 2 worker processes, reads spread over every node" in text
    assert "reads per ReadIndex confirmation (nodes' metrics): 35.5" in text
    assert "client-1 0.030, client-2 0.030, n1 0.050, n2 (leader) 0.040" in text


def test_cpu_by_role_follows_the_leader_from_run_to_run() -> None:
    runs = []
    for leader, cpu in (
        ("n1", {"n1": 0.10, "n2": 0.03, "n3": 0.05, "client": 0.01, "client-1": 0.04}),
        ("n2", {"n1": 0.04, "n2": 0.12, "n3": 0.04, "client": 0.01, "client-1": 0.05}),
        (None, {"n1": 0.5, "n2": 0.5, "n3": 0.5, "client": 0.5}),  # no leader at its end
    ):
        runs.append({**_run(1000, 10), "cpu_ms_per_op": cpu, "leader": leader})
    point = bench.median_of(runs)
    assert point["cpu_ms_per_op_by_role"] == {"leader": 0.11, "follower": 0.04, "clients": 0.055}
    result = _result()
    result["univrs"]["reads"] = {"64": point}
    text = bench_report.report(result)
    assert "by role (median of runs): leader 0.110, follower 0.040, clients 0.055" in text


def test_the_profiled_process_is_named_by_role_or_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from univrs.bench.workers import WorkerPool

    pids = {"n1": 11, "n2": 12, "n3": 13}
    pool = WorkerPool()
    monkeypatch.setattr(WorkerPool, "pids", property(lambda self: {"client-1": 21}))
    assert bench._profile_pid("leader", "n2", pids, pool) == ("n2", 12)
    assert bench._profile_pid("follower", "n2", pids, pool) == ("n1", 11)
    assert bench._profile_pid("n3", "n2", pids, pool) == ("n3", 13)
    assert bench._profile_pid("client-1", "n2", pids, pool) == ("client-1", 21)
    assert bench._profile_pid("client", "n2", pids, None) == ("client", os.getpid())
    assert bench._profile_pid("leader", None, pids, None) is None  # no leader known
    assert bench._profile_pid("client-2", "n2", pids, pool) is None
    # Without py-spy the bench says so and profiles nothing (it does not fail).
    monkeypatch.setattr("univrs.bench.args.py_spy_available", lambda: False)
    args = bench.parse_args(["--profile", "out.txt", "--profile-phase", "reads"])
    assert args.profile is None and args.profile_phase == "reads"


def test_the_nodes_metrics_give_proposals_per_batch_and_syncs_per_node() -> None:
    from univrs.bench.nodes import parse_metrics, window_figures

    def node(batches: int, proposals: int, syncs: int) -> dict[str, float]:
        return parse_metrics(
            _METRICS.format(leader=0, changes=0, reads=0, confirmations=0)
            + f"univrs_api_proposal_batches_total {batches}\n"
            + f"univrs_api_batched_proposals_total {proposals}\n"
            + f"univrs_storage_syncs_total {syncs}\n"
        )

    figures = window_figures(
        {"n1": node(10, 100, 12), "n2": node(0, 0, 7)},
        {"n1": node(60, 1700, 70), "n2": node(0, 0, 57)},
    )
    assert figures["proposals_per_batch"] == 1600 / 50
    assert figures["syncs"] == {"n1": 58, "n2": 50}
    idle = window_figures({"n1": node(3, 9, 1)}, {"n1": node(3, 9, 1)})
    assert idle["proposals_per_batch"] is None


def test_the_load_generator_is_go_where_it_can_be_built_and_python_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--loadgen auto`` (the default) picks the Go worker when it can be built, else the
    Python workers; ``--loadgen go`` on a machine that cannot build it is refused with what
    to install, before any cluster starts."""
    monkeypatch.setattr("univrs.bench.workers.go_worker_missing", lambda: None)
    assert bench.parse_args([]).loadgen == "go"
    assert bench.parse_args(["--loadgen", "go"]).loadgen == "go"
    assert bench.parse_args(["--loadgen", "python"]).loadgen == "python"
    lacking = "Go sources missing (Debian: apt-get install golang-github-gorilla-websocket-dev)"
    monkeypatch.setattr("univrs.bench.workers.go_worker_missing", lambda: lacking)
    assert bench.parse_args([]).loadgen == "python"
    assert bench.parse_args(["--loadgen", "python"]).loadgen == "python"
    with pytest.raises(SystemExit):
        bench.parse_args(["--loadgen", "go"])
    assert "golang-github-gorilla-websocket-dev" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--loadgen", "rust"])


def test_a_go_program_names_what_the_machine_lacks_to_build_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from univrs.bench import gobuild

    if shutil.which("go") is not None:
        why = gobuild.missing({"example.invalid/none": "golang-none-dev"})
        assert why is not None and "golang-none-dev" in why
    monkeypatch.setattr("univrs.bench.gobuild.shutil.which", lambda _name: None)
    why = gobuild.missing({})
    assert why is not None and "golang-go" in why


def test_raft_settings_for_the_local_nodes_are_one_toml_scalar_each() -> None:
    args = bench.parse_args(["--raft", "batch_gather_ms=0", "--raft", "batch_entries = false"])
    assert args.raft == ["batch_gather_ms = 0", "batch_entries = false"]
    assert bench.parse_args([]).raft == []
    for bad in ("batch_gather_ms", "a=", "=3", "a=[1]", "a.b=3", "a=1\nb=2", "a={x=1}"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--raft", bad])


def test_a_go_worker_that_does_not_build_falls_back_only_when_the_bench_chose_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    monkeypatch.setattr("univrs.bench.workers.go_worker_missing", lambda: None)

    def broken() -> list[str]:
        raise subprocess.CalledProcessError(1, ["go", "build"])

    monkeypatch.setattr(bench, "go_worker", broken)
    chosen = bench.parse_args([])  # auto: Go, since it looks buildable
    assert chosen.loadgen == "go"
    bench.build_go_worker(chosen)
    assert chosen.loadgen == "python" and chosen.go_worker is None
    assert "Python workers instead" in capsys.readouterr().err
    asked = bench.parse_args(["--loadgen", "go"])
    with pytest.raises(SystemExit, match="did not build"):
        bench.build_go_worker(asked)
