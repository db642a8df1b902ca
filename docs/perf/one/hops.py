"""Per-write hop table of one client's write (issue 14, s20-one): reads the marks of
docs/perf/timeline/probe.py (see README.md there and docs/perf/one/README.md).

    python3 docs/perf/one/hops.py OUT [OUT...]

One write is the span between two sends of the client. The committing follower is the one
whose ack the leader reads first; the leader's own write runs beside the replication, and the
commit waits for the later of the two ("own write later" says how often that was the leader's).
"""
import collections, glob, json, statistics, sys


def load(d):
    procs = {}
    for f in glob.glob(d + "/*.json"):
        j = json.load(open(f))
        tomls = [x for x in j["argv"] if x.endswith(".toml")]
        procs[tomls[0].split("/")[-1][:-5] if tomls else "C"] = j["events"]
    leader = max((p for p in procs if p != "C"), key=lambda p: sum(1 for e in procs[p] if e[1] == "inline"))
    fols = sorted(p for p in procs if p not in ("C", leader))
    alias = {"C": "C", leader: "L", fols[0]: "F1", fols[1]: "F2"}
    return sorted((t, alias[p], name, main, x) for p, es in procs.items() for t, name, main, x in es)


def first(w, p, name, after, pred=lambda e: True):
    if after is None:
        return None
    for e in w:
        if e[0] >= after and e[1] == p and e[2] == name and pred(e):
            return e[0]
    return None


PATH = [
    "client send -> leader reads the frame",
    "frame read -> inline write start",
    "-> leader's driver step",
    "step -> AppendEntries sent (core, Ready)",
    "-> first AppendEntries write begins (socket)",
    "-> committing follower reads it",
    "read -> its driver step",
    "step -> append handed to storage",
    "hand-off -> writer thread runs",
    "thread: stage + synced commit",
    "commit returned -> completion on the loop",
    "completion -> ack write begins",
    "ack write begins -> leader reads it",
    "leader's later of (ack read, own write done) -> its step",
    "step -> commit (core)",
    "commit -> answer write begins (apply, render: on the step)",
    "answer write begins -> client reads it",
]
SIDE = [
    "(leader step -> own append handed to storage)",
    "(leader: hand-off -> writer thread runs)",
    "(leader: thread: stage + synced commit)",
    "(leader: commit returned -> completion)",
    "(leader: step -> second AppendEntries written)",
    "(follower: step -> end of its step, after hand-off)",
    "(follower: commit+apply on the append's step)",
]


def hops(ev, segs, flags):
    starts = [e[0] for e in ev if e[1] == "C" and e[2] == "w0"]
    n = 0
    for t0, t1 in zip(starts, starts[1:]):
        w = [e for e in ev if t0 <= e[0] < t1]
        Lr = first(w, "L", "r", t0, lambda e: e[4] > 40)
        Lin = first(w, "L", "inline", Lr)
        Lst = first(w, "L", "step", Lin)
        Lsend = first(w, "L", "send", Lst)
        Lw1 = first(w, "L", "w0", Lsend, lambda e: 100 < e[4] < 400)
        Lsub = first(w, "L", "sub", Lst)
        Lt0 = first(w, "L", "t0", Lsub)
        Lt1 = first(w, "L", "t1", Lt0)
        Ldone = first(w, "L", "done", Lt1)
        best = None
        for f in ("F1", "F2"):
            Fr = first(w, f, "r", Lsend)
            Fst = first(w, f, "step", Fr)
            Fsub = first(w, f, "sub", Fst)
            Fend = first(w, f, "stepend", Fsub)
            Ft0 = first(w, f, "t0", Fsub)
            Ft1 = first(w, f, "t1", Ft0)
            Fdone = first(w, f, "done", Ft1)
            Fw1 = first(w, f, "w0", Fdone)
            v = (Fr, Fst, Fsub, Ft0, Ft1, Fdone, Fw1)
            if None in v:
                continue
            Lack = first(w, "L", "r", Fw1, lambda e: e[4] < 40)
            if Lack is None:
                continue
            if best is None or Lack < best[-1]:
                Fc = first(w, f, "commit", Fst)
                Fa = first(w, f, "applied", Fc) if Fc is not None and Fc < Ft0 else None
                best = v + (Fend, Fc, Fa, Lack)
        if best is None or None in (Lr, Lin, Lst, Lsend, Lw1, Lsub, Lt0, Lt1, Ldone):
            continue
        Fr, Fst, Fsub, Ft0, Ft1, Fdone, Fw1, Fend, Fc, Fa, Lack = best
        trig = max(Lack, Ldone)
        Lcs = first(w, "L", "step", trig)
        Lc = first(w, "L", "commit", Lcs)
        La = first(w, "L", "applied", Lc)
        Law = first(w, "L", "w0", Lc, lambda e: 40 < e[4] < 100)
        Cr = first(w, "C", "r", Law)
        vals = [Lr, Lin, Lst, Lsend, Lw1, Fr, Fst, Fsub, Ft0, Ft1, Fdone, Fw1, Lack, Lcs, Lc, Law, Cr]
        if None in vals:
            continue
        prev = t0
        for name, v in zip(PATH, vals):
            # the ack read may come before the leader's own write is done: that hop is from the later one
            segs[name].append((v - prev) if v != Lcs else (Lcs - trig))
            prev = v
        Lw1b = first(w, "L", "w1", first(w, "L", "w0", Lw1 + 1, lambda e: 100 < e[4] < 400), lambda e: 100 < e[4] < 400)
        sides = [Lsub - Lst, Lt0 - Lsub, Lt1 - Lt0, Ldone - Lt1,
                 (Lw1b - Lst) if Lw1b is not None and Lw1b < Lsub else None,
                 (Fend - Fsub) if Fend is not None else None,
                 (Fa - Fc) if Fa is not None else None]
        for name, v in zip(SIDE, sides):
            if v is not None:
                segs[name].append(v)
        segs["TOTAL (client send -> client reads the answer)"].append(Cr - t0)
        segs["replication branch: leader step -> ack read"].append(Lack - Lst)
        segs["own-write branch: leader step -> own write done"].append(Ldone - Lst)
        flags["own write later"].append(Ldone > Lack)
        flags["follower applied on the append's step before its thread ran"].append(Fa is not None)
        n += 1
    return n


def main():
    segs, flags = collections.defaultdict(list), collections.defaultdict(list)
    n = sum(hops(load(d), segs, flags) for d in sys.argv[1:])
    print("writes", n)
    for k in PATH + ["TOTAL (client send -> client reads the answer)",
                     "replication branch: leader step -> ack read",
                     "own-write branch: leader step -> own write done"] + SIDE:
        v = sorted(x / 1e6 for x in segs[k])
        if v:
            print(f"| {k} | {statistics.median(v):.3f} | {v[int(len(v) * .9)]:.3f} | {len(v)} |")
    for k, v in flags.items():
        print(f"| {k} | {sum(v) / len(v):.0%} |")


if __name__ == "__main__":
    main()
