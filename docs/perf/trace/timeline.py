import json, glob, sys, collections
d = sys.argv[1]
procs = {}
for f in glob.glob(d + "/*.json"):
    j = json.load(open(f))
    a = " ".join(j["argv"])
    name = "client" if "bench/client" in a else [x for x in j["argv"] if x.endswith(".toml")][0].split("/")[-1][:-5]
    procs[name] = j
allev = []
for name, j in procs.items():
    for t, kind, task in j["events"]:
        allev.append((t, name, kind, task.replace("univrs.", "").replace("trio_websocket._impl.", "ws.").replace("trio._highlevel_serve_listeners.", "")))
allev.sort()
worker = [e[0] for e in allev if e[1] == "client" and (e[3].endswith("worker") or e[3].endswith(".loop"))]
lo = max(min(e[0] for e in allev if e[1]==p) for p in procs)
hi = min(max(e[0] for e in allev if e[1]==p) for p in procs)
worker = [w for w in worker if lo <= w <= hi]
print("writes in window", len(worker), "mean cycle ms", (worker[-1]-worker[0])/(len(worker)-1)*1000 if len(worker)>1 else None)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
t0, t1 = worker[n], worker[n+1]
skip = ("Liveness", "hold_incarnations", "record_incarnations", "log_refusals", "Reconciler", "_follow_applied", "LeaderContact", "StorageWatch", "_ticker", "removal", "_keepalive", "_ping")
prev = t0
for t, name, kind, task in allev:
    if t0 <= t <= t1 and kind == "step":
        mark = "  (wakes)" if any(s in task for s in skip) else ""
        print(f"{(t-t0)*1e3:8.3f} ms  +{(t-prev)*1e6:7.0f} us  {name:6s} {task}{mark}")
        prev = t
# steps per write per process, by task
nw = len(worker) - 1
span = (worker[0], worker[-1])
print("\nsteps per write, by process (window of", nw, "writes)")
for name in sorted(procs):
    c = collections.Counter(e[3] for e in allev if e[1] == name and e[2] == "step" and span[0] <= e[0] < span[1])
    io = sum(1 for e in allev if e[1] == name and e[2] == "io_wait" and span[0] <= e[0] < span[1])
    if not c: continue
    print(f"  {name}: {sum(c.values())/nw:.1f} steps, {io/nw:.1f} io waits per write")
    for k, v in c.most_common(12):
        print(f"      {v/nw:5.1f} {k}")
