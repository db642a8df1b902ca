"""Round 19 (s19-pipe): the machine's two cores over the marked second (run.sh's output).

usage: ana.py OUT [cycles-to-print]. Reads OUT/sched.data (perf sched timehist) and the
markers (OUT/PID.json); prints the cores' time by process role (leader, follower, client,
others, idle), the same per phase of the leader's batch cycle, and a few cycles drawn.
"""
import collections, glob, json, os, subprocess, sys

out = sys.argv[1]
show = int(sys.argv[2]) if len(sys.argv) > 2 else 3
marks = {}
for f in glob.glob(os.path.join(out, "*.json")):
    b = os.path.basename(f)
    if b in ("info.json", "bench.json"):
        continue
    d = json.load(open(f))
    marks[d["pid"]] = d
role = {}
leader = None
for pid, d in marks.items():
    kinds = {e[2] for e in d["events"]}
    if "prop" in kinds:
        role[pid] = "L"; leader = pid
    elif "node" in d["argv"]:
        role[pid] = "F"
    elif "bench" in " ".join(d["argv"]) or "--endpoints" in d["argv"]:
        role[pid] = "C"
fol = sorted(p for p, r in role.items() if r == "F")
for i, p in enumerate(fol):
    role[p] = "F%d" % (i + 1)
writer_tids = {}
for pid, d in marks.items():
    for e in d["events"]:
        if e[2] == "fs0":
            writer_tids[e[1]] = pid
txt = subprocess.run(["perf", "sched", "timehist", "--state", "-i", os.path.join(out, "sched.data")],
                     capture_output=True, text=True).stdout.splitlines()
runs = []  # (start_ns, end_ns, cpu, who, delay_ns): delay = runnable before the run
preempted = {}  # tid -> its last switch-out left it runnable (state R)
for line in txt[3:]:
    p = line.split()
    if len(p) < 7:
        continue
    try:
        t = float(p[0]); cpu = int(p[1].strip("[]"))
        run = float(p[-2]); delay = float(p[-3]); wait = float(p[-4])
    except ValueError:
        continue
    task = " ".join(p[2:-4])
    if "[" in task:
        tid_ = task[task.rindex("[") + 1:-1].split("/")[0]
        if preempted.get(tid_):
            delay = wait  # preempted: runnable the whole time off the core
        preempted[tid_] = p[-1] == "R"
    who = "other"
    if task.startswith("<idle>"):
        who = "idle"
    else:
        ids = task[task.rindex("[") + 1:-1].split("/")
        tid = int(ids[0]); pid = int(ids[-1])
        if pid in role:
            r = role[pid]
            who = r + ("w" if tid in writer_tids else "")
    end = int(t * 1e9); start = end - int(run * 1e6)
    runs.append((start, end, cpu, who, int(delay * 1e6)))
runs.sort()
t0 = max(min(e[0] for d in marks.values() for e in d["events"] if d["events"]), runs[0][0])
t1 = min(max(e[0] for d in marks.values() for e in d["events"] if d["events"]), runs[-1][1])

def tally(a, b):
    c = collections.Counter()
    for s, e, cpu, who, _ in runs:
        lo, hi = max(s, a), min(e, b)
        if hi > lo:
            c[who.rstrip("w") if who != "idle" else "idle"] += hi - lo
    return c

tot = tally(t0, t1)
span = (t1 - t0) * 2
print("window %.0f ms x 2 cores; share of core time:" % ((t1 - t0) / 1e6))
for k in sorted(tot):
    print("  %-6s %5.1f %%" % (k, 100 * tot[k] / span))
ours = sum(v for k, v in tot.items() if k not in ("idle", "other"))
print("  ours   %5.1f %% (of 2 cores); idle %.1f %%" % (100 * ours / span, 100 * tot["idle"] / span))
# the leader's cycle: prop -> (fs) -> rel -> next prop
L = marks[leader]["events"]
props = [e[0] for e in L if e[2] == "prop"]
nprop = [e[3] for e in L if e[2] == "prop"]
rels = [e[0] for e in L if e[2] == "rel"]
print("batches %d, writes/batch median %s, cycle median %.2f ms" % (
    len(props), sorted(nprop)[len(nprop) // 2],
    sorted(b - a for a, b in zip(props, props[1:]))[len(props) // 2] / 1e6))
# phases: prop -> leader fs1 (own fsync done), -> rel (applied), -> next prop
lfs = [e[0] for e in L if e[2] == "fs1"]
lfs0 = [e[0] for e in L if e[2] == "fs0"]
ph = collections.defaultdict(collections.Counter); phl = collections.defaultdict(list)
import bisect
for a, b in zip(props, props[1:]):
    i = bisect.bisect_left(rels, a)
    if i >= len(rels) or rels[i] > b:
        continue
    r = rels[i]
    j = bisect.bisect_left(lfs, a)
    f = lfs[j] if j < len(lfs) and lfs[j] < r else a
    for name, x, y in (("1 prop->own fsync done", a, f), ("2 ->applied(rel)", f, r), ("3 rel->next prop", r, b)):
        ph[name].update(tally(x, y)); phl[name].append(y - x)
print("\nphase (median ms; core shares in the phase summed over cycles)")
keys = ["L", "F1", "F2", "C", "other", "idle"]
print("  %-24s %6s " % ("", "ms") + " ".join("%6s" % k for k in keys))
for name in sorted(ph):
    c = ph[name]; s = sum(c.values()) or 1
    med = sorted(phl[name])[len(phl[name]) // 2] / 1e6
    print("  %-24s %6.2f " % (name, med) + " ".join("%5.1f%%" % (100 * c[k] / s) for k in keys))
# draw cycles: 0.1 ms columns, one row per role: letter if on cpu
ev = {}
for pid, d in marks.items():
    for e in d["events"]:
        ev.setdefault(role.get(pid, "?"), []).append(e)
inside = [i for i in range(len(props) - 1) if props[i] > t0 and props[i + 1] < t1]
for k in range(min(show, len(inside))):
    a, b = props[inside[k]], props[inside[k] + 1]
    step = 100_000
    n = (b - a) // step + 1
    print("\ncycle %d: %.2f ms (0.1 ms per column; # on a core, w writer thread, . runnable waiting)" % (k, (b - a) / 1e6))
    for r in ["L", "F1", "F2", "C", "other"]:
        row = [" "] * n
        for s, e, cpu, who, dl in runs:
            base = who.rstrip("w") if who not in ("idle",) else who
            if base != r:
                continue
            for x, y, ch in ((s - dl, s, "."), (s, e, "w" if who.endswith("w") else "#")):
                for col in range(max(0, (x - a) // step), min(n, (y - a) // step + 1)):
                    if y > a + col * step and x < a + (col + 1) * step:
                        if ch != "." or row[col] == " ":
                            row[col] = ch if row[col] != "#" else "#"
        print("  %-5s|%s|" % (r, "".join(row)))
    m = [" "] * n
    for r, es in ev.items():
        for e in es:
            if a <= e[0] < b:
                col = (e[0] - a) // step
                sym = {"prop": "P", "rel": "R", "fs0": "s", "fs1": "S", "tx": "t"}.get(e[2], "r" if e[2].startswith("rx") else "?")
                if r == "L" or (r == "C" and sym in "tr"):
                    m[col] = sym if r == "L" else sym.upper() if sym == "t" else "c"
    print("  L/C  |%s|  (P prop, s/S leader fsync, R applied, t leader sends answers, T client sends, c client gets answers)" % "".join(m))

# Demand: at each instant, how many of our threads are on a core or runnable (a sched delay
# before a run counts as wanting a core). On a quiet 2-core machine, demand <= 1 is a bubble.
def demand(a, b):
    pts = []
    for s, e, cpu, who, dl in runs:
        if who in ("idle", "other"):
            continue
        x, y = max(s - dl, a), min(e, b)
        if y > x:
            pts.append((x, 1, who)); pts.append((y, -1, who))
    pts.sort()
    c = collections.Counter(); n = 0; last = a
    for t, d, w in pts:
        c[min(n, 3)] += t - last; n += d; last = t
    c[min(n, 3)] += b - last
    return c

dm = demand(t0, t1); s = sum(dm.values())
print("\nour threads wanting a core (running or runnable), share of the window:")
print("  " + "  ".join("%s: %.1f %%" % ({0: "none", 1: "one", 2: "two", 3: "3+"}[k], 100 * dm[k] / s) for k in range(4)))
pd = collections.defaultdict(collections.Counter)
for a, b in zip(props, props[1:]):
    if a < t0 or b > t1:
        continue
    i = bisect.bisect_left(rels, a)
    if i >= len(rels) or rels[i] > b:
        continue
    r = rels[i]; j = bisect.bisect_left(lfs, a)
    f = lfs[j] if j < len(lfs) and lfs[j] < r else a
    for name, x, y in (("1 prop->own fsync done", a, f), ("2 ->applied(rel)", f, r), ("3 rel->next prop", r, b)):
        pd[name].update(demand(x, y))
for name in sorted(pd):
    c = pd[name]; s = sum(c.values()) or 1
    print("  %-24s " % name + "  ".join("%s %.1f %%" % ({0: "none", 1: "one", 2: "two", 3: "3+"}[k], 100 * c[k] / s) for k in range(4)))

# Marks relative to each cycle's proposal (medians over the cycles in the window), first and
# last of each kind per process role.
rel_first = collections.defaultdict(list); rel_last = collections.defaultdict(list)
for a, b in zip(props, props[1:]):
    seen = {}
    for r, es in ev.items():
        for e in es:
            if a <= e[0] < b:
                k = r + ":" + e[2]
                if k not in seen:
                    seen[k] = [e[0] - a, e[0] - a]
                seen[k][1] = e[0] - a
    for k, (f, l) in seen.items():
        rel_first[k].append(f); rel_last[k].append(l)
    rel_first["L:next prop"].append(b - a); rel_last["L:next prop"].append(b - a)
med = lambda v: sorted(v)[len(v) // 2] / 1e6
print("\nmarks after the proposal (ms, medians over %d cycles): first .. last" % (len(props) - 1))
for k in sorted(rel_first, key=lambda k: med(rel_first[k])):
    print("  %-26s %7.2f .. %7.2f  (in %d cycles)" % (k, med(rel_first[k]), med(rel_last[k]), len(rel_first[k])))

# The leader's main thread between two marks: on a core, runnable (waiting for one), asleep.
def lead_state(a, b):
    c = collections.Counter()
    for s, e, cpu, who, dl in runs:
        if who != "L":
            continue
        for x, y, k in ((s - dl, s, "runnable"), (s, e, "on-cpu")):
            lo, hi = max(x, a), min(y, b)
            if hi > lo:
                c[k] += hi - lo
    c["asleep"] = (b - a) - c["on-cpu"] - c["runnable"]
    return c

def first_after(r, kind, t, t_end):
    for e in ev.get(r, []):
        if e[2] == kind and t <= e[0] < t_end:
            return e[0]
    return None

segs = [("prop", "fs0"), ("fs0", "fs1"), ("fs1", "ack rx"), ("ack rx", "a0"), ("a0", "a1"), ("a1", "c1"), ("c1", "st0"), ("st0", "last tx"), ("last tx", "last client rx"), ("last client rx", "next prop")]
acc = collections.defaultdict(list)
for a, b in zip(props, props[1:]):
    if a < t0 or b > t1:
        continue
    m = {"prop": a, "next prop": b}
    m["fs0"] = first_after("L", "fs0", a, b)
    m["fs1"] = first_after("L", "fs1", a, b)
    if m["fs1"] is None:
        continue
    m["ack rx"] = first_after("L", "rx:_Reading", m["fs0"], b)
    m["a0"] = first_after("L", "a0", a, b)
    m["a1"] = first_after("L", "a1", a, b)
    m["c1"] = first_after("L", "c1", a, b)
    m["st0"] = first_after("L", "st0", a, b)
    txs = [e[0] for e in ev["L"] if e[2] == "tx" and a <= e[0] < b]
    m["last tx"] = txs[-1] if txs else None
    crx = [e[0] for e in ev["L"] if e[2] == "rx:_ClientConnection" and a <= e[0] < b]
    m["last client rx"] = crx[-1] if crx else None
    if any(v is None for v in m.values()):
        continue
    for x, y in segs:
        st = lead_state(m[x], m[y]) if m[y] >= m[x] else collections.Counter()
        acc[(x, y)].append((m[y] - m[x], st))
print("\nthe leader's main thread per segment of the cycle (medians over %d cycles, ms)" % len(acc[segs[0]]))
print("  %-32s %7s %7s %9s %7s" % ("segment", "wall", "on-cpu", "runnable", "asleep"))
for x, y in segs:
    v = acc[(x, y)]
    if not v:
        continue
    md = lambda f: sorted(f(t) for t in v)[len(v) // 2] / 1e6
    print("  %-32s %7.2f %7.2f %9.2f %7.2f" % (x + " -> " + y, md(lambda t: t[0]), md(lambda t: t[1]["on-cpu"]), md(lambda t: t[1]["runnable"]), md(lambda t: t[1]["asleep"])))

def state(role_, a, b):
    c = collections.Counter()
    for s, e, cpu, who, dl in runs:
        if who.rstrip("w") != role_:
            continue
        t = "w" if who.endswith("w") else "m"
        for x, y, k in ((s - dl, s, t + "-runnable"), (s, e, t + "-on-cpu")):
            lo, hi = max(x, a), min(y, b)
            if hi > lo:
                c[k] += hi - lo
    c["m-asleep"] = (b - a) - c["m-on-cpu"] - c["m-runnable"]
    return c

print("\neach follower: append received -> its write starts -> done -> the leader hears the ack")
facc = collections.defaultdict(list)
for a, b in zip(props, props[1:]):
    if a < t0 or b > t1:
        continue
    for f in ("F1", "F2"):
        rx = first_after(f, "rx:_Reading", a, b)
        f0 = first_after(f, "fs0", a, b)
        f1 = first_after(f, "fs1", a, b)
        if None in (rx, f0, f1) or not rx <= f0 <= f1:
            continue
        for name, x, y in (("prop -> append rx", a, rx), ("append rx -> fs0", rx, f0), ("fs0 -> fs1", f0, f1)):
            facc[name].append((y - x, state(f, x, y)))
keys2 = ["m-on-cpu", "m-runnable", "m-asleep", "w-on-cpu", "w-runnable"]
print("  %-22s %6s " % ("segment", "wall") + " ".join("%10s" % k for k in keys2))
for name in ("prop -> append rx", "append rx -> fs0", "fs0 -> fs1"):
    v = facc[name]
    if not v:
        continue
    md = lambda f: sorted(f(t) for t in v)[len(v) // 2] / 1e6
    print("  %-22s %6.2f " % (name, md(lambda t: t[0])) + " ".join("%10.2f" % md(lambda t, k=k: t[1][k]) for k in keys2))
print("\nthe leader: prop -> its write starts -> done")
lacc = collections.defaultdict(list)
for a, b in zip(props, props[1:]):
    if a < t0 or b > t1:
        continue
    f0 = first_after("L", "fs0", a, b); f1 = first_after("L", "fs1", a, b)
    if None in (f0, f1):
        continue
    for name, x, y in (("prop -> fs0", a, f0), ("fs0 -> fs1", f0, f1)):
        lacc[name].append((y - x, state("L", x, y)))
for name in ("prop -> fs0", "fs0 -> fs1"):
    v = lacc[name]
    md = lambda f: sorted(f(t) for t in v)[len(v) // 2] / 1e6
    print("  %-22s %6.2f " % (name, md(lambda t: t[0])) + " ".join("%10.2f" % md(lambda t, k=k: t[1][k]) for k in keys2))

# The step from the commit's last input to the apply (marks of the driver: h0/h1 around each
# event it handles, pr0/pr1 around its Ready, enq when the commit goes to the apply loop).
sub = collections.defaultdict(list)
for a, b in zip(props, props[1:]):
    if a < t0 or b > t1:
        continue
    f1 = first_after("L", "fs1", a, b)
    enq = first_after("L", "enq", a, b)
    a0 = first_after("L", "a0", a, b)
    if None in (f1, enq, a0):
        continue
    hs = [e for e in ev["L"] if a <= e[0] < enq and e[2].startswith("h0:")]
    last_in = max([f1] + [e[0] for e in hs if e[2] == "h0:AppendEntriesResponse"])
    pr0 = [e[0] for e in ev["L"] if e[2] == "pr0" and e[0] <= enq]
    p = pr0[-1] if pr0 else enq
    for name, x, y in (("commit's last input -> its step's Ready", last_in, p), ("Ready -> enqueue", p, enq), ("enqueue -> apply starts", enq, a0)):
        if y >= x:
            sub[name].append((y - x, state("L", x, y)))
if sub:
    print("\nthe leader from the commit's last input (its fsync's end or the ack's step) to the apply")
    for name, v in sub.items():
        md = lambda f: sorted(f(t) for t in v)[len(v) // 2] / 1e6
        print("  %-40s %6.2f " % (name, md(lambda t: t[0])) + " ".join("%10.2f" % md(lambda t, k=k: t[1][k]) for k in keys2))
