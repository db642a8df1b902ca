"""In-process CPU of the interpreted vs the mypyc-compiled build (scripts/compile), interleaved
(docs/performance.md, "Round 20 (s20-mypyc)").

Each run is a fresh child process of this venv, with ``UNIVRS_COMPILED`` unset or set to the
build; the pairs alternate which one goes first. Workloads, each timed with
``time.process_time`` inside the child (imports and start-up excluded):

- ``sim``: ``--seeds`` simulator seeds from seed 1, 5 nodes (the real core, simulated world);
  every child also reports a digest of the seeds' statistics, which must be equal in both
  builds (the same seeds take the same course: compiled code changes no decision).
- ``core``: the Raft core alone (tests/raft/harness.py's in-memory cluster): 300 batches of
  64 proposals replicated and committed on 3 nodes; the nodes' status and the harness's
  transcript are digested.
- ``apply``: ``scripts/bench_apply_phases.py`` (a follower's apply of keyed scale writes: the
  state machine, µs per command), its ``total``.

Prints each workload's medians and the ratio compiled/interpreted, and one JSON line.

    .venv/bin/python scripts/bench_compiled.py [--pairs 5] [--seeds 8] [--workload core,sim,apply]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_sim(seeds: int) -> None:
    from univrs.compiled import active
    from univrs.sim.runner import SeedResult, run_seeds

    lines: list[str] = []

    def record(result: SeedResult) -> None:
        lines.append(repr(result.stats) + repr(result.invariant))

    t0 = time.process_time()
    summary = run_seeds(1, seeds, nodes=5, on_result=record)
    cpu = time.process_time() - t0
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    assert summary.failure is None, summary.failure
    print(json.dumps({"value": cpu, "unit": "s CPU", "digest": digest, "compiled": active()}))


def child_core(rounds: int) -> None:
    """The core alone: tests/raft/harness.py's in-memory 3-node cluster (network and disks are
    lists), ``rounds`` batches of 64 proposals each replicated, committed and applied."""
    sys.path.insert(0, str(ROOT / "tests" / "raft"))
    from harness import Cluster

    from univrs.compiled import active

    cluster = Cluster.bootstrap(["n1", "n2", "n3"])
    cluster.elect("n1")
    t0 = time.process_time()
    for i in range(rounds):
        cluster.propose_many("n1", [b"w%d" % (64 * i + j) for j in range(64)])
        cluster.stabilize()
        if i % 8 == 7:
            cluster.tick_all(3, deliver=True)
    cpu = time.process_time() - t0
    state = repr([cluster.status(n) for n in sorted(cluster.nodes)]) + repr(cluster.transcript)
    digest = hashlib.sha256(state.encode()).hexdigest()[:16]
    print(json.dumps({"value": cpu, "unit": "s CPU", "digest": digest, "compiled": active()}))


def run_child(workload: str, compiled: Path | None, seeds: int) -> dict[str, object]:
    env = dict(os.environ)
    env.pop("UNIVRS_COMPILED", None)
    env["PYTHONHASHSEED"] = "0"  # the digests include sets' reprs (member order)
    if compiled is not None:
        env["UNIVRS_COMPILED"] = str(compiled)
    if workload == "sim":
        cmd = [sys.executable, __file__, "--child-sim", str(seeds)]
    elif workload == "core":
        cmd = [sys.executable, __file__, "--child-core", str(300)]
    else:
        cmd = [sys.executable, str(ROOT / "scripts" / "bench_apply_phases.py"), "--repeats", "3"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    if workload == "apply":
        return {
            "value": doc["median_us"]["total"],
            "unit": "µs/command",
            "digest": doc["digests"][0],
        }
    result: dict[str, object] = doc
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--workload", default="core,sim,apply")
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "mypyc")
    parser.add_argument("--child-sim", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-core", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_sim is not None:
        child_sim(args.child_sim)
        return
    if args.child_core is not None:
        child_core(args.child_core)
        return
    summary: dict[str, object] = {"pairs": args.pairs, "seeds": args.seeds}
    for workload in args.workload.split(","):
        values: dict[str, list[float]] = {"interpreted": [], "compiled": []}
        digests: set[object] = set()
        unit = ""
        for i in range(args.pairs):
            order = [None, args.build] if i % 2 == 0 else [args.build, None]
            for build in order:
                r = run_child(workload, build, args.seeds)
                values["compiled" if build else "interpreted"].append(float(str(r["value"])))
                digests.add(r.get("digest"))
                unit = str(r["unit"])
        med = {k: statistics.median(v) for k, v in values.items()}
        ratio = med["compiled"] / med["interpreted"]
        print(
            f"{workload}: interpreted {med['interpreted']:.3f} {unit}, compiled "
            f"{med['compiled']:.3f} {unit} (x{ratio:.3f}; runs {values}); "
            f"{'same' if len(digests) == 1 else 'DIFFERENT'} digests"
        )
        summary[workload] = {**med, "ratio": ratio, "runs": values, "same": len(digests) == 1}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
