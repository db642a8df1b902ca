"""Client throughput and latency through the fast protocol (``scripts/bench``).

Starts a fresh local cluster of real node processes (``univrs.tools.devcluster``, fsync on)
unless ``--endpoints`` names a running one, creates one workload per client, then measures, for
every client count of ``--clients`` (a sweep such as ``1,64,256,1024``), each for ``--duration``
seconds after a short warm-up and ``--repeat`` times (interleaved, medians reported):

* writes: N closed-loop clients, each scaling its own workload (``workload.scale``, an
  idempotent keyed write: one log entry each), spread over ``--connections`` connections;
* with ``--reads``: the same clients reading their workload with linearizable consistency,
  then with ``lease`` consistency (reported separately: a clock-bound read, docs/performance.md
  "Lease reads"). A cluster the bench starts has ``[raft] read_lease = true``; one given with
  ``--endpoints`` that refuses lease reads gets "not offered" in the report instead.

Linearizability. In every write measurement with at least ``SAMPLE_MIN_CLIENTS`` clients, a
sample of the clients write unique values, read back by paced readers, recorded and checked
(``univrs.bench.sample``). The run fails if a sample is not linearizable.

``--loadgen go`` (the default where Go and gorilla/websocket's sources are installed) runs the
closed loops, and the linearizability sample, in one Go worker process (``univrs_loadgen/``:
the same requests, sessions and frames as the Python client, at about a third of the Python
workers' CPU per operation, as the etcd side is driven by a Go load generator).
``--loadgen python`` with ``--client-procs N`` runs the loops in N Python worker processes
(``univrs.bench.workers``; their latency histograms are merged, ``univrs.bench.latency``) so
that one Python client process does not cap the load (N = 1: in the bench's own process, which
runs the sample then). ``--read-nodes all`` spreads the reads over every node (a follower's
linearizable read is confirmed by the leader, ReadIndex) instead of the leader.

For a cluster it started, the bench also reports the CPU milliseconds each process (nodes, the
bench's own ``client`` and its workers ``client-1``..) spent per operation, from
/proc/<pid>/stat: the cost per write, summed over the processes, is the figure that does not
depend on how busy the machine is; and from the nodes' metrics (``univrs.bench.nodes``) which
node led and how many reads one ReadIndex confirmation served. ``--profile FILE`` runs py-spy
on one process (``--profile-process``) during one phase (``--profile-phase``).

``--compare-etcd`` runs the same load against a local 3-member etcd cluster
(``univrs.bench.etcd``) in the same run, each repeat of it next to the same repeat of univrs
(interleaved: the machine's speed drifts over minutes), and prints both side by side with the
ratio.
``--json FILE`` writes every figure; with matplotlib (the ``bench`` extra) a plot of throughput
and p99 against clients is written next to it (``FILE`` with ``.png``).

Bounds: at most ``MAX_POINTS`` client counts, each at most ``MAX_CLIENTS``; ``--repeat`` at most
``MAX_REPEAT``; ``--duration`` at most ``MAX_DURATION``; the whole planned run must fit in
``--budget`` seconds (refused before starting otherwise), and a measurement that stalls is
abandoned after its duration plus ``STALL_GRACE`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack
from typing import Any

import trio

from univrs.bench import args as bench_args
from univrs.bench.args import (
    MAX_CLIENT_PROCS,
    MAX_CLIENTS,
    MAX_DURATION,
    MAX_POINTS,
    MAX_REPEAT,
    PHASES,
    planned_seconds,
)
from univrs.bench.measure import STALL_GRACE, WARMUP, measure, median_of, percentile
from univrs.bench.nodes import Servers
from univrs.bench.report import plot, report, summarise_profile
from univrs.bench.sample import SAMPLE_FIRST_VALUE, SAMPLE_KEYS, SAMPLE_MIN_CLIENTS, Sample
from univrs.bench.workers import (
    WorkerPool,
    connection_plan,
    go_worker,
    load_ops,
    open_clients,
)
from univrs.client.client import open_client
from univrs.errors import InvalidArgument, UnivrsError
from univrs.server.heap import settle
from univrs.tools.started import last_log_line

__all__ = [
    "MAX_CLIENTS",
    "MAX_CLIENT_PROCS",
    "MAX_DURATION",
    "MAX_POINTS",
    "MAX_REPEAT",
    "STALL_GRACE",
    "WARMUP",
    "main",
    "measure",
    "median_of",
    "parse_args",
    "percentile",
    "planned_seconds",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (univrs/bench/args.py)."""
    return bench_args.parse_args(argv, __doc__.split("\n")[0])


async def _leader_of(servers: Servers | None, hint: str | None) -> str | None:
    """The leader now: the node whose metrics say so (a cluster the bench started), else the
    client's hint."""
    if servers is not None:
        snapshot = await servers.snapshot()
        leaders = [n for n, m in snapshot.items() if m.get("univrs_raft_is_leader") == 1.0]
        if len(leaders) == 1:
            return leaders[0]
    return hint


def _profile_pid(
    target: str, leader: str | None, pids: dict[str, int], pool: WorkerPool | None
) -> tuple[str, int] | None:
    """(name, pid) of ``--profile-process``: leader, follower, client, client-N or a node id."""
    nodes = sorted(pids)
    if target == "leader":
        name = leader
    elif target == "follower":
        name = next((n for n in nodes if n != leader), None)
    else:
        name = target
    everyone = {**pids, "client": os.getpid(), **(pool.pids if pool else {})}
    if name is None or name not in everyone:
        return None
    return name, everyone[name]


async def run_bench(
    endpoints: list[str],
    args: argparse.Namespace,
    pids: dict[str, int] | None = None,
    apis: dict[str, str] | None = None,
    between: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Every measurement of the univrs side: {"writes": {N: medians}, "reads": {...}}.
    ``between(r)`` (blocking, run in a thread) runs the other system's repeat ``r`` next to
    univrs's: after it in even repeats, before it in odd ones (``--compare-etcd``)."""
    most = max(args.clients)
    pids = pids or {}
    servers = Servers(apis) if apis else None
    read_nodes = endpoints if args.read_nodes == "all" else None
    go = args.loadgen == "go"
    procs = 1 if go else args.client_procs  # one Go process runs its loops on every CPU
    pool: WorkerPool | None = None
    if go:
        pool = WorkerPool(command=args.go_worker, sample_in_worker=True)
    elif procs > 1:
        pool = WorkerPool()
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_client(endpoints, timeout=30))
            for _ in range(max(1, min(args.connections, most)))
        ]
        read_clients = clients
        if read_nodes and pool is None:
            plan = connection_plan(min(args.connections, most), 1, read_nodes)
            read_clients = await open_clients(stack, endpoints, plan)
        keys = [f"bench-{i}" for i in range(most)]
        spec = {"name": "bench", "image": "bench:1", "replicas": 1}

        async def ensure(i: int) -> None:
            try:
                await clients[i % len(clients)].create_workload(spec, id=keys[i])
            except UnivrsError as exc:
                if exc.code != "already-exists":
                    raise

        limit = trio.CapacityLimiter(256)

        async def ensure_limited(i: int) -> None:
            async with limit:
                await ensure(i)

        async with trio.open_nursery() as nursery:
            for i in range(len(keys)):
                nursery.start_soon(ensure_limited, i)

        ops = load_ops(keys, args.write_answer)
        lease_offered = False
        if args.reads:
            try:
                await clients[0].get_workload(keys[0], consistency="lease")
                lease_offered = True
            except InvalidArgument:
                pass  # the cluster has read leases off: reported as not offered
        phases = ["writes"] + (["reads"] + (["lease-reads"] if lease_offered else [])) * bool(
            args.reads
        )
        if pool is not None:
            stack.callback(pool.stop)
            await pool.start(
                procs, endpoints, args.connections, most, read_nodes, args.write_answer
            )

        runs: dict[str, dict[int, list[dict[str, Any]]]] = {p: {} for p in PHASES}
        # The sample's values start above every value the load writes (``replicas`` 0-9, and
        # 1 at creation): a stale read of a load's value can never pass for a sampled one.
        values = dict.fromkeys(keys[:SAMPLE_KEYS], SAMPLE_FIRST_VALUE)
        profiled: dict[str, Any] | None = None
        profile_phase = args.profile_phase if args.profile_phase in phases else None
        if args.profile and profile_phase is None:
            print(f"--profile: phase {args.profile_phase} is not measured: none", file=sys.stderr)
        titles = {
            "writes": "writes",
            "reads": "linearizable reads",
            "lease-reads": "lease reads",
        }
        for r in range(args.repeat):
            if between is not None and r % 2 == 1:
                await trio.to_thread.run_sync(between, r)
            for n in args.clients:
                for phase in phases:
                    pool_n = read_clients if phase != "writes" else clients
                    conns = pool_n[: max(1, min(len(pool_n), n))]
                    sample = None
                    if phase == "writes" and args.check and n >= SAMPLE_MIN_CLIENTS:
                        sample = Sample(keys[:SAMPLE_KEYS], values, args.write_answer)
                        conns = clients[: max(1, min(len(clients), n))]
                    profile = None
                    target = None
                    if args.profile and r == 0 and n == most and phase == profile_phase:
                        leader = await _leader_of(servers, clients[0].leader)
                        target = _profile_pid(args.profile_process, leader, pids, pool)
                        if target is None:
                            print(
                                f"--profile: no process {args.profile_process!r} to profile",
                                file=sys.stderr,
                            )
                        else:
                            profile = (target[1], pathlib.Path(args.profile))
                    m = await measure(
                        conns,
                        n,
                        args.duration,
                        ops[phase],
                        pids,
                        sample,
                        profile,
                        phase=phase,
                        pool=pool,
                        servers=servers,
                    )
                    # The leader by the nodes' metrics (a cluster the bench started), else the
                    # hint the client's connection last received.
                    m["leader_hint"] = clients[0].leader
                    m.setdefault("leader", clients[0].leader)
                    if profile is not None and target is not None:
                        m["profile"] = {"process": target[0], "clients": n, "phase": phase}
                        if profile[1].exists():
                            m["profile"].update(summarise_profile(profile[1]))
                        profiled = m["profile"]
                    runs[phase].setdefault(n, []).append(m)
                    _progress(f"univrs {titles[phase]}, {n} clients, run {r + 1}", m)
            if between is not None and r % 2 == 0:
                await trio.to_thread.run_sync(between, r)
        result: dict[str, Any] = {
            phase: {str(n): median_of(ms) for n, ms in by_n.items()}
            for phase, by_n in runs.items()
            if by_n
        }
        result["leader"] = await _leader_of(servers, clients[0].leader)
        result["connections"] = len(clients)
        result["client_procs"] = procs
        result["loadgen"] = args.loadgen
        result["read_nodes"] = args.read_nodes
        result["write_answer"] = args.write_answer
        if pool is not None:
            result["worker_connections"] = {
                "writes": len(connection_plan(args.connections, procs, None)),
                "reads": len(connection_plan(args.connections, procs, read_nodes)),
            }
        elif read_nodes:
            result["read_connections"] = len(read_clients)
        if args.reads:
            off = "not offered by the cluster ([raft] read_lease off)"
            result["lease_reads"] = "measured" if lease_offered else off
        if profiled is not None:
            result["profile"] = profiled
        return result


def _progress(what: str, m: dict[str, Any]) -> None:
    cpu = sum(m["cpu_ms_per_op"].values())
    check = f", sample {m['check']['verdict']}" if "check" in m else ""
    rpc = (m.get("servers") or {}).get("reads_per_confirmation")
    check += f", {rpc:g} reads/confirmation" if rpc and "reads" in what else ""
    check += f", leader {m['leader']}" if m.get("leader") else ""
    ppb = (m.get("servers") or {}).get("proposals_per_batch")
    check += f", {ppb:g} writes/batch" if ppb and "writes" in what else ""
    gc_ms = (m.get("servers") or {}).get("gc_ms")
    if gc_ms:
        full = m["servers"].get("gc_full", {})
        check += ", GC ms (full) " + " ".join(
            f"{n} {v:g} ({full.get(n, 0)})" for n, v in sorted(gc_ms.items())
        )
    print(
        f"  {what}: {m['ops_per_s']:.0f}/s p99 {m['p99_ms']:.1f} ms, CPU {cpu:.3f} ms/op{check}",
        file=sys.stderr,
    )


def start_cluster(
    folder: pathlib.Path,
    size: int,
    log_level: str = "warning",
    extra_config: str = "",
    state_backend: str | None = None,
) -> tuple[Any, list[str], dict[str, int], dict[str, str]]:
    """A fresh local cluster of node processes: (cluster, raft endpoints, pids by node id, REST
    addresses by node id);
    ``extra_config``: lines for each node's ``[raft]`` table (``read_lease = true`` with
    ``--reads``: lease reads measured apart); ``state_backend``: the nodes' ``[state] backend``
    (None: their default)."""
    from univrs.tools.devcluster import LocalCluster
    from univrs.tools.started import start_fresh

    cluster = LocalCluster.with_free_ports(
        folder, size=size, extra_config=extra_config, state_backend=state_backend
    )
    # Every node up as itself, not only a leader: a node whose port another process took
    # between the pick and its bind exits, and the other two elect without it. That node:
    # again on other ports; another exit: NodeExited.
    try:
        start_fresh(cluster, log_level=log_level)
        cluster.wait_leader(60.0)
    except BaseException:
        cluster.stop_all()
        raise
    pids = {n.node_id: n.pid for n in cluster.nodes if n.pid is not None}
    apis = {n.node_id: n.api_addr for n in cluster.nodes}
    return cluster, [n.raft_addr for n in cluster.nodes], pids, apis


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=pathlib.Path(__file__).parent,
    )
    return out.stdout.strip() or "?"


def build_go_worker(args: argparse.Namespace) -> None:
    """With ``--loadgen go``, build the Go worker (once per version of its sources) into
    ``args.go_worker``. If it does not build, the bench falls back to the Python workers when
    it chose Go itself (``auto``: a toolchain too old or a broken package must not stop a
    run), and stops, saying why, when ``--loadgen go`` was asked for."""
    if args.loadgen != "go":
        return
    try:
        args.go_worker = go_worker()
    except (OSError, subprocess.CalledProcessError) as exc:
        if not args.loadgen_chosen:
            raise SystemExit(f"--loadgen go: the Go worker did not build: {exc}") from None
        print(f"the Go worker did not build ({exc}): Python workers instead", file=sys.stderr)
        args.loadgen = "python"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build_go_worker(args)
    settle(())  # the clients' measured latencies should not carry full-GC walks of the imports
    etcd_skipped = None
    if args.compare_etcd:
        from univrs.bench import etcd

        etcd_skipped = etcd.missing()
        if etcd_skipped:
            print(f"--compare-etcd: skipped: {etcd_skipped}", file=sys.stderr)
    cluster = None
    pids: dict[str, int] = {}
    apis: dict[str, str] = {}
    load_before = _load()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="univrs-bench-") as tmp, ExitStack() as stack:
        folder = pathlib.Path(args.dir) if args.dir else pathlib.Path(tmp)
        etcd_side = None
        if args.compare_etcd and not etcd_skipped:
            from univrs.bench import etcd

            # Started first, measured a repeat at a time between univrs's (interleaved).
            etcd_side = stack.enter_context(
                etcd.EtcdSide(
                    folder / "etcd",
                    nodes=args.nodes,
                    clients=args.clients,
                    connections=args.connections,
                    duration=args.duration,
                    warmup=WARMUP,
                    reads=args.reads,
                    progress=_progress,
                )
            )
        try:
            if args.endpoints:
                endpoints = [e for e in args.endpoints.split(",") if e]
            else:
                print(f"starting a local {args.nodes}-node cluster ...", file=sys.stderr)
                cluster, endpoints, pids, apis = start_cluster(
                    folder / "univrs",
                    args.nodes,
                    args.log_level,
                    (
                        ""
                        if args.batch_entries is None
                        else f"batch_entries = {str(args.batch_entries).lower()}\n"
                    )
                    + ("read_lease = true\n" if args.reads else "")
                    + "".join(f"{line}\n" for line in args.raft),
                    args.state_backend,
                )
            between = etcd_side.run_repeat if etcd_side is not None else None
            result["univrs"] = trio.run(run_bench, endpoints, args, pids, apis, between)
        finally:
            if cluster is not None:
                for n in cluster.nodes:
                    if not n.running():
                        code = n.proc.poll() if n.proc is not None else None
                        print(
                            f"warning: node {n.node_id} exited during the run (code {code}): "
                            f"{last_log_line(n) or '(no log)'}",
                            file=sys.stderr,
                        )
                cluster.stop_all()
        if etcd_side is not None:
            result["etcd"] = etcd_side.result(median_of)
    result["config"] = {
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": WARMUP,
        "repeat": args.repeat,
        "nodes": args.nodes,
        "reads": args.reads,
        "client_procs": args.client_procs,
        "loadgen": args.loadgen,
        "raft": args.raft,
        "read_nodes": args.read_nodes,
        "state_backend": args.state_backend or "default",
        "endpoints": endpoints,
        "load_before": load_before,
        "load_after": _load(),
        "cpus": os.cpu_count(),
        "commit": _commit(),
    }
    if etcd_skipped:
        result["config"]["etcd_skipped"] = etcd_skipped
    print(report(result))
    if args.json == "-":
        print(json.dumps(result, sort_keys=True))
    elif args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, sort_keys=True, indent=1) + "\n")
        png = path.with_suffix(".png")
        if plot(result, png):
            print(f"wrote {path} and {png}", file=sys.stderr)
        else:
            print(f"wrote {path} (no plot: pip install -e '.[bench]' for matplotlib)")
    failed = [
        f"{n} clients: {r['check']['summary']}"
        for n, r in result["univrs"].get("writes", {}).items()
        if r.get("check", {}).get("verdict", "linearizable") != "linearizable"
    ]
    if failed:
        print("LINEARIZABILITY SAMPLE FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
