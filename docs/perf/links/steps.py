"""Task steps per write by process and task kind, two decimals, from a docs/perf/trace run
(the same window and counting as timeline.py's table, which rounds to one decimal).

usage: python steps.py <trace dir>
"""

import collections
import glob
import json
import sys

d = sys.argv[1]
procs = {}
for f in glob.glob(d + "/*.json"):
    j = json.load(open(f))
    a = " ".join(j["argv"])
    name = (
        "client"
        if "bench/client" in a
        else [x for x in j["argv"] if x.endswith(".toml")][0].split("/")[-1][:-5]
    )
    procs[name] = j
KINDS = {
    "PeerLink.run": "links",
    "_reader_task": "ws readers",
    "_run_handler": "handlers",
    "_drive": "driver",
}
ev = []
for name, j in procs.items():
    for t, kind, task in j["events"]:
        ev.append((t, name, kind, task))
ev.sort()
writes = [
    e[0]
    for e in ev
    if e[1] == "client" and e[2] == "step" and (e[3].endswith("worker") or e[3].endswith(".loop"))
]
lo = max(min(e[0] for e in ev if e[1] == p) for p in procs)
hi = min(max(e[0] for e in ev if e[1] == p) for p in procs)
writes = [w for w in writes if lo <= w <= hi]
n = len(writes) - 1
span = (writes[0], writes[-1])
print(f"{n} writes in the window")
for name in sorted(procs):
    c = collections.Counter()
    total = 0
    for t, p, kind, task in ev:
        if p == name and kind == "step" and span[0] <= t < span[1]:
            total += 1
            for frag, k in KINDS.items():
                if frag in task:
                    c[k] += 1
    parts = ", ".join(f"{k} {c[k] / n:.2f}" for k in KINDS.values())
    print(f"  {name}: {total / n:.2f} steps per write ({parts})")
