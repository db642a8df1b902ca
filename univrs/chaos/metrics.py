"""Numbers about a run, computed from its history and fault records (pure, for the report).

* per-operation counts by outcome;
* the longest unavailability: the longest interval without a successful write (write, cas or
  delete completing ok) while the workload ran;
* per fault: the time from its start, and from its end, to the first write invoked afterwards
  that succeeded (how long clients were affected, and how quickly service came back);
* time series for the plot: completions per second by outcome, and every operation's latency.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from univrs.chaos.history import EventType, Fn, Operation

WRITES = (Fn.WRITE, Fn.CAS, Fn.DELETE)


@attrs.frozen(kw_only=True)
class Gap:
    """An interval without successful writes."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def outcome_counts(ops: Iterable[Operation]) -> dict[str, dict[str, int]]:
    """``{f: {"ok": n, "fail": n, "info": n}}`` plus ``"all"``."""
    out: dict[str, dict[str, int]] = {}
    for op in ops:
        for f in (op.f.value, "all"):
            row = out.setdefault(f, {"ok": 0, "fail": 0, "info": 0})
            row[op.status.value] += 1
    return out


def _ok_write_times(ops: Iterable[Operation]) -> list[float]:
    return sorted(op.ret for op in ops if op.f in WRITES and op.status is EventType.OK)


def longest_unavailability(ops: Sequence[Operation], start: float, end: float) -> Gap:
    """The longest interval within [start, end] with no successful write completion."""
    times = [t for t in _ok_write_times(ops) if start <= t <= end]
    points = [start, *times, end]
    best = Gap(start=start, end=start)
    for a, b in itertools.pairwise(points):
        if b - a > best.length:
            best = Gap(start=a, end=b)
    return best


def first_ok_write_after(ops: Sequence[Operation], t: float) -> float | None:
    """Completion time of the first successful write invoked at or after ``t``."""
    done = [op.ret for op in ops if op.f in WRITES and op.status is EventType.OK and op.call >= t]
    return min(done) if done else None


def recovery(ops: Sequence[Operation], start: float, end: float) -> dict[str, float | None]:
    """For a fault window: seconds to the first ok write invoked after its start and end."""
    after_start = first_ok_write_after(ops, start)
    after_end = first_ok_write_after(ops, end)
    return {
        "to_first_ok_write_after_start": None if after_start is None else after_start - start,
        "to_first_ok_write_after_end": None if after_end is None else after_end - end,
    }


def throughput(ops: Sequence[Operation], end: float, bucket: float = 1.0) -> dict[str, list[int]]:
    """Completions per ``bucket`` seconds, by outcome (info counted at its invocation)."""
    n = max(1, math.ceil(end / bucket))
    series = {"ok": [0] * n, "fail": [0] * n, "info": [0] * n}
    for op in ops:
        t = op.call if math.isinf(op.ret) else op.ret
        i = min(n - 1, max(0, int(t / bucket)))
        series[op.status.value][i] += 1
    return series


def latencies(ops: Sequence[Operation]) -> list[dict[str, Any]]:
    """Every completed operation as ``{t, ms, f, type}`` (t is its invocation)."""
    return [
        {
            "t": op.call,
            "ms": (op.ret - op.call) * 1000,
            "f": op.f.value,
            "type": op.status.value,
        }
        for op in ops
        if not math.isinf(op.ret)
    ]


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    i = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[i]
