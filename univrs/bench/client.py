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
sample of the clients (at most ``SAMPLE_KEYS``) write unique values and, alongside, one paced
reader per sampled key reads it linearizably; those operations are recorded as a history
(``univrs.chaos.history``) and checked with the chaos suite's checker
(``univrs.chaos.linearizability``). The run fails if a sample is not linearizable. The sampled
readers' operations are not counted in the figures.

For a cluster it started, the bench also reports the CPU milliseconds each process (nodes and
the client) spent per operation, from /proc/<pid>/stat: the cost per write, summed over the
processes, is the figure that does not depend on how busy the machine is.

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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

from univrs.bench.cpu import cpu_seconds
from univrs.bench.report import plot, py_spy_command, report, summarise_profile
from univrs.chaos.history import Event, EventType, Fn
from univrs.chaos.linearizability import check_history
from univrs.client.client import Client, open_client
from univrs.errors import InvalidArgument, UnivrsError

WARMUP = 1.0
MAX_POINTS = 8
MAX_CLIENTS = 4096
MAX_REPEAT = 10
MAX_DURATION = 120.0
DEFAULT_BUDGET = 1800.0
STALL_GRACE = 30.0  # seconds past its end after which a measurement is abandoned
SETUP_ESTIMATE = 20.0  # seconds per client count for starting clusters and creating keys
SAMPLE_KEYS = 4  # keys whose operations are recorded and checked, per write measurement
SAMPLE_OPS = 1000  # recorded operations per sampled key at most
SAMPLE_MIN_CLIENTS = 16  # below this many clients no sample (its reader would skew the load)
SAMPLE_READ_PAUSE = 0.01  # seconds between two reads of a sampled reader (light load)
CHECK_TIMEOUT = 20.0  # seconds for the checker per sample


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list (nearest rank), NaN when empty."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Sample:
    """The recorded history of the sampled keys in one write measurement."""

    def __init__(self, keys: list[str], values: dict[str, int]) -> None:
        self.keys = keys
        self.events: list[Event] = []
        self.ops = dict.fromkeys(keys, 0)
        # The last value written per key, shared by the run's samples: values stay unique.
        self.values = values
        self.next_process = 0

    def process(self) -> int:
        self.next_process += 1
        return self.next_process

    def full(self, key: str) -> bool:
        return self.ops[key] >= SAMPLE_OPS

    def record(self, process: int, type_: EventType, f: Fn, key: str, value: Any) -> None:
        if type_ is EventType.INVOKE:
            self.ops[key] += 1
        self.events.append(
            Event(
                process=process,
                type=type_,
                f=f,
                key=key,
                value=value,
                time=trio.current_time(),
            )
        )

    def check(self) -> dict[str, Any]:
        result = check_history(self.events, timeout=CHECK_TIMEOUT)
        return {
            "verdict": result.verdict.value,
            "ops": sum(k.operations for k in result.keys),
            "keys": len(result.keys),
            "summary": result.summary(),
        }


async def recorded_write(sample: Sample, process: int, client: Client, key: str) -> int:
    """Write the key's next unique value, recorded; the process id to go on with."""
    sample.values[key] += 1
    value = sample.values[key]
    sample.record(process, EventType.INVOKE, Fn.WRITE, key, value)
    try:
        await client.scale_workload(key, value)
    except UnivrsError as exc:
        # Definite refusals did not apply; anything else may have: unknown, new process id.
        if exc.outcome_unknown:
            sample.record(process, EventType.INFO, Fn.WRITE, key, value)
            return sample.process()
        sample.record(process, EventType.FAIL, Fn.WRITE, key, value)
        return process
    sample.record(process, EventType.OK, Fn.WRITE, key, value)
    return process


async def recorded_read(sample: Sample, process: int, client: Client, key: str) -> int:
    sample.record(process, EventType.INVOKE, Fn.READ, key, None)
    try:
        doc = await client.get_workload(key, consistency="linearizable")
    except UnivrsError:
        sample.record(process, EventType.INFO, Fn.READ, key, None)
        return sample.process()
    sample.record(process, EventType.OK, Fn.READ, key, doc["spec"]["replicas"])
    return process


async def measure(
    clients: list[Client],
    workers: int,
    duration: float,
    op: Callable[[Client, int], Awaitable[Any]],
    pids: dict[str, int] | None = None,
    sample: Sample | None = None,
    profile: tuple[int, pathlib.Path] | None = None,
) -> dict[str, Any]:
    """Run ``workers`` closed loops of ``op`` for ``duration`` s (after a warm-up); with
    ``pids``, also the CPU milliseconds each process spent per operation. With ``sample``,
    the workers of its keys (the first ones) write recorded unique values instead, and one
    paced reader per key reads it, recorded (neither counted in the figures). With ``profile``
    (pid, file), ``py-spy record`` samples that process during the measured window."""
    if sample is not None:
        # The history starts with one completed write per key: whatever an earlier measurement
        # left in the register, every later operation of this sample follows this write.
        for j, key in enumerate(sample.keys):
            await recorded_write(sample, sample.process(), clients[j % len(clients)], key)
    latencies: list[float] = []
    errors: list[str] = []
    start = trio.current_time() + WARMUP
    stop = start + duration
    sampled = len(sample.keys) if sample is not None else 0

    async def worker(i: int) -> None:
        client = clients[i % len(clients)]
        process = sample.process() if sample is not None and i < sampled else 0
        while True:
            now = trio.current_time()
            if now >= stop:
                return
            t0 = time.perf_counter()
            try:
                if sample is not None and i < sampled and not sample.full(sample.keys[i]):
                    process = await recorded_write(sample, process, client, sample.keys[i])
                else:
                    await op(client, i)
            except UnivrsError as exc:
                errors.append(f"{exc.code}: {exc.message}")
                continue
            if now >= start:
                latencies.append(time.perf_counter() - t0)

    async def reader(key: str, client: Client) -> None:
        assert sample is not None
        process = sample.process()
        while trio.current_time() < stop and not sample.full(key):
            process = await recorded_read(sample, process, client, key)
            await trio.sleep(SAMPLE_READ_PAUSE)  # pacing, not synchronisation

    processes = {**(pids or {}), "client": os.getpid()}
    cpu_before: dict[str, float | None] = {}
    done_before = 0

    async def sample_cpu() -> None:
        nonlocal done_before
        await trio.sleep_until(start)
        done_before = len(latencies)
        cpu_before.update({name: cpu_seconds(pid) for name, pid in processes.items()})

    async def record_profile() -> None:
        assert profile is not None
        await trio.sleep_until(start)
        pid, path = profile
        await trio.run_process(
            [*py_spy_command(pid, path), "--duration", str(max(1, int(duration)))],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    stalled = False
    with trio.move_on_at(stop + STALL_GRACE) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_cpu)
            if profile is not None:
                nursery.start_soon(record_profile)
            for i in range(workers):
                nursery.start_soon(worker, i)
            if sample is not None:
                for j, key in enumerate(sample.keys):
                    nursery.start_soon(reader, key, clients[(j + 1) % len(clients)])
    if scope.cancelled_caught:
        stalled = True
    counted = max(1, len(latencies) - done_before)
    cpu_ms: dict[str, float] = {}
    for name, pid in processes.items():
        before, after = cpu_before.get(name), cpu_seconds(pid)
        if before is not None and after is not None:
            cpu_ms[name] = (after - before) * 1000 / counted
    latencies.sort()
    out: dict[str, Any] = {
        "cpu_ms_per_op": cpu_ms,
        "ops_per_s": len(latencies) / duration,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "ops": len(latencies),
        "errors": len(errors) + (1 if stalled else 0),
        "first_error": "stalled: abandoned" if stalled else (errors[0] if errors else None),
    }
    if sample is not None:
        out["check"] = sample.check()
    return out


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeated measurements of one point (figures and CPU per process)."""
    out: dict[str, Any] = {}
    for key in ("ops_per_s", "p50_ms", "p99_ms", "max_ms"):
        out[key] = round(statistics.median(r[key] for r in runs), 2)
    names = set().union(*(r["cpu_ms_per_op"] for r in runs))
    out["cpu_ms_per_op"] = {
        name: round(statistics.median(r["cpu_ms_per_op"].get(name, 0.0) for r in runs), 3)
        for name in sorted(names)
    }
    out["cpu_ms_per_op_total"] = round(
        statistics.median(sum(r["cpu_ms_per_op"].values()) for r in runs), 3
    )
    out["leaders"] = sorted({r["leader"] for r in runs if r.get("leader")})
    out["errors"] = sum(r["errors"] for r in runs)
    out["runs"] = [{k: round(r[k], 2) for k in ("ops_per_s", "p50_ms", "p99_ms")} for r in runs]
    first = next((r["first_error"] for r in runs if r["first_error"]), None)
    if first:
        out["first_error"] = first
    checks = [r["check"] for r in runs if "check" in r]
    if checks:
        bad = [c for c in checks if c["verdict"] != "linearizable"]
        out["check"] = {
            "verdict": bad[0]["verdict"] if bad else "linearizable",
            "ops": sum(c["ops"] for c in checks),
            "samples": len(checks),
            "summary": bad[0]["summary"] if bad else f"{len(checks)} samples linearizable",
        }
    return out


async def run_bench(
    endpoints: list[str], args: argparse.Namespace, pids: dict[str, int] | None = None
) -> dict[str, Any]:
    """Every measurement of the univrs side: {"writes": {N: medians}, "reads": {...}}."""
    most = max(args.clients)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_client(endpoints, timeout=30))
            for _ in range(max(1, min(args.connections, most)))
        ]
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

        counter = [0]

        async def write(client: Client, i: int) -> None:
            counter[0] += 1
            await client.scale_workload(keys[i], counter[0] % 10)

        async def read(client: Client, i: int) -> None:
            await client.get_workload(keys[i], consistency="linearizable")

        async def lease_read(client: Client, i: int) -> None:
            await client.get_workload(keys[i], consistency="lease")

        lease_offered = False
        if args.reads:
            try:
                await clients[0].get_workload(keys[0], consistency="lease")
                lease_offered = True
            except InvalidArgument:
                pass  # the cluster has read leases off: reported as not offered

        runs: dict[str, dict[int, list[dict[str, Any]]]] = {
            "writes": {},
            "reads": {},
            "lease-reads": {},
        }
        values = dict.fromkeys(keys[:SAMPLE_KEYS], 0)
        profiled: dict[str, Any] | None = None
        for r in range(args.repeat):
            for n in args.clients:
                conns = clients[: max(1, min(len(clients), n))]
                sample = None
                if args.check and n >= SAMPLE_MIN_CLIENTS:
                    sample = Sample(keys[:SAMPLE_KEYS], values)
                profile = None
                leader_pid = (pids or {}).get(clients[0].leader or "")
                if args.profile and r == 0 and n == most and leader_pid is not None:
                    profile = (leader_pid, pathlib.Path(args.profile))
                m = await measure(conns, n, args.duration, write, pids, sample, profile)
                m["leader"] = clients[0].leader
                if profile is not None:
                    m["profile"] = {"node": clients[0].leader, "clients": n}
                    if profile[1].exists():
                        m["profile"].update(summarise_profile(profile[1]))
                    profiled = m["profile"]
                runs["writes"].setdefault(n, []).append(m)
                _progress(f"univrs writes, {n} clients, run {r + 1}", m)
                if args.reads:
                    m = await measure(conns, n, args.duration, read, pids)
                    m["leader"] = clients[0].leader
                    runs["reads"].setdefault(n, []).append(m)
                    _progress(f"univrs linearizable reads, {n} clients, run {r + 1}", m)
                if args.reads and lease_offered:
                    m = await measure(conns, n, args.duration, lease_read, pids)
                    m["leader"] = clients[0].leader
                    runs["lease-reads"].setdefault(n, []).append(m)
                    _progress(f"univrs lease reads, {n} clients, run {r + 1}", m)
        result: dict[str, Any] = {
            phase: {str(n): median_of(ms) for n, ms in by_n.items()}
            for phase, by_n in runs.items()
            if by_n
        }
        result["leader"] = clients[0].leader
        result["connections"] = len(clients)
        if args.reads:
            off = "not offered by the cluster ([raft] read_lease off)"
            result["lease_reads"] = "measured" if lease_offered else off
        if profiled is not None:
            result["profile"] = profiled
        return result


def _progress(what: str, m: dict[str, Any]) -> None:
    cpu = sum(m["cpu_ms_per_op"].values())
    check = f", sample {m['check']['verdict']}" if "check" in m else ""
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
    folder: pathlib.Path, size: int, log_level: str = "warning", extra_config: str = ""
) -> tuple[Any, list[str], dict[str, int]]:
    """A fresh local cluster of node processes: (cluster, raft endpoints, pids by node id);
    ``extra_config``: lines for each node's ``[raft]`` table (``read_lease = true`` with
    ``--reads``: lease reads measured apart)."""
    from univrs.tools.devcluster import LocalCluster

    cluster = LocalCluster.with_free_ports(folder, size=size, extra_config=extra_config)
    cluster.start_all(log_level=log_level)
    try:
        cluster.wait_leader(60.0)
    except BaseException:
        cluster.stop_all()
        raise
    pids = {n.node_id: n.pid for n in cluster.nodes if n.pid is not None}
    return cluster, [n.raft_addr for n in cluster.nodes], pids


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
        "--profile",
        metavar="FILE",
        help="py-spy the leader during the first write run at the most clients (raw stacks)",
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
    etcd_skipped = None
    if args.compare_etcd:
        from univrs.bench import etcd

        etcd_skipped = etcd.missing()
        if etcd_skipped:
            print(f"--compare-etcd: skipped: {etcd_skipped}", file=sys.stderr)
    cluster = None
    pids: dict[str, int] = {}
    load_before = _load()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="univrs-bench-") as tmp:
        folder = pathlib.Path(args.dir) if args.dir else pathlib.Path(tmp)
        try:
            if args.endpoints:
                endpoints = [e for e in args.endpoints.split(",") if e]
            else:
                print(f"starting a local {args.nodes}-node cluster ...", file=sys.stderr)
                cluster, endpoints, pids = start_cluster(
                    folder / "univrs",
                    args.nodes,
                    args.log_level,
                    (
                        ""
                        if args.batch_entries is None
                        else f"batch_entries = {str(args.batch_entries).lower()}\n"
                    )
                    + ("read_lease = true\n" if args.reads else ""),
                )
            result["univrs"] = trio.run(run_bench, endpoints, args, pids)
        finally:
            if cluster is not None:
                gone = [n.node_id for n in cluster.nodes if not n.running()]
                if gone:
                    print(f"warning: nodes {gone} exited during the run", file=sys.stderr)
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
