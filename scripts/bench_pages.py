"""CPU of one ``limit=100`` page on an LMDB state under a write load (issue 17,
docs/state-at-scale.md, "Eleventh increment").

Builds N workloads + N instances (``bench_scale.build``), copies them into a ``StateEnv``,
reopens it (nothing cached), then takes ``--pages`` pages of each kind through the API's read
handlers, a batch of 64 ``ScaleWorkload``s applied before each (as the node applies between
reads): ``workload.list`` and ``instance.list`` from random ``after`` ids, and a node's
``instance.list``. Prints the median and p99 CPU (``time.process_time``) per kind as JSON.
``--unpinned`` takes the pages without ``ClusterStateMachine.reading`` (one read transaction
per lookup, main's behaviour before the eleventh increment); ``--profile`` prints cProfile's
top entries.

    .venv/bin/python scripts/bench_pages.py --objects 100000 [--pages 300] [--unpinned]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import random
import statistics
import tempfile
import time
from typing import Any

from univrs.api.ops import HANDLERS
from univrs.bench.scale_state import build
from univrs.sm import ClusterStateMachine
from univrs.sm.commands import ScaleWorkload
from univrs.storage.sm_tables import StateEnv

WRITES = 64  # commands applied (in one batch) before each page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=300, help="pages of each kind")
    parser.add_argument("--unpinned", action="store_true", help="one transaction per lookup")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.unpinned:
        ClusterStateMachine.reading = lambda self: contextlib.nullcontext()  # type: ignore[method-assign]
    n = args.objects
    with tempfile.TemporaryDirectory(prefix="bench_pages") as folder:
        env = StateEnv(folder + "/state.lmdb")
        env.replace(build(n))
        env.close()
        env = StateEnv(folder + "/state.lmdb")
        sm = env.load()
        step = max(1, n // 5000)
        workloads = [w.id for w in sm.stored_workloads()][::step]
        instances = [i.id for i in sm.stored_instances()][::step]
        nodes = [x.id for x in sm.list_nodes()]
        rng = random.Random(1)
        index, term = sm.last_applied_index, sm.last_applied_term or 1
        kinds: dict[str, list[float]] = {"workloads": [], "instances": [], "node_instances": []}
        profile = cProfile.Profile() if args.profile else None
        for _ in range(args.pages):
            with sm.batch():
                for _ in range(WRITES):
                    index += 1
                    cmd = ScaleWorkload(id=rng.choice(workloads), replicas=rng.randrange(5))
                    sm.apply(cmd, index=index, term=term)
            pages: list[tuple[str, str, dict[str, Any]]] = [
                ("workloads", "workload.list", {"limit": 100, "after": rng.choice(workloads)}),
                ("instances", "instance.list", {"limit": 100, "after": rng.choice(instances)}),
                ("node_instances", "instance.list", {"limit": 100, "node_id": rng.choice(nodes)}),
            ]
            for kind, op, op_args in pages:
                read = HANDLERS[op].read
                assert read is not None
                cpu = time.process_time()
                if profile is not None:
                    profile.enable()
                page = read(op_args, sm)
                if profile is not None:
                    profile.disable()
                kinds[kind].append(time.process_time() - cpu)
                assert page["items"], (op, op_args)
        env.close()
    out: dict[str, Any] = {"objects": n, "pages": args.pages, "pinned": not args.unpinned}
    for kind, cpus in kinds.items():
        cpus.sort()
        out[f"{kind}_median_ms"] = round(statistics.median(cpus) * 1000, 3)
        out[f"{kind}_p99_ms"] = round(cpus[max(0, int(len(cpus) * 0.99) - 1)] * 1000, 3)
    print(json.dumps(out))
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
