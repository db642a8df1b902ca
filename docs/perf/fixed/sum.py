import collections
import json
import sys

out = sys.argv[1]


def load(f):
    r = {}
    for l in open(f):
        p = l.split()
        r[(p[0], p[1])] = (list(map(int, p[2:6])), p[6] if len(p) > 6 else "?")
    return r


b = load(out + ".before")
a = load(out + ".after")
d = json.load(open(out + ".json"))
w = d["univrs"]["writes"]
k = list(w)[0]
w = w[k]
leader = w["leaders"][0]
info = json.load(open(out + ".info.json"))
pids = {str(p): n for n, p in info["pids"].items()}
n = w["ops_per_s"] * 6
print(
    f"{out}: {w['ops_per_s']:.0f}/s p50 {w['p50_ms']} p99 {w.get('p99_ms')} writes~{n:.0f} load {open(out + '.uptime').read().split('average:')[1].strip()}"
)
agg = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
for key, (after, name) in a.items():
    if key not in b:
        continue
    before = b[key][0]
    diff = [x - y for x, y in zip(after, before)]
    role = "leader" if pids[key[0]] == leader else "follower"
    tname = "main" if key[0] == key[1] else name
    nm = role + ":" + tname
    for i in range(4):
        agg[nm][i] += diff[i]
    agg[nm][4] += 1
for nm, (u, s, vol, inv, cnt) in sorted(agg.items()):
    f = 2 if nm.startswith("follower") else 1
    if u + s + vol + inv == 0:
        continue
    print(
        f"  {nm:28s} user {10 * u / n / f:.3f} sys {10 * s / n / f:.3f} ms  vol {vol / n / f:.2f} invol {inv / n / f:.2f} /write (threads {cnt})"
    )
