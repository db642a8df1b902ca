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
closed loops in one Go worker process (``univrs_loadgen/main.go``: the same requests, sessions
and frames as the Python client, a few microseconds of CPU per operation, as the etcd side's
Go load generator); ``--loadgen python`` with ``--client-procs N`` runs them in N Python worker
processes (``univrs.bench.workers``; their latency histograms are merged,
``univrs.bench.latency``) so that one Python client process does not cap the load (N = 1: in
the bench's own process). The linearizability sample runs in the bench's own process either
way; ``--read-nodes all`` spreads the reads over every node (a
follower's linearizable read is confirmed by the leader, ReadIndex) instead of the leader.

For a cluster it started, the bench also reports the CPU milliseconds each process (nodes, the
bench's own ``client`` and its workers ``client-1``..) spent per operation, from
/proc/<pid>/stat: the cost per write, summed over the processes, is the figure that does not
depend on how busy the machine is; and from the nodes' metrics (``univrs.bench.nodes``) which
node led and how many reads one ReadIndex confirmation served. ``--profile FILE`` runs py-spy
on one process (``--profile-process``) during one phase (``--profile-phase``).

``--compare-etcd`` runs the same load against a local 3-member etcd cluster
(``univrs.bench.etcd``) in the same run and prints both side by side with the ratio.
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
import shutil
import sys
import tempfile
from contextlib import AsyncExitStack
from typing import Any

import trio

from univrs.bench.measure import STALL_GRACE, WARMUP, measure, median_of, percentile
from univrs.bench.nodes import Servers
from univrs.bench.report import plot, py_spy_command, report, summarise_profile
from univrs.bench.sample import SAMPLE_KEYS, SAMPLE_MIN_CLIENTS, Sample
from univrs.bench.workers import (
    WorkerPool,
    connection_plan,
    go_worker,
    go_worker_missing,
    load_ops,
    open_clients,
)
from univrs.client.client import open_client
from univrs.errors import InvalidArgument, UnivrsError
from univrs.server.heap import settle
from univrs.tools.started import last_log_line

__all__ = ["STALL_GRACE", "WARMUP", "main", "measure", "median_of", "parse_args", "percentile"]

MAX_POINTS = 8
MAX_CLIENTS = 4096
MAX_REPEAT = 10
MAX_DURATION = 120.0
MAX_CLIENT_PROCS = 16
DEFAULT_BUDGET = 1800.0
SETUP_ESTIMATE = 20.0  # seconds per client count for starting clusters and creating keys
PHASES = ("writes", "reads", "lease-reads")


def client_procs(text: str) -> int:
    """``--client-procs``: a count, or ``auto`` for one worker process per CPU the bench may
    use (at most ``MAX_CLIENT_PROCS``). The etcd load generator is one Go process whose
    goroutines run on every CPU (GOMAXPROCS defaults to the CPU count); one Python process
    runs its closed loops on one, so ``auto`` gives both sides the same cores."""
    if text == "auto":
        return max(1, min(MAX_CLIENT_PROCS, len(os.sched_getaffinity(0))))
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or 'auto': {text!r}") from None


def py_spy_available() -> bool:
    """Whether py-spy is installed (next to this Python, or on the PATH)."""
    return py_spy_command(0, pathlib.Path("x"))[0] != "py-spy" or bool(shutil.which("py-spy"))


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
) -> dict[str, Any]:
    """Every measurement of the univrs side: {"writes": {N: medians}, "reads": {...}}."""
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
        values = dict.fromkeys(keys[:SAMPLE_KEYS], 0)
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


def run_etcd(args: argparse.Namespace, folder: pathlib.Path) -> dict[str, Any]:
    """The same measurements against a local etcd cluster (see ``univrs.bench.etcd``)."""
    from univrs.bench import etcd

    binary = etcd.build_loadgen()
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {"writes": {}, "reads": {}}
    print("starting a local 3-member etcd cluster ...", file=sys.stderr)
    with etcd.EtcdCluster(folder / "etcd", size=args.nodes) as cluster:
        for r in range(args.repeat):
            for n in args.clients:
                phases = [("writes", "put")] + ([("reads", "get")] if args.reads else [])
                for phase, op in phases:
                    m = etcd.run_load(
                        binary,
                        cluster,
                        clients=n,
                        connections=args.connections,
                        duration=args.duration,
                        warmup=WARMUP,
                        op=op,
                    )
                    runs[phase].setdefault(n, []).append(m)
                    _progress(f"etcd {phase}, {n} clients, run {r + 1}", m)
    result: dict[str, Any] = {
        phase: {str(n): median_of(ms) for n, ms in by_n.items()}
        for phase, by_n in runs.items()
        if by_n
    }
    result["version"] = etcd.etcd_version()
    return result


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


def parse_clients(text: str) -> list[int]:
    """``1,64,256`` -> [1, 64, 256] (sorted, distinct, bounded); ValueError if invalid."""
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or len(values) > MAX_POINTS or values[0] < 1 or values[-1] > MAX_CLIENTS:
        raise ValueError(
            f"--clients takes 1 to {MAX_POINTS} counts between 1 and {MAX_CLIENTS}, got {text!r}"
        )
    return values


def planned_seconds(args: argparse.Namespace) -> float:
    """How long the run will take at least (the budget check)."""
    phases = 3 if args.reads else 1  # writes; linearizable and lease reads
    systems = 2 if args.compare_etcd else 1
    per = float(args.duration) + WARMUP
    points = len(args.clients)
    total: float = int(args.repeat) * points * phases * per + SETUP_ESTIMATE * points
    return systems * total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--clients", default="64", help="concurrent clients, or a sweep: 1,64,256,1024 (64)"
    )
    parser.add_argument("--connections", type=int, default=4, help="client connections (4)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per point, median (3)")
    parser.add_argument(
        "--reads", action="store_true", help="also linearizable reads, and lease reads apart"
    )
    parser.add_argument(
        "--no-check", dest="check", action="store_false", help="skip the linearizability sample"
    )
    parser.add_argument(
        "--compare-etcd", action="store_true", help="the same load against a local etcd"
    )
    parser.add_argument("--nodes", type=int, default=3, help="size of the local cluster(s) (3)")
    parser.add_argument(
        "--batch-entries",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the local cluster packs writes into batch entries or not (raft.batch_entries; "
        "default: the node's default, on)",
    )
    parser.add_argument("--endpoints", help="host:port,... of a running cluster's raft ports")
    parser.add_argument("--dir", help="keep the local clusters' files (configs, logs) here")
    parser.add_argument("--log-level", default="warning", help="the nodes' log level")
    parser.add_argument(
        "--state-backend",
        choices=("memory", "lmdb"),
        help="the nodes' [state] backend (default: the nodes' own default, lmdb)",
    )
    parser.add_argument(
        "--client-procs",
        type=client_procs,
        default="auto",
        metavar="N",
        help="run the clients in N worker processes (1: in the bench's own process; auto, the "
        "default: one per CPU this process may use, as the Go load generator's GOMAXPROCS)",
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "go", "python"),
        default="auto",
        help="what runs the closed loops: the Go worker (one process on every CPU, a few us of "
        "CPU per operation, as etcd's load generator), the Python workers (--client-procs), or "
        "auto, the default: go when it can be built here (golang-go, "
        "golang-github-gorilla-websocket-dev), else python",
    )
    parser.add_argument(
        "--write-answer",
        choices=("minimal", "full"),
        default="minimal",
        help="what the writes ask for: their id and version, or the whole document (minimal)",
    )
    parser.add_argument(
        "--read-nodes",
        choices=("leader", "all"),
        default="leader",
        help="linearizable and lease reads go to the leader (following it) or are spread "
        "over every node (followers confirm with the leader: ReadIndex) (leader)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy a process during the first run at the most clients (raw stacks)",
    )
    parser.add_argument(
        "--profile-phase",
        choices=PHASES,
        default="writes",
        help="the phase --profile samples (writes)",
    )
    parser.add_argument(
        "--profile-process",
        default="leader",
        metavar="WHO",
        help="the process --profile samples: leader, follower, a node id, client (the bench's "
        "own) or client-1..client-N (a worker) (leader)",
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure here ('-': stdout)")
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        help=f"refuse a run planned longer than this many seconds ({DEFAULT_BUDGET:g})",
    )
    args = parser.parse_args(argv)
    try:
        args.clients = parse_clients(args.clients)
    except ValueError as exc:
        parser.error(str(exc))
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat must be between 1 and {MAX_REPEAT}")
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION:g}] seconds")
    if args.connections < 1 or args.nodes < 1:
        parser.error("--connections and --nodes must be positive")
    if not 1 <= args.client_procs <= MAX_CLIENT_PROCS:
        parser.error(f"--client-procs must be between 1 and {MAX_CLIENT_PROCS}")
    args.go_worker = None
    if args.loadgen != "python":
        lacking = go_worker_missing()
        if lacking is not None and args.loadgen == "go":
            parser.error(f"--loadgen go: the Go worker cannot be built here: {lacking}")
        args.loadgen = "python" if lacking is not None else "go"
    if args.profile and not py_spy_available():
        print("--profile: py-spy is not installed: no profile taken", file=sys.stderr)
        args.profile = None
    if args.profile and args.endpoints:
        parser.error("--profile needs the node processes the bench starts: no --endpoints")
    if args.compare_etcd and args.endpoints:
        parser.error("--compare-etcd starts both clusters itself: no --endpoints")
    planned = planned_seconds(args)
    if planned > args.budget:
        parser.error(
            f"this run would take about {planned:.0f} s, over --budget {args.budget:g} s: "
            "fewer client counts, repeats or a shorter --duration (or raise --budget)"
        )
    return args


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def _commit() -> str:
    import subprocess

    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=pathlib.Path(__file__).parent,
    )
    return out.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.loadgen == "go":
        args.go_worker = go_worker()  # built once per version of its source
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
    with tempfile.TemporaryDirectory(prefix="univrs-bench-") as tmp:
        folder = pathlib.Path(args.dir) if args.dir else pathlib.Path(tmp)
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
                    + ("read_lease = true\n" if args.reads else ""),
                    args.state_backend,
                )
            result["univrs"] = trio.run(run_bench, endpoints, args, pids, apis)
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
        if args.compare_etcd and not etcd_skipped:
            result["etcd"] = run_etcd(args, folder)
    result["config"] = {
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": WARMUP,
        "repeat": args.repeat,
        "nodes": args.nodes,
        "reads": args.reads,
        "client_procs": args.client_procs,
        "loadgen": args.loadgen,
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
