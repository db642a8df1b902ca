"""Election and failover times of a real local cluster (processes on loopback, fsync on).

Prints the time from starting N fresh processes to an agreed leader, then kills the leader
with SIGKILL K times (restarting it each time) and reports the time until the survivors agree
on a new leader: median, p90 and max. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time
from functools import partial

from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for


def _following(node: NodeProc) -> bool:
    view = node.status()
    return view is not None and view["leader"] is not None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(size: int, kills: int, starts: int) -> dict[str, object]:
    start_times: list[float] = []
    failovers: list[float] = []
    with tempfile.TemporaryDirectory(prefix="univrs-bench-") as tmp:
        for attempt in range(starts):
            cluster = LocalCluster.with_free_ports(pathlib.Path(tmp) / f"c{attempt}", size=size)
            try:
                t0 = time.monotonic()
                cluster.start_all()
                cluster.wait_leader(60.0)
                start_times.append(time.monotonic() - t0)
                if attempt == starts - 1:
                    for _ in range(kills):
                        old = cluster.wait_leader(60.0)
                        t0 = time.monotonic()
                        cluster.kill(old)
                        rest = [n for n in cluster.nodes if n is not old]
                        wait_for(partial(cluster.leader, rest), 60.0, "new leader", 0.01)
                        failovers.append(time.monotonic() - t0)
                        cluster.start(old)
                        wait_for(partial(_following, old), 60.0, "the restarted node to follow")
            finally:
                cluster.stop_all()
    return {
        "nodes": size,
        "first_election_s": {
            "median": statistics.median(start_times),
            "max": max(start_times),
            "runs": len(start_times),
        },
        "failover_s": {
            "median": statistics.median(failovers) if failovers else None,
            "p90": percentile(failovers, 0.9) if failovers else None,
            "max": max(failovers) if failovers else None,
            "runs": len(failovers),
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--starts", type=int, default=3, help="fresh clusters for the first election")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.nodes, args.kills, args.starts)
    if args.json:
        print(json.dumps(result))
        return
    first, fail = result["first_election_s"], result["failover_s"]
    assert isinstance(first, dict) and isinstance(fail, dict)
    print(f"first election ({args.nodes} fresh processes, {first['runs']} runs): "
          f"median {first['median']:.2f}s, max {first['max']:.2f}s")  # fmt: skip
    if fail["runs"]:
        print(
            f"failover after kill -9 of the leader ({fail['runs']} kills): median "
            f"{fail['median']:.3f}s, p90 {fail['p90']:.3f}s, max {fail['max']:.3f}s"
        )


if __name__ == "__main__":
    main()
