"""scripts/bench_frames.py (docs/performance.md, "Round 23"), tiny: it runs, checks that both
paths read and write every frame kind as the same message before timing them, and reports
every kind with both paths' figures."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys


def test_the_frames_benchmark_reports_both_paths_for_every_kind() -> None:
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_frames.py"
    done = subprocess.run(
        [sys.executable, str(script), "--repeats", "1", "--frames", "50"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    kinds = summary["median_us"]
    assert set(kinds) == {
        "append, 1 client",
        "ack",
        "append, 64 clients",
        "client frame",
        "answer frame",
    }
    for figures in kinds.values():
        assert set(figures) == {"read", "read_fast", "write", "write_fast"}
        assert all(value >= 0 for value in figures.values())
