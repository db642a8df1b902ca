"""Snapshot and join figures for a cluster holding many workloads (real processes, loopback).

1. A single node is loaded with N workloads (default 100,000) through the fast client protocol.
2. ``cluster snapshot``: time to take it and its size (from the node's log line).
3. A second, empty node joins (``univrs node start --join``): the leader's log is compacted,
   so the state arrives as an InstallSnapshot stream. Reported: install time on the new node
   and its total join time (start of the process to voter), and whether the leader's term
   moved during the install (an election would mean heartbeats stalled).

Prints medians when ``--repeat`` > 1 (each repeat is a fresh cluster); ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

LOAD_CONCURRENCY = 256


async def load(api: str, count: int) -> float:
    """Create ``count`` workloads as fast as the fast protocol allows; returns seconds."""
    from univrs.client import open_client

    started = time.monotonic()
    async with open_client(api=api) as client:
        next_id = 0

        async def worker() -> None:
            nonlocal next_id
            while next_id < count:
                i = next_id
                next_id += 1
                spec = {"name": f"w{i}", "image": "registry.local/app:1.0", "replicas": 3}
                await client.call("workload.create", {"id": f"w{i:06d}", "spec": spec})

        async with trio.open_nursery() as nursery:
            for _ in range(LOAD_CONCURRENCY):
                nursery.start_soon(worker)
    return time.monotonic() - started


def _log_field(text: str, event: str, field: str) -> float | None:
    for line in reversed(text.splitlines()):
        if f'"{event}"' in line:
            m = re.search(rf"\b{field}=([0-9.]+)", line)
            if m:
                return float(m.group(1))
    return None


def one_run(folder: pathlib.Path, count: int) -> dict[str, Any]:
    extra = "snapshot_threshold = 1000000000\nsnapshot_trailing_entries = 0\n"
    cluster = LocalCluster.with_free_ports(folder, size=2, extra_config=extra)
    cluster.bootstrap = False
    cluster.write_configs()
    leader, joiner = cluster.nodes
    try:
        cluster.start(leader)
        wait_for(lambda: (v := leader.status()) and v["role"] == "leader", 60, "the first node")
        load_s = trio.run(load, leader.api_addr, count)
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "univrs", "cluster", "snapshot", "--api", leader.api_addr],
            capture_output=True,
            text=True,
            timeout=600,
        )
        take_wall = time.monotonic() - t0
        assert out.returncode == 0, out.stderr
        leader_log = leader.log_path.read_text()
        size = _log_field(leader_log, "snapshot taken", "bytes")
        take_s = _log_field(leader_log, "snapshot taken", "seconds")
        term_before = (leader.status() or {}).get("term")
        t0 = time.monotonic()
        _start_joining(joiner, leader)
        target = (leader.status() or {}).get("applied_index", 0)
        wait_for(
            lambda: (v := leader.status()) and "n2" in v["voters"],
            900,
            "the new node to be a voter",
        )
        wait_for(
            lambda: (v := joiner.status()) and v["applied_index"] >= target,
            900,
            "the new node to hold the state",
        )
        join_s = time.monotonic() - t0
        term_after = (leader.status() or {}).get("term")
        install_s = _log_field(joiner.log_path.read_text(), "snapshot installed", "seconds")
        return {
            "workloads": count,
            "load_s": load_s,
            "snapshot_take_s": take_s,
            "snapshot_take_wall_s": take_wall,
            "snapshot_bytes": size,
            "install_s": install_s,
            "join_total_s": join_s,
            "elections_during_join": 0 if term_before == term_after else 1,
        }
    finally:
        cluster.stop_all()


def _start_joining(joiner: NodeProc, leader: NodeProc) -> None:
    with open(joiner.log_path, "ab") as logf:
        joiner.proc = subprocess.Popen(
            [sys.executable, "-m", "univrs", "node", "start", "--config", str(joiner.config_path),
             "--join", leader.api_addr],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    joiner.pid_path.write_text(str(joiner.proc.pid))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workloads", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the nodes' folders and logs")
    args = p.parse_args(argv)
    runs = []
    tmp = tempfile.mkdtemp(prefix="univrs-bench-snap-")
    try:
        for i in range(args.repeat):
            runs.append(one_run(pathlib.Path(tmp) / f"r{i}", args.workloads))
    finally:
        if args.keep:
            print(f"nodes' folders and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    keys = [k for k in runs[0] if k not in ("workloads",)]
    result: dict[str, Any] = {"workloads": args.workloads, "runs": len(runs)}
    for k in keys:
        values = [r[k] for r in runs if r[k] is not None]
        result[k] = statistics.median(values) if values else None
    if args.json:
        print(json.dumps(result))
        return
    mb = (result["snapshot_bytes"] or 0) / 1e6
    print(f"{args.workloads} workloads, median of {len(runs)} run(s):")
    print(f"  load through the fast protocol   {result['load_s']:.1f} s")
    print(f"  take snapshot                    {result['snapshot_take_s']} s ({mb:.1f} MB)")
    print(f"  install on the joining node      {result['install_s']} s")
    print(f"  join, start to caught-up voter   {result['join_total_s']:.1f} s")
    print(f"  elections during the join        {result['elections_during_join']}")


if __name__ == "__main__":
    main()
