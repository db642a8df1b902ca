"""scripts/bench_follower_apply.py (docs/performance.md, "Round 14 (s14-cpu)"), tiny: every
measured scale applied (a bench whose writes were refused or deduplicated would time
nothing), and the state it reaches through the follower's path (batch entry bytes decoded,
``apply_batch`` on LMDB, the watch history) is the state the same commands reach applied as
objects in memory."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from univrs.bench.sm_setup import keyed_scales, open_sessions
from univrs.sm import (
    ClusterStateMachine,
    CreateWorkload,
    Envelope,
    WorkloadSpec,
    state_digest,
)


def test_the_follower_apply_benchmark_applies_every_write_to_the_expected_state() -> None:
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_follower_apply.py"
    args = ["--repeats", "2", "--commands", "200", "--workloads", "8", "--sessions", "4"]
    args += ["--per-entry", "7"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["applied"] == [200]
    # The same entries' commands, applied in memory as they are: the same digest.
    sm = ClusterStateMachine()
    clients, index = open_sessions(sm, 4, index=0, time_ms=1)
    spec = WorkloadSpec(name="bench", image="nginx:1.27", replicas=2, labels={"tier": "web"})
    index += 1
    sm.apply_batch(
        [Envelope(command=CreateWorkload(id=f"bench-{i}", spec=spec)) for i in range(8)],
        index=index,
        term=1,
        time_ms=1,
    )
    writes = keyed_scales(clients, 200, workloads=8)
    for first in range(0, 200, 7):
        index += 1
        sm.apply_batch(writes[first : first + 7], index=index, term=1, time_ms=2)
    assert summary["digests"] == [state_digest(sm)]
