"""One bench measurement: closed loops of an operation over a window, and the medians of runs.

``closed_loops`` is the load itself (N clients, each waiting for its answer before the next
request), run in the bench's process and in each worker process
(univrs/bench/workers.py). ``measure`` runs one window: its local loops (all of them, or with
worker processes only the linearizability sample's writers), the workers' loops, the sample's
paced readers, the CPU time of every process at the window's start and end, the nodes'
metrics at the same moments (univrs/bench/nodes.py) and optionally ``py-spy`` on one process;
the latencies of every process are merged (univrs/bench/latency.py) before percentiles are
taken. ``median_of`` reduces the repeated runs of one point.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from univrs.bench.cpu import cpu_seconds
from univrs.bench.latency import Histogram
from univrs.bench.nodes import Servers, window_figures
from univrs.bench.report import py_spy_command
from univrs.bench.sample import SAMPLE_READ_PAUSE, Sample, recorded_read, recorded_write
from univrs.client.client import Client
from univrs.errors import UnivrsError


class Workers(Protocol):
    """What ``measure`` needs of the worker processes (univrs/bench/workers.py's pool)."""

    @property
    def pids(self) -> dict[str, int]: ...

    @property
    def runs_sample(self) -> bool:
        """Whether the workers run the linearizability sample themselves (the Go worker)."""
        ...

    async def run(
        self,
        phase: str,
        indices: list[int],
        start: float,
        duration: float,
        sample: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]: ...


__all__ = ["STALL_GRACE", "WARMUP", "closed_loops", "measure", "median_of", "percentile"]

WARMUP = 1.0
STALL_GRACE = 30.0  # seconds past its end after which a measurement is abandoned

Op = Callable[[Client, int], Awaitable[Any]]


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list (nearest rank), NaN when empty."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def closed_loops(
    indices: Sequence[int],
    client_for: Callable[[int], Client],
    op: Op,
    start: float,
    stop: float,
    hist: Histogram,
    errors: list[str],
    sample: Sample | None = None,
) -> bool:
    """Run one closed loop of ``op`` per client index until ``stop`` (trio time); latencies
    of operations begun at or after ``start`` go to ``hist``, failures to ``errors``. With
    ``sample``, the loops of its keys (indices below ``len(sample.keys)``) write recorded
    unique values until the key's reader is done (``Sample.writing``). False when the loops
    had to be abandoned ``STALL_GRACE`` seconds after ``stop``."""
    sampled = len(sample.keys) if sample is not None else 0

    async def loop(i: int) -> None:
        client = client_for(i)
        in_sample = sample is not None and i < sampled
        process = sample.process() if sample is not None and in_sample else 0
        record = hist.record
        now_of = trio.lowlevel.current_clock().current_time  # trio.current_time's, cheaper
        perf_counter = time.perf_counter
        while True:
            now = now_of()
            if now >= stop:
                return
            t0 = perf_counter()
            try:
                if in_sample and sample is not None and sample.writing(sample.keys[i]):
                    process = await recorded_write(sample, process, client, sample.keys[i])
                else:
                    await op(client, i)
            except UnivrsError as exc:
                errors.append(f"{exc.code}: {exc.message}")
                continue
            if now >= start:
                record(perf_counter() - t0)

    with trio.move_on_at(stop + STALL_GRACE) as scope:
        async with trio.open_nursery() as nursery:
            for i in indices:
                nursery.start_soon(loop, i)
    return not scope.cancelled_caught


async def measure(
    clients: list[Client],
    workers: int,
    duration: float,
    op: Op,
    pids: dict[str, int] | None = None,
    sample: Sample | None = None,
    profile: tuple[int, pathlib.Path] | None = None,
    *,
    phase: str = "writes",
    pool: Workers | None = None,
    servers: Servers | None = None,
) -> dict[str, Any]:
    """Run ``workers`` closed loops of ``op`` for ``duration`` s (after a warm-up); with
    ``pids``, also the CPU milliseconds each process spent per operation. With ``sample``,
    the loops of its keys (the first ones) write recorded unique values instead, and one
    paced reader per key reads it, recorded (neither counted in the figures). With ``profile``
    (pid, file), ``py-spy record`` samples that process during the measured window. With
    ``pool`` (worker processes), the loops run there, ``phase`` naming the operation, except
    the sample's writers, which stay here; with ``servers``, the nodes' figures of the window
    (leader, reads per confirmation) are added."""
    if sample is not None:
        # The history starts with one completed write per key: whatever an earlier measurement
        # left in the register, every later operation of this sample follows this write.
        for j, key in enumerate(sample.keys):
            await recorded_write(sample, sample.process(), clients[j % len(clients)], key)
    sampled = len(sample.keys) if sample is not None else 0
    # The Go worker runs the sample itself, in the load's own frames (sample.py).
    in_worker = sample is not None and pool is not None and pool.runs_sample
    if in_worker:
        local: range = range(0)
    else:
        local = range(min(sampled, workers)) if pool is not None else range(workers)
    remote = [i for i in range(workers) if i not in local] if pool is not None else []
    hist = Histogram()
    errors: list[str] = []
    start = trio.current_time() + WARMUP
    start_mono = time.monotonic() + WARMUP  # the same moment for the worker processes
    stop = start + duration

    async def reader(key: str, client: Client) -> None:
        assert sample is not None
        process = sample.process()
        try:
            while trio.current_time() < stop and not sample.full(key):
                process = await recorded_read(sample, process, client, key)
                await trio.sleep(SAMPLE_READ_PAUSE)  # pacing, not synchronisation
        finally:
            sample.reader_done(key)

    processes = {**(pids or {}), "client": os.getpid(), **(pool.pids if pool else {})}
    cpu: dict[str, list[float | None]] = {}
    metrics: list[dict[str, dict[str, float]]] = []

    async def at(moment: float) -> None:
        await trio.sleep_until(moment)
        for name, pid in processes.items():
            cpu.setdefault(name, []).append(cpu_seconds(pid))
        if servers is not None:
            metrics.append(await servers.snapshot())

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

    completed = True
    remote_results: list[dict[str, Any]] = []

    async def run_remote() -> None:
        assert pool is not None
        spec = None
        if in_worker and sample is not None:
            spec = sample.worker_spec(list(range(min(sampled, workers))))
        remote_results.extend(await pool.run(phase, remote, start_mono, duration, spec))

    async def run_local() -> None:
        nonlocal completed
        completed = await closed_loops(
            local, lambda i: clients[i % len(clients)], op, start, stop, hist, errors, sample
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, start)
        nursery.start_soon(at, stop)
        if profile is not None:
            nursery.start_soon(record_profile)
        if remote:
            nursery.start_soon(run_remote)
        nursery.start_soon(run_local)
        if sample is not None and not in_worker:
            for j, key in enumerate(sample.keys):
                nursery.start_soon(reader, key, clients[(j + 1) % len(clients)])
    stalled = not completed
    error_count = len(errors)
    # CLOCK_MONOTONIC seconds (the workers' event times) -> this process's Trio clock.
    offset = trio.current_time() - time.monotonic()
    histories = 0
    for part in remote_results:
        if in_worker and sample is not None and "sample" in part:
            sample.take_worker_history(part["sample"], offset)
            histories += 1
        hist.merge(Histogram.from_json(part["hist"]))
        errors.extend(part["errors"])
        error_count += int(part["error_count"])
        stalled = stalled or part["stalled"]
    if in_worker and histories != 1:
        # Never a check of less than the sample: a run whose worker ran none fails.
        raise RuntimeError(f"the workers answered {histories} sample histories, not 1")
    counted = max(1, hist.count)
    cpu_ms: dict[str, float] = {}
    for name, (before, after) in cpu.items():
        if before is not None and after is not None:
            cpu_ms[name] = (after - before) * 1000 / counted
    out: dict[str, Any] = {
        "cpu_ms_per_op": cpu_ms,
        "ops_per_s": hist.count / duration,
        "p50_ms": hist.quantile_ms(0.50),
        "p99_ms": hist.quantile_ms(0.99),
        "max_ms": hist.max_ms(),
        "ops": hist.count,
        "errors": error_count + (1 if stalled else 0),
        "first_error": "stalled: abandoned" if stalled else (errors[0] if errors else None),
        "client_procs": len(pool.pids) if pool is not None else 1,
    }
    if len(metrics) == 2:
        out["servers"] = window_figures(metrics[0], metrics[1])
        if phase == "lease-reads":  # their confirmations are not in the metric: no ratio
            for key in ("reads_per_confirmation", "reads_per_confirmation_by_node"):
                out["servers"].pop(key, None)
        out["leader"] = out["servers"]["leader"]
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
    by_role = _by_role(runs)
    if by_role:
        out["cpu_ms_per_op_by_role"] = by_role
    out["leaders"] = sorted({r["leader"] for r in runs if r.get("leader")})
    changes = [r["servers"]["leader_changes"] for r in runs if "servers" in r]
    if changes:
        out["leader_changes"] = sum(changes)
    ratios = [
        r["servers"]["reads_per_confirmation"]
        for r in runs
        if r.get("servers", {}).get("reads_per_confirmation") is not None
    ]
    if ratios:
        out["reads_per_confirmation"] = round(statistics.median(ratios), 1)
    out["errors"] = sum(r["errors"] for r in runs)
    out["runs"] = [
        {
            **{k: round(r[k], 2) for k in ("ops_per_s", "p50_ms", "p99_ms")},
            **{k: r[k] for k in ("leader", "leader_hint", "servers") if k in r},
            "cpu_ms_per_op": {name: round(v, 4) for name, v in r["cpu_ms_per_op"].items()},
        }
        for r in runs
    ]
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


def _by_role(runs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU per operation by role, medians over the runs that named their leader: the leader,
    a follower (the mean of the followers in a run) and the client processes summed. The
    per-node medians mix roles when leadership moved between runs; these do not."""
    leader: list[float] = []
    follower: list[float] = []
    clients: list[float] = []
    for r in runs:
        cpu = r["cpu_ms_per_op"]
        name = r.get("leader")
        if not name or name not in cpu:
            continue
        others = [v for n, v in cpu.items() if n != name and not n.startswith("client")]
        leader.append(cpu[name])
        if others:
            follower.append(sum(others) / len(others))
        clients.append(sum(v for n, v in cpu.items() if n.startswith("client")))
    if not leader:
        return {}
    out = {"leader": round(statistics.median(leader), 3)}
    if follower:
        out["follower"] = round(statistics.median(follower), 3)
    out["clients"] = round(statistics.median(clients), 3)
    return out
