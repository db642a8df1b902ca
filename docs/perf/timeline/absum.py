import json, glob, sys, statistics, collections, re
out = sys.argv[1]
rows = collections.defaultdict(list)
for f in sorted(glob.glob(out + "/*.json")):
    m = re.match(r"(.*)-(\d+)-(\d+)\.json", f.split("/")[-1])
    name, clients, i = m.groups()
    d = json.load(open(f))
    w = d["univrs"]["writes"][clients]
    r = w["cpu_ms_per_op_by_role"]
    rows[(name, clients)].append((int(i), w["ops_per_s"], w["p50_ms"], w["p99_ms"], w["cpu_ms_per_op_total"], r["leader"], r["follower"], r["clients"], d["config"]["load_before"].split()[0]))
for k, v in sorted(rows.items()):
    v.sort()
    print(k, "runs", len(v))
    for x in v: print("   ", x)
    med = lambda j: statistics.median([x[j] for x in v])
    print(f"  median: {med(1):.0f}/s p50 {med(2):.2f} p99 {med(3):.2f} cpu total {med(4):.3f} leader {med(5):.3f} follower {med(6):.3f} client {med(7):.3f}")
