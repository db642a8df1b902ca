"""Cluster figures of issue 17: a 3-node cluster of real processes holding a generated state.

``scripts/bench_scale --cluster`` (``run_cluster`` here) seeds a cluster with a snapshot of N
workloads + N instances and measures what the issue asks of it, through the node's own code:

1. **Seed**: the snapshot (the bytes a node stores and sends) is wrapped in a backup file
   (``univrs.storage.backup``) and every member's data dir is built from it by
   ``univrs snapshot restore`` (one process per member, the operator's offline restore,
   which checks that the data restores), then the three nodes start on those data dirs: each
   restores the stored snapshot at start, as after any restart (``cold_start_s``: start of
   the processes to all three ready).
2. **Load** (``--load-seconds``): 64 closed-loop clients scale workloads of the state (keyed
   writes) through the fast protocol while one client pages ``workload.list`` with
   ``limit=100`` from random ``after`` ids (linearizable): page latency p50 / p99 (wall,
   client side), acknowledged writes per second and the leader's apply rate (applied index
   per second).
3. **Snapshot pause**: the same write load; ``POST /v1/cluster/snapshot`` on the leader in the
   middle. The longest gap between two write acknowledgements (all clients merged) while the
   snapshot is taken, against the same figure over an equal window just before, and the
   heartbeat interval: a gap above a heartbeat means the leader's loop stalled.
4. **Restart**: a follower is stopped (SIGTERM) and started again; time from the start of the
   new process to its first successful linearizable read served by that node (REST, polled
   every 20 ms).
5. **Join**: a fourth node starts with ``--join``: it gets the state as a snapshot (the
   restored members' logs begin at the snapshot) plus the log after it. Time from the start
   of its process to being a voter that applied the leader's index; every member's term is
   polled throughout (``elections_during_join``: how far the highest term moved; 0 expected).
6. **Digests**: with writes stopped, every member's ``/v1/node/digest`` at the same applied
   index; the joined member's must equal the leader's.
7. **Peak RSS** of every node process (``VmHWM`` from /proc; the restarted node's is that of
   its new process).

Configuration of the nodes: fsync on (the default), loopback, ports the kernel says are free;
the reconciler and node liveness off (the generated machines never heartbeat, and placing
replicas would be a write storm of its own), automatic snapshots off (the snapshot of step 3
is taken on request). Every wait has a deadline drawn from ``budget`` seconds for the whole
run; the processes are stopped by PID whatever happens.

Where it lives: ``run_cluster`` here runs the steps in turn; each step is a function of
``univrs.bench.scale_steps`` (with ``NODE_CONFIG``), the write load and page reader are
``univrs.bench.scale_load``, and what is read off the node processes (REST, logs, /proc) and
the run's time budget are ``univrs.bench.scale_probes``. Below ``run_cluster``, the cluster
part of ``scripts/bench_scale`` (whose own figures are in-process ones): ``measure_cluster``
(``--cluster-only``), ``cluster_figures`` (``run_cluster`` with the command line's options),
the seed files of ``--seed`` (``write_seed``, ``read_seed``) and ``cluster_table``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from univrs.bench.scale_load import WRITERS
from univrs.bench.scale_probes import Budget, highest_term, wait_leader
from univrs.bench.scale_state import build
from univrs.bench.scale_steps import (
    NODE_CONFIG,
    measure_digests,
    measure_join,
    measure_load,
    measure_peak_rss,
    measure_restart,
    measure_snapshot_pause,
    measure_snapshot_rounds,
    restore_members,
    write_backup,
)
from univrs.runtime.snapshots import capture
from univrs.tools.devcluster import LocalCluster

__all__ = [
    "cluster_figures",
    "cluster_table",
    "measure_cluster",
    "read_seed",
    "run_cluster",
    "write_seed",
]


def run_cluster(
    data: bytes,
    *,
    index: int,
    term: int,
    n: int,
    folder: pathlib.Path,
    budget: float,
    load_seconds: float = 10.0,
    backend: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
    snapshot_rounds: int = 0,
    page_reader: str = "loop",
    load_only: bool = False,
) -> dict[str, Any]:
    """Every cluster figure (see the module docstring) for the snapshot ``data`` of a state of
    ``n`` workloads + ``n`` instances at ``index``/``term``. Returns what was measured; on a
    failure or a spent budget the figures so far and ``error``."""
    clock = Budget(budget)
    out: dict[str, Any] = {"cluster_objects_workloads": n, "cluster_objects_instances": n}
    extra = NODE_CONFIG + (f'[state]\nbackend = "{backend}"\n' if backend else "")
    cluster = LocalCluster.with_free_ports(folder, size=3, spares=1, extra_config=extra)
    cluster.bootstrap = False  # the restored data dirs hold the membership
    cluster.write_configs()
    members, joiner = cluster.nodes[:3], cluster.nodes[3]
    try:
        backup = folder / "seed.snap"
        write_backup(data, index=index, term=term, path=backup)
        progress("restoring the members' data dirs")
        took = restore_members(cluster, backup, clock, backend or "lmdb")
        backup.unlink()
        out["offline_restore_s"] = round(max(took), 3)
        progress("starting the 3 members")
        t0 = time.perf_counter()
        for node in members:
            cluster.start(node)
        cluster.wait_ready(members, clock.timeout(3600, "the members to be ready"))
        out["cold_start_s"] = round(time.perf_counter() - t0, 3)
        leader = wait_leader(cluster, members, clock)
        endpoints = [m.raft_addr for m in members]
        first_term = highest_term(members)
        if snapshot_rounds > 0:  # the snapshot pause only, ``snapshot_rounds`` times
            out.update(
                measure_snapshot_rounds(cluster, members, endpoints, n, clock, snapshot_rounds)
            )
            return out

        progress(f"{WRITERS} writers and a page reader for {load_seconds:g} s")
        out.update(measure_load(leader, endpoints, n, load_seconds, page_reader))
        if load_only:
            return out

        progress("a snapshot under the write load")
        out.update(measure_snapshot_pause(leader, members, endpoints, n, clock))
        leader = wait_leader(cluster, members, clock)

        progress("restarting a follower")
        follower = next(m for m in members if m is not leader)
        out.update(measure_restart(cluster, follower, n, clock))

        progress("a fourth member joins")
        out.update(measure_join(cluster, leader, members, joiner, clock))

        out["elections_before_digests"] = highest_term([*members, joiner]) - first_term
        progress("digests")
        out.update(measure_digests([*members, joiner], leader, clock))
        out.update(measure_peak_rss([*members, joiner]))
    except (TimeoutError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        cluster.stop_all()
    out["budget_left_s"] = round(clock.left(), 1)
    return out


# ------------------------------------------------------------------ scripts/bench_scale


def measure_cluster(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The cluster figures only (``--cluster-only``): build (or read the ``--seed``), encode,
    free the state, then ``run_cluster`` on the snapshot."""
    seed: pathlib.Path | None = args.seed
    row: dict[str, Any] = {"objects_workloads": n, "objects_instances": n}
    if seed is not None and seed.exists():
        data, index, term = read_seed(seed, n)
        row["seed"] = str(seed)
    else:
        start = time.perf_counter()
        sm = build(n)
        build_s = time.perf_counter() - start
        index, term = sm.last_applied_index, sm.last_applied_term
        data = capture(sm)()
        del sm
        row["build_s"] = round(build_s, 3)
        if seed is not None:
            write_seed(seed, n, data, index, term)
    row["snapshot_bytes"] = len(data)
    row.update(cluster_figures(data, index, term, n, args))
    row["loadavg_1m"] = os.getloadavg()[0]
    return row


def write_seed(path: pathlib.Path, n: int, data: bytes, index: int, term: int) -> None:
    """A built state's snapshot, kept for later runs (``--seed``): a JSON line, then the
    snapshot bytes. Written beside and renamed: an interrupted write leaves no seed."""
    part = path.with_name(path.name + ".part")
    with part.open("wb") as out:
        out.write(json.dumps({"objects": n, "index": index, "term": term}).encode() + b"\n")
        out.write(data)
    part.replace(path)


def read_seed(path: pathlib.Path, n: int) -> tuple[bytes, int, int]:
    """(snapshot, index, term) of a seed written by ``write_seed`` for ``n`` objects."""
    with path.open("rb") as src:
        head = json.loads(src.readline())
        if head["objects"] != n:
            raise SystemExit(f"{path} holds {head['objects']:,} objects, not {n:,}")
        return src.read(), head["index"], head["term"]


def cluster_figures(
    data: bytes, index: int, term: int, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    """``run_cluster`` with the options of ``scripts/bench_scale``'s command line (``args``),
    telling its progress on stderr, in a temporary folder (or under ``--keep``)."""

    def progress(what: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {n:,}: {what}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_scale_cluster.") as tmp:
        folder = pathlib.Path(tmp) if args.keep is None else args.keep / f"n{n}"
        return run_cluster(
            data,
            index=index,
            term=term,
            n=n,
            folder=folder,
            budget=args.budget,
            load_seconds=args.load_seconds,
            backend=args.backend,  # written explicitly: the nodes' default is lmdb
            progress=progress,
            snapshot_rounds=args.snapshot_rounds,
            page_reader=args.page_reader,
            load_only=args.load_only,
        )


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _s(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _gib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


def cluster_table(rows: list[dict[str, Any]]) -> str:
    """The cluster figures (``--cluster``) as a Markdown table: wall times of a 3-node cluster
    of real processes (fsync on, loopback) and what the issue asks of each."""
    head = (
        "| workloads + instances | offline restore (per member) | cold start (3 members ready) "
        "| restart to linearizable read (< 5 s) | join (< 30 s) | elections during join (0) "
        "| elections during snapshot (0) "
        "| snapshot pause: longest ack gap (baseline; heartbeat 150 ms) | peak RSS per node, max "
        "(< 1.5 GB) | page p50 / p99 under 64 writers (p99 < 50 ms) | writes/s | apply rate "
        "| joining node's longest unresponsive stretch "
        "| join: stream / check / members' links to it lost | digests equal | load |"
    )
    lines = [head, "|" + " --- |" * 16]
    for r in rows:
        if "cold_start_s" not in r and "error" not in r:
            continue
        lines.append(
            f"| {r['objects_workloads']:,} + {r['objects_instances']:,} "
            f"| {_s(r.get('offline_restore_s'))} "
            f"| {_s(r.get('cold_start_s'))} "
            f"| {_s(r.get('restart_to_read_s'))} "
            f"| {_s(r.get('join_s'))} "
            f"| {r.get('elections_during_join', '-')} "
            f"| {r.get('elections_during_snapshot', '-')} "
            f"| {_ms(r.get('snapshot_ack_gap_s'))} ({_ms(r.get('baseline_ack_gap_s'))}) "
            f"| {_gib(r.get('peak_rss_bytes_max'))} "
            f"| {_ms(r.get('page_p50_s'))} / {_ms(r.get('page_p99_s'))} "
            f"| {r.get('writes_per_s', '-')} "
            f"| {r.get('apply_rate_per_s', '-')}/s "
            f"| {_ms(r.get('join_loop_stall_s'))} "
            f"| {_s(r.get('join_stream_s'))} / {_s(r.get('join_check_s'))} "
            f"/ {r.get('join_links_lost', '-')} "
            f"| {r.get('digests_equal', '-')} "
            f"| {r['loadavg_1m']:.1f} |"
        )
        if "error" in r:
            lines.append(f"(stopped early: {r['error']})")
    return "\n".join(lines)
