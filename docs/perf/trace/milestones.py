"""One client's writes, segment by segment, from a trace of run.sh (the medians and p90 over the
window's writes): python3 milestones.py <out dir>. The leader is the node with the most steps;
a segment is the time between the first step of one kind and the first of the next, on the one
clock every process shares (time.monotonic)."""
import json, glob, sys, collections, statistics
d = sys.argv[1]
procs = {}
for f in glob.glob(d + "/*.json"):
    j = json.load(open(f)); a = " ".join(j["argv"])
    name = "client" if "bench/client" in a else [x for x in j["argv"] if x.endswith(".toml")][0].split("/")[-1][:-5]
    procs[name] = j
ev = []
for name, j in procs.items():
    for t, kind, task in j["events"]:
        if kind == "step": ev.append((t, name, task))
ev.sort()
leader = max((p for p in procs if p != "client"), key=lambda p: sum(1 for e in ev if e[1]==p))
fols = [p for p in procs if p not in ("client", leader)]
starts = [e[0] for e in ev if e[1]=="client" and e[2].endswith(".loop")]
segs = collections.defaultdict(list)
for t0, t1 in zip(starts, starts[1:]):
    w = [e for e in ev if t0 <= e[0] < t1]
    def first(pred, after=t0):
        for e in w:
            if e[0] >= after and pred(e): return e[0]
        return None
    Lrecv = first(lambda e: e[1]==leader and "_reader_task" in e[2])
    Ldrive = first(lambda e: e[1]==leader and "_drive" in e[2])
    if Ldrive is None: continue
    Lpump = first(lambda e: e[1]==leader and "PeerLink" in e[2], Ldrive)
    Frecv = [first(lambda e, f=f: e[1]==f and "_reader_task" in e[2], Ldrive) for f in fols]
    Fsync = [first(lambda e, f=f: e[1]==f and "run_sync_soon" in e[2], Ldrive) for f in fols]
    Lsync = first(lambda e: e[1]==leader and "run_sync_soon" in e[2], Ldrive)
    Lresp = first(lambda e: e[1]==leader and "write_responses" in e[2], Ldrive)
    # The frame's task; since s16-api a frame of writes has none on the leader: its writer.
    Lframe = first(lambda e: e[1]==leader and ("_handle_frame" in e[2] or "write_responses" in e[2]), Ldrive)
    if None in Frecv or None in Fsync or Lsync is None or Lresp is None or Lframe is None: continue
    # leader receives first follower ack after that follower's fsync
    Lack = first(lambda e: e[1]==leader and "_reader_task" in e[2], min(Fsync))
    # commit driver step: the leader _drive step right before _handle_frame wake
    Lcommit = max(e[0] for e in w if e[1]==leader and "_drive" in e[2] and e[0] < Lframe)
    segs["client->leader reader"].append(Lrecv - t0)
    segs["leader reader->drive(propose)"].append(Ldrive - Lrecv)
    segs["drive->first pump"].append(Lpump - Ldrive)
    segs["drive->first follower reader"].append(min(Frecv) - Ldrive)
    segs["follower recv->fsync done (fastest)"].append(min(b - a for a, b in zip(Frecv, Fsync)))
    segs["drive->leader fsync done"].append(Lsync - Ldrive)
    segs["drive->first follower fsync done"].append(min(Fsync) - Ldrive)
    segs["first follower fsync->leader ack recv"].append(Lack - min(Fsync))
    segs["drive->commit drive step"].append(Lcommit - Ldrive)
    segs["commit step->handle_frame"].append(Lframe - Lcommit)
    segs["handle_frame->write_responses"].append(Lresp - Lframe)
    segs["write_responses->client done"].append(t1 - Lresp)
    segs["total"].append(t1 - t0)
    segs["commit waited for leader fsync"].append(1.0 if Lsync > Lack else 0.0)
print("leader", leader, "writes", len(segs["total"]))
waited = segs.pop("commit waited for leader fsync")
for k, v in segs.items():
    v = sorted(v)
    print(f"  {k:42s} median {statistics.median(v)*1e3:7.3f} ms  p90 {v[int(len(v)*.9)]*1e3:7.3f}")
print(f"  the leader's own fsync returned after the first follower's ack in {int(sum(waited))} of {len(waited)} writes")
