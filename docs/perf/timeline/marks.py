import json, glob, sys, collections, statistics
d = sys.argv[1]
procs = {}
for f in glob.glob(d + "/*.json"):
    j = json.load(open(f)); a = " ".join(j["argv"])
    if "bench/client" in a or not any(x.endswith(".toml") for x in j["argv"]):
        name = "C"
    else:
        name = [x for x in j["argv"] if x.endswith(".toml")][0].split("/")[-1][:-5]
    procs[name] = j["events"]
leader = max((p for p in procs if p != "C"), key=lambda p: sum(1 for e in procs[p] if e[1] == "inline"))
fols = sorted(p for p in procs if p not in ("C", leader))
alias = {"C": "C", leader: "L", fols[0]: "F1", fols[1]: "F2"}
ev = sorted((t, alias[p], name, main, x) for p, es in procs.items() for t, name, main, x in es)
starts = [e[0] for e in ev if e[1] == "C" and e[2] == "w0"]
rows = collections.defaultdict(list)
nw = 0
for t0, t1 in zip(starts, starts[1:]):
    w = [e for e in ev if t0 <= e[0] < t1]
    cnt = collections.Counter()
    seen = []
    for t, p, name, main, x in w:
        key = (p, name, cnt[(p, name)])
        cnt[(p, name)] += 1
        lab = f"{p}:{name}#{key[2]}" + ("" if main else "(thr)")
        rows[lab].append((t - t0) / 1e6)
    nw += 1
print("writes", nw, "leader", leader)
out = []
for lab, v in rows.items():
    if len(v) < nw * 0.8: continue
    out.append((statistics.median(v), lab, sorted(v)[int(len(v) * .9)], len(v)))
out.sort()
prev = 0
for m, lab, p90, n in out:
    print(f"{m:7.3f} ms (+{m-prev:6.3f})  p90 {p90:7.3f}  {lab:28s} n={n}")
    prev = m
