"""CPU per command of each phase of a follower's apply of batch entries of keyed scales, in one
process (docs/performance.md, "Round 18 (s18-apply)").

``scripts/bench_follower_apply.py``'s set-up and entries (``--per-entry`` keyed ``ScaleWorkload``
writes per batch entry, built as the leader builds them), the phases timed apart with
``time.process_time`` around each: ``decode`` (``decode_entry``), ``apply_batch`` (the state
machine, with its LMDB puts), ``watch`` (``WatchHub.applied_many``: the history's stored form),
``commit`` (the batch's end: the journal's rows, meta and the LMDB commit). Prints the median
over ``--repeats`` runs of each phase's µs per command, the state digest and one JSON line.

    .venv/bin/python scripts/bench_apply_phases.py [--repeats 5] [--per-entry 55]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_follower_apply import prepare

from univrs.runtime.payload import decode_entry
from univrs.sm import state_digest
from univrs.sm.responses import ErrorCode, Failure

PHASES = ("decode", "apply_batch", "watch", "commit", "total")


def run(folder: Path, args: argparse.Namespace) -> tuple[dict[str, float], str]:
    clock = time.process_time
    env, sm, hub, index, entries = prepare(folder, args)
    spent = dict.fromkeys(PHASES, 0.0)
    for data in entries:
        index += 1
        t0 = clock()
        decoded = decode_entry(data)
        assert not isinstance(decoded, str)
        commands = [
            Failure(code=ErrorCode.INVALID_ARGUMENT, message=c) if isinstance(c, str) else c
            for c in decoded[0]
        ]
        t1 = clock()
        batch = sm.batch()
        batch.__enter__()
        captured: list[Any] = []
        sm.apply_batch(commands, index=index, term=1, time_ms=decoded[1], captured=captured)
        t2 = clock()
        hub.applied_many(captured, len(data) // len(commands))
        t3 = clock()
        batch.__exit__(None, None, None)
        t4 = clock()
        spent["decode"] += t1 - t0
        spent["apply_batch"] += t2 - t1
        spent["watch"] += t3 - t2
        spent["commit"] += t4 - t3
        spent["total"] += t4 - t0
    digest = state_digest(sm)
    env.close()
    return {k: v / args.commands * 1e6 for k, v in spent.items()}, digest


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--workloads", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--per-entry", type=int, default=55)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    runs: list[dict[str, float]] = []
    digests = set()
    with tempfile.TemporaryDirectory(prefix="univrs-apply-phases.") as tmp:
        for _ in range(args.repeats):
            us, digest = run(Path(tmp), args)
            runs.append(us)
            digests.add(digest)
    medians = {p: round(statistics.median(r[p] for r in runs), 2) for p in PHASES}
    print(
        "apply phases, µs CPU per command (median of "
        f"{args.repeats}): "
        + ", ".join(f"{p} {medians[p]}" for p in PHASES)
        + f"; digests equal: {len(digests) == 1}"
    )
    summary = {"config": vars(args), "median_us": medians, "digests": sorted(digests)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
