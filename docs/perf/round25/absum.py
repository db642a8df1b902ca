"""Medians and pair ratios of an interleaved A/B run of ``abx.sh`` (docs/perf/round25)."""

from __future__ import annotations

import re
import statistics
import sys


def main(path: str) -> None:
    rows: dict[str, list[tuple[float, float, float, float, float]]] = {"A": [], "B": []}
    with open(path) as fh:
        lines = fh.readlines()
    for line in lines:
        p = line.split()
        if len(p) < 5 or p[0] not in rows:
            continue
        try:
            writes, p50, p99 = float(p[1].rstrip("/s")), float(p[2]), float(p[3])
            cpu = float(p[4].rstrip(":"))
        except ValueError:
            continue
        m = re.search(r"n\d \(leader\) ([\d.]+)", line)
        rows[p[0]].append((writes, p50, p99, cpu, float(m.group(1)) if m else 0.0))
    for k, r in rows.items():
        if r:
            med = [statistics.median(x[i] for x in r) for i in range(5)]
            print(
                f"{k} {len(r)} writes/s med {med[0]:.0f} p50 {med[1]:.2f} p99 {med[2]:.2f} "
                f"cpu {med[3]:.3f} leader {med[4]:.3f}"
            )
    a, b = rows["A"], rows["B"]
    n = min(len(a), len(b))
    ratios = sorted(b[i][0] / a[i][0] for i in range(n))
    higher = sum(1 for x in ratios if x > 1)
    print(f"B/A writes ratios median {statistics.median(ratios):.3f}, B higher in {higher} of {n}")
    cpu = sorted(b[i][3] / a[i][3] for i in range(n))
    lower = sum(1 for x in cpu if x < 1)
    print(f"B/A cpu ratios median {statistics.median(cpu):.3f}, B lower in {lower} of {n}")


if __name__ == "__main__":
    main(sys.argv[1])
