"""Many clients: a batch's cycle, median first occurrence of each mark (README.md)."""

import collections
import statistics
import sys

from marks import load

d = sys.argv[1]
ev = load(d)
leader = collections.Counter(p for _, p, n in ev if n == "prop").most_common(1)[0][0]
props = [i for i, (_, p, n) in enumerate(ev) if p == leader and n == "prop"]
gaps = collections.defaultdict(list); cyc = []
for k in range(len(props) - 1):
    a, b = props[k], props[k + 1]
    t0 = ev[a][0]; seq = ev[a:b]
    cyc.append((ev[b][0] - t0) / 1e3)
    first = {}
    for t, p, n in seq:
        who = "L" if p == leader else "F"
        key = (who, n)
        if key not in first:
            first[key] = (t - t0) / 1e3
    for key, v in first.items():
        gaps[key].append(v)
print(f"{len(cyc)} cycles; median cycle {statistics.median(cyc):.0f} us")
rows = sorted((statistics.median(v), k, len(v)) for k, v in gaps.items())
for m, k, n in rows:
    if n > len(cyc) * 0.3:
        print(f"{m:8.0f}  {k[0]} {k[1]:30s} n={n}")
# leader event counts per cycle
cnt = collections.Counter(n for t, p, n in ev if p == leader)
print({k: round(v / len(cyc), 1) for k, v in cnt.most_common()})
