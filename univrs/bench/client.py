"""Client throughput and latency through the fast protocol (``scripts/bench``).

Starts a fresh local cluster of real node processes (``univrs.tools.devcluster``, fsync on)
unless ``--endpoints`` names a running one, creates one workload per client, then measures, each for
``--duration`` seconds after a short warm-up and ``--repeat`` times:

* writes: ``--clients`` closed-loop clients (default 64), each scaling its own workload
  (``workload.scale``, an idempotent keyed write: one log entry each), spread over
  ``--connections`` client connections;
* reads: the same clients reading their workload with linearizable consistency;
* single-client writes: one client, one request at a time (latency floor).

Prints ops/s and latency p50/p99/max (medians over the repeats) and, for a cluster it started,
the CPU milliseconds each process spent per operation (where the time goes, independent of
how busy the machine is); ``--json`` prints one JSON object (``ops_per_s``, ``p50_ms``,
``p99_ms`` are the multi-client writes).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

from univrs.client.client import Client, open_client
from univrs.errors import UnivrsError

WARMUP = 1.0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def measure(
    clients: list[Client],
    workers: int,
    duration: float,
    op: Callable[[Client, int], Awaitable[Any]],
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Run ``workers`` closed loops of ``op`` for ``duration`` s (after a warm-up); with
    ``pids``, also the CPU milliseconds each process spent per operation."""
    latencies: list[float] = []
    errors: list[str] = []
    start = trio.current_time() + WARMUP
    stop = start + duration

    async def worker(i: int) -> None:
        client = clients[i % len(clients)]
        while True:
            now = trio.current_time()
            if now >= stop:
                return
            t0 = time.perf_counter()
            try:
                await op(client, i)
            except UnivrsError as exc:
                errors.append(f"{exc.code}: {exc.message}")
                continue
            if now >= start:
                latencies.append(time.perf_counter() - t0)

    processes = {**(pids or {}), "client": os.getpid()}
    cpu_before: dict[str, float | None] = {}
    done_before = 0

    async def sample_cpu() -> None:
        nonlocal done_before
        await trio.sleep_until(start)
        done_before = len(latencies)
        cpu_before.update({name: cpu_seconds(pid) for name, pid in processes.items()})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_cpu)
        for i in range(workers):
            nursery.start_soon(worker, i)
    counted = max(1, len(latencies) - done_before)
    cpu_ms: dict[str, float] = {}
    for name, pid in processes.items():
        before, after = cpu_before.get(name), cpu_seconds(pid)
        if before is not None and after is not None:
            cpu_ms[name] = (after - before) * 1000 / counted
    latencies.sort()
    return {
        "cpu_ms_per_op": cpu_ms,
        "ops_per_s": len(latencies) / duration,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "ops": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("ops_per_s", "p50_ms", "p99_ms", "max_ms"):
        out[key] = round(statistics.median(r[key] for r in runs), 2)
    names = set().union(*(r["cpu_ms_per_op"] for r in runs))
    out["cpu_ms_per_op"] = {
        name: round(statistics.median(r["cpu_ms_per_op"].get(name, 0.0) for r in runs), 3)
        for name in sorted(names)
    }
    out["errors"] = sum(r["errors"] for r in runs)
    out["runs"] = [{k: round(r[k], 2) for k in ("ops_per_s", "p50_ms", "p99_ms")} for r in runs]
    first = next((r["first_error"] for r in runs if r["first_error"]), None)
    if first:
        out["first_error"] = first
    return out


async def run_bench(
    endpoints: list[str], args: argparse.Namespace, pids: dict[str, int] | None = None
) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_client(endpoints, timeout=30))
            for _ in range(max(1, min(args.connections, args.clients)))
        ]
        keys = [f"bench-{i}" for i in range(args.clients)]
        spec = {"name": "bench", "image": "bench:1", "replicas": 1}

        async def ensure(i: int) -> None:
            try:
                await clients[i % len(clients)].create_workload(spec, id=keys[i])
            except UnivrsError as exc:
                if exc.code != "already-exists":
                    raise

        async with trio.open_nursery() as nursery:
            for i in range(len(keys)):
                nursery.start_soon(ensure, i)

        counter = [0]

        async def write(client: Client, i: int) -> None:
            counter[0] += 1
            await client.scale_workload(keys[i], counter[0] % 10)

        async def read(client: Client, i: int) -> None:
            await client.get_workload(keys[i])

        writes, reads, single = [], [], []
        for _ in range(args.repeat):
            writes.append(await measure(clients, args.clients, args.duration, write, pids))
            reads.append(await measure(clients, args.clients, args.duration, read, pids))
            single.append(await measure(clients[:1], 1, args.duration, write, pids))
        result = median_of(writes)
        result["reads"] = median_of(reads)
        result["single_client_writes"] = median_of(single)
        result["config"] = {
            "clients": args.clients,
            "connections": len(clients),
            "duration_s": args.duration,
            "repeat": args.repeat,
            "endpoints": endpoints,
            "leader": clients[0].leader,
        }
        return result


def start_cluster(
    folder: pathlib.Path, size: int, log_level: str = "warning"
) -> tuple[Any, list[str], dict[str, int]]:
    from univrs.tools.devcluster import LocalCluster

    cluster = LocalCluster.with_free_ports(folder, size=size)
    cluster.start_all(log_level=log_level)
    try:
        cluster.wait_leader(60.0)
    except BaseException:
        cluster.stop_all()
        raise
    pids = {n.node_id: n.pid for n in cluster.nodes if n.pid is not None}
    return cluster, [n.raft_addr for n in cluster.nodes], pids


def report(result: dict[str, Any]) -> str:
    def line(name: str, r: dict[str, Any]) -> str:
        text = (
            f"{name:<22} {r['ops_per_s']:>9.0f} ops/s   p50 {r['p50_ms']:7.2f} ms   "
            f"p99 {r['p99_ms']:7.2f} ms   max {r['max_ms']:8.2f} ms"
        )
        if r["errors"]:
            text += f"   errors {r['errors']} ({r.get('first_error')})"
        if r["cpu_ms_per_op"]:
            cpu = ", ".join(f"{k} {v:.3f}" for k, v in r["cpu_ms_per_op"].items())
            text += f"\n{'':<22} CPU ms/op: {cpu}"
        return text

    c = result["config"]
    return "\n".join(
        [
            f"{c['clients']} clients over {c['connections']} connections, {c['duration_s']:g} s "
            f"per run, median of {c['repeat']} (leader {c['leader']})",
            line("writes", result),
            line("linearizable reads", result["reads"]),
            line("single-client writes", result["single_client_writes"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (64)")
    parser.add_argument("--connections", type=int, default=4, help="client connections (4)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per phase, median (3)")
    parser.add_argument("--nodes", type=int, default=3, help="size of the local cluster (3)")
    parser.add_argument("--endpoints", help="host:port,... of a running cluster's raft ports")
    parser.add_argument("--dir", help="keep the local cluster's files (configs, logs) here")
    parser.add_argument("--log-level", default="warning", help="the nodes' log level")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.repeat < 1:
        parser.error("--clients, --duration and --repeat must be positive")
    cluster = None
    pids: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="univrs-bench-") as tmp:
        try:
            if args.endpoints:
                endpoints = [e for e in args.endpoints.split(",") if e]
            else:
                print(f"starting a local {args.nodes}-node cluster ...", file=sys.stderr)
                folder = pathlib.Path(args.dir) if args.dir else pathlib.Path(tmp)
                cluster, endpoints, pids = start_cluster(folder, args.nodes, args.log_level)
            result = trio.run(run_bench, endpoints, args, pids)
        finally:
            if cluster is not None:
                gone = [n.node_id for n in cluster.nodes if not n.running()]
                if gone:
                    print(f"warning: nodes {gone} exited during the run", file=sys.stderr)
                cluster.stop_all()
    print(json.dumps(result, sort_keys=True) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
