import json, sys, collections
out = sys.argv[1]
b = {tuple(l.split()[:2]): list(map(int, l.split()[2:])) for l in open(out + ".before")}
a = {tuple(l.split()[:2]): list(map(int, l.split()[2:])) for l in open(out + ".after")}
d = json.load(open(out + ".json"))
w = d["univrs"]["writes"]; k = list(w)[0]; w = w[k]
leader = w["leaders"][0]
pids = {}
# map pid -> node id via the cluster info
info = json.load(open(sys.argv[2]))
for nid, pid in info["pids"].items(): pids[str(pid)] = nid
n = w["ops_per_s"] * 6
print(f"{out}: {w['ops_per_s']}/s p50 {w['p50_ms']} leader {leader} writes~{n:.0f}")
agg = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
for key, after in a.items():
    before = b.get(key)
    if before is None: continue
    diff = [x - y for x, y in zip(after, before)]
    role = "leader" if pids[key[0]] == leader else "follower"
    main = key[0] == key[1]
    name = role + (":main" if main else ":thr")
    for i in range(4): agg[name][i] += diff[i]
    agg[name][4] += 1
for name, (u, s, vol, inv, cnt) in sorted(agg.items()):
    if role == "follower": pass
    f = 2 if name.startswith("follower") else 1
    print(f"  {name:15s} user {10*u/n/f:.3f} ms sys {10*s/n/f:.3f} ms  vol cs {vol/n/f:.2f} invol cs {inv/n/f:.2f} per write (threads {cnt})")
