"""What the one-shot bench scripts read of their own processes (``scripts/bench_scale.py``,
``bench_state_upgrade.py``, ``bench_state_restart.py``, ``bench_snapshot_pause.py``): the
resident set from Linux ``/proc/self/status``, and ``run_child``, which runs a script again in
a fresh interpreter (so its peak resident set is its own: ``ru_maxrss`` of a forked child
starts at its parent's) and reads its figures, the last line ``report.print_json`` printed.

Only the standard library is imported here: a child measures its resident set before it
loads anything of its own.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["peak_rss_bytes", "rss_bytes", "run_child"]


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set now (VmRSS), or its peak (VmHWM), in bytes (0 where
    ``/proc`` does not say)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM: this program's own, unlike ``ru_maxrss``,
    which a child started by ``subprocess`` inherits from the parent at fork)."""
    return rss_bytes("VmHWM")


def run_child(script: str, args: Sequence[str], timeout: float, what: str) -> dict[str, Any]:
    """The figures of ``script`` run again with ``args`` in a fresh interpreter: the JSON
    object on the last line of its stdout. A child that fails ends this program
    (``SystemExit``, saying ``what`` failed, with the end of the child's stderr)."""
    proc = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
