"""The follower's check of a leader's snapshot on the LMDB backend, in process (issue 17).

``--make N``: build N workloads + N instances (``univrs.bench.scale_state.build``), encode
the snapshot as a node does (``capture``) and write it, with its state digest, to
``--file``. Then (default) time ``restore(data, StateEnv.stage)``, what
``SnapshotChecker.precheck`` runs, ``--repeats`` times (medians, wall and CPU; each run's
user and system CPU and page faults on a line of its own), check the staged state's digest
against the built one (or, for a snapshot without a ``.digest`` file beside it, such as a
bench seed's bytes after its JSON line, against the first run's), and with ``--profile``
print the top of a cProfile of one run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import statistics
import tempfile
import time

from univrs.runtime.snapshots import capture, capture_digest, restore
from univrs.storage.sm_tables import StateEnv


def make(n: int, path: str) -> None:
    from univrs.bench.scale_state import build
    from univrs.sm import state_digest

    sm = build(n)
    digest = state_digest(sm)
    data = capture(sm)()
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".digest", "w") as f:
        f.write(digest)
    print(json.dumps({"n": n, "bytes": len(data), "digest": digest}))


def once(data: bytes, tmp: str, profile: bool = False) -> tuple[float, float, str]:
    env = StateEnv(os.path.join(tmp, "state.lmdb"))
    try:
        prof = cProfile.Profile() if profile else None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu = time.perf_counter(), time.process_time()
        if prof is not None:
            prof.enable()
        sm = restore(data, env.stage)
        if prof is not None:
            prof.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(
            json.dumps(
                {
                    "user_s": round(after.ru_utime - usage.ru_utime, 2),
                    "sys_s": round(after.ru_stime - usage.ru_stime, 2),
                    "minor_faults": after.ru_minflt - usage.ru_minflt,
                    "major_faults": after.ru_majflt - usage.ru_majflt,
                }
            )
        )
        if prof is not None:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        digest = capture_digest(sm)()
        return wall, cpu, digest
    finally:
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--file", required=True)
    p.add_argument("--make", type=int)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    if args.make:
        make(args.make, args.file)
        return
    with open(args.file, "rb") as f:
        data = f.read()
    want = None  # the first run's digest when the file has none beside it (a seed's snapshot)
    if os.path.exists(args.file + ".digest"):
        with open(args.file + ".digest") as f:
            want = f.read()
    walls, cpus = [], []
    for _ in range(args.repeats):
        wall, cpu, digest = once(data, tempfile.mkdtemp(prefix="bench_stage."), args.profile)
        want = digest if want is None else want
        assert digest == want, (digest, want)
        walls.append(wall)
        cpus.append(cpu)
    print(
        json.dumps(
            {
                "bytes": len(data),
                "wall_s": [round(w, 2) for w in walls],
                "cpu_s": [round(c, 2) for c in cpus],
                "wall_median_s": round(statistics.median(walls), 2),
                "cpu_median_s": round(statistics.median(cpus), 2),
                "load": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
