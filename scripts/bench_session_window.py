"""CPU per keyed write by the sessions' window, on the LMDB backend (docs/performance.md,
"Round 14b (s14-journal)").

64 sessions write keyed ``ScaleWorkload`` commands in batch entries of 42 (one ``sm.batch()``,
one LMDB write transaction, per entry), first ``window`` writes per session untimed (the
windows filled), then ``--commands`` timed; for each window, the median CPU microseconds per
command (``time.process_time``) of ``--repeats`` runs and the state digest's start (equal for
every build of the same commands). Runs whichever ``univrs`` is importable, so an A/B against
another checkout is ``PYTHONPATH=<checkout> python -B scripts/bench_session_window.py``.

    .venv/bin/python scripts/bench_session_window.py [--windows 8 64 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time

from univrs.bench.sm_setup import keyed_scales, open_sessions
from univrs.sm import (
    ClusterStateMachine,
    CreateWorkload,
    WorkloadSpec,
    state_digest,
)
from univrs.sm.sessions import SessionPolicy
from univrs.storage.sm_journal import _objects_on
from univrs.storage.sm_tables import StateEnv


def run(window: int, commands: int, sessions: int = 64, per_entry: int = 42) -> tuple[float, str]:
    """(CPU µs per timed command, the digest) of one run at ``window``."""
    folder = tempfile.mkdtemp()
    env = StateEnv(folder + "/state.lmdb")
    sm = ClusterStateMachine(policy=SessionPolicy(window=window), objects=_objects_on(env.store))
    index = 0
    for k in range(64):
        index += 1
        spec = WorkloadSpec(name="w", image="i:1")
        sm.apply(CreateWorkload(id=f"w{k}", spec=spec), index=index, term=1)
    ids, index = open_sessions(sm, sessions, index=index)
    count = commands + window * sessions
    cmds = keyed_scales(ids, count, workloads=64, prefix="w", replicas=lambda k: k % 5 + 1)
    warm, timed = cmds[: window * sessions], cmds[window * sessions :]
    started = 0.0
    for part in (warm, timed):
        started = time.process_time()
        for s in range(0, len(part), per_entry):
            index += 1
            with sm.batch():
                sm.apply_batch(part[s : s + per_entry], index=index, term=1, time_ms=index)
    us = (time.process_time() - started) / len(timed) * 1e6
    digest = state_digest(sm)
    env.close()
    shutil.rmtree(folder)
    return us, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--commands", type=int, default=8_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = {}
    for window in args.windows:
        runs = [run(window, args.commands) for _ in range(args.repeats)]
        out[window] = {
            "median_us_per_command": round(statistics.median(r[0] for r in runs), 1),
            "digest": runs[0][1][:23],
            "digests_equal": len({r[1] for r in runs}) == 1,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
