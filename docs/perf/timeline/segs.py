import json, glob, sys, collections, statistics
exec(open(__file__.rsplit("/", 1)[0] + "/marks.py").read().split("starts =")[0])
starts = [e[0] for e in ev if e[1] == "C" and e[2] == "w0"]
segs = collections.defaultdict(list)
def first(w, p, name, after, pred=lambda e: True):
    for e in w:
        if e[0] >= after and e[1] == p and e[2] == name and pred(e): return e[0]
    return None
for t0, t1 in zip(starts, starts[1:]):
    w = [e for e in ev if t0 <= e[0] < t1]
    try:
        Lr = first(w, "L", "r", t0, lambda e: e[4] > 40)  # the client's frame (not a 16-byte ack)
        Lin = first(w, "L", "inline", Lr); Lst = first(w, "L", "step", Lin)
        Lsend = first(w, "L", "send", Lst); Lsub = first(w, "L", "sub", Lst)
        Lw1 = first(w, "L", "w1", Lsend, lambda e: 100 < e[4] < 200)
        # committing follower: the one whose ack is written first
        best = None
        for f in ("F1", "F2"):
            Fr = first(w, f, "r", Lsend); Fst = first(w, f, "step", Fr); Fsub = first(w, f, "sub", Fst)
            Ft0 = first(w, f, "t0", Fsub); Ft1 = first(w, f, "t1", Ft0); Fp = first(w, f, "persisted", Ft1)
            Fw1 = first(w, f, "w1", Fp)
            Fw1b = Fw1 if Fw1 is not None else Fp  # (flushed acks carry no mark: the completion)
            if None in (Fr, Fst, Fsub, Ft0, Ft1, Fp): continue
            if best is None or Fw1b < best[-1]: best = (Fr, Fst, Fsub, Ft0, Ft1, Fp, Fw1b)
        Fr, Fst, Fsub, Ft0, Ft1, Fp, Fw1 = best
        Lack = first(w, "L", "r", Fw1, lambda e: e[4] < 40)
        Lcs = first(w, "L", "step", Lack); Lc = first(w, "L", "commit", Lcs); La = first(w, "L", "applied", Lc)
        Lwr = first(w, "L", "wr", La); Law = first(w, "L", "w1", Lwr, lambda e: e[4] > 200)
        Cr = first(w, "C", "r", Law)
        Lt0 = first(w, "L", "t0", Lsub); Lt1 = first(w, "L", "t1", Lt0)
        vals = [Lr, Lin, Lst, Lsend, Fr, Fst, Fsub, Ft0, Ft1, Fp, Fw1, Lack, Lcs, Lc, La, Lwr, Law, Cr]
        if None in vals: continue
    except TypeError:
        continue
    names = ["client send -> leader reads the frame", "frame read -> proposal built (inline)", "-> the driver's step",
             "step -> appends sent (core, Ready)", "-> the first follower reads its append", "read -> its driver step",
             "step -> write handed to its thread", "hand-off -> thread starts", "thread: stage + synced commit",
             "commit returned -> completion on the loop", "completion -> ack written", "ack written -> leader reads it",
             "ack read -> leader's driver step", "step -> commit (core)", "commit -> applied (on the step)",
             "applied -> the connection's writer", "writer -> answer written", "answer written -> client has it"]
    prev = t0
    for n, v in zip(names, vals):
        segs[n].append(v - prev); prev = v
    segs["TOTAL (client send -> client has answer)"].append(Cr - t0)
    segs["(leader's own write: hand-off -> commit returned)"].append(Lt1 - Lsub)
    segs["(commit waited for the leader's own write)"].append(1.0 if Lt1 > Lack else 0.0)
n = len(segs["TOTAL (client send -> client has answer)"])
print("writes", n)
for k, v in segs.items():
    v = sorted(x / 1e6 for x in v)
    if k.startswith("(commit waited"):
        print(f"  {k:52s} {sum(v)/len(v)*1e6:5.0%}"); continue
    print(f"  {k:52s} median {statistics.median(v):6.3f} ms  p90 {v[int(len(v)*.9)]:6.3f}")
