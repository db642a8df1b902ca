import collections
import glob
import json
import os
import sys

out = sys.argv[1]
d = json.load(open(out + ".json"))
w = d["univrs"]["writes"]
k = list(w)[0]
w = w[k]
leader = w["leaders"][0]
info = json.load(open(out + ".info.json"))
pids = {str(p): n for n, p in info["pids"].items()}
n = w["ops_per_s"] * 6
agg = {}
for f in glob.glob(out + ".cpu/a/*.json"):
    pid = os.path.basename(f)[:-5]
    if pid not in pids:
        continue
    a = json.load(open(f))
    b = json.load(open(out + ".cpu/b/" + os.path.basename(f)))
    role = "leader" if pids[pid] == leader else "follower"
    r = agg.setdefault(
        role,
        {
            "cpu": collections.Counter(),
            "n": collections.Counter(),
            "io": 0,
            "ion": 0,
            "sched": 0,
            "proc": 0,
            "k": 0,
        },
    )
    r["k"] += 1
    for t in a["cpu"]:
        r["cpu"][t] += a["cpu"][t] - b["cpu"].get(t, 0)
        r["n"][t] += a["n"][t] - b["n"].get(t, 0)
    for x in ("io", "ion", "sched", "proc"):
        r[x] += a[x] - b[x]
print(f"{out}: {w['ops_per_s']:.0f}/s p50 {w['p50_ms']} writes~{n:.0f}")
for role, r in agg.items():
    f = r["k"] * n / 1000.0  # ms per write per process
    steps = sum(r["cpu"].values())
    print(
        f" {role}: process {r['proc'] / f:.3f} ms/write; trio thread: steps {steps / f:.3f}, io waits {r['io'] / f:.3f} ({r['ion'] / r['k'] / n:.2f}/write), scheduler between {r['sched'] / f:.3f}"
    )
    for t, c in r["cpu"].most_common(25):
        if c / f < 0.00001:
            continue
        print(
            f"     {c / f:.3f} ms  {r['n'][t] / r['k'] / n:5.2f} steps/write  {1e6 * c / max(1, r['n'][t]):6.1f} us/step  {t[-70:]}"
        )
