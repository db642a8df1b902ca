"""One client: the median of each hop of a write (README.md)."""

import collections
import statistics
import sys

from marks import load

d = sys.argv[1]
ev = load(d)
leader = collections.Counter(p for _, p, n in ev if n == "c_in").most_common(1)[0][0]
name = lambda p: "L" if p == leader else "F" + p[-1]
starts = [i for i, (_, p, n) in enumerate(ev) if p == leader and n == "c_in"]
# the leader's path: a fixed sequence of first occurrences, in order
pathL = ["c_in", "c_dec", "c_started", "drv", "prop", "ready0", "ready", "w_req", "sent", "commit", "committed", "w_ret",
         "r_in AppendEntriesResponse", "drv2", "ready0b", "readyb", "apply", "applied1", "c_aos", "c_out"]
gaps = collections.defaultdict(list)
total = []
fol = collections.defaultdict(list)
for k in range(len(starts) - 1):
    a, b = starts[k], starts[k + 1]
    t0 = ev[a][0]
    seq = ev[a:b]
    L = [(t, n) for t, p, n in seq if p == leader]
    # walk the path in order
    pos, times = 0, {}
    want = ["c_in", "c_dec", "c_started", "prop", "ready", "w_req", "sent", "commit", "committed", "w_ret"]
    i = 0
    for t, n in L:
        if i < len(want) and n == want[i]:
            times[n] = t; i += 1
    if i < len(want):
        continue
    # after w_ret: first ack in, then apply, applied1, c_aos, c_out
    rest = ["r_in AppendEntriesResponse", "apply", "applied1", "c_aos", "c_out"]
    j = 0
    for t, n in L:
        if t <= times["w_ret"]:
            continue
        if j < len(rest) and n == rest[j]:
            times["L:" + n] = t; j += 1
    if j < len(rest):
        continue
    order = want + ["L:" + r for r in rest]
    for x, y in zip(order, order[1:]):
        gaps[(x, y)].append((times[y] - times[x]) / 1e3)
    total.append((times["L:c_out"] - t0) / 1e3)
    # followers: r_in AppendEntries after leader sent, then w_req, commit, committed, ack
    for fp in set(p for _, p, _ in seq if p != leader):
        F = [(t, n) for t, p, n in seq if p == fp and t >= times["sent"]]
        fw = ["r_in AppendEntries", "w_req", "commit", "committed", "ack"]
        ft, q = {}, 0
        for t, n in F:
            if q < len(fw) and n == fw[q]:
                ft[n] = t; q += 1
        if q == len(fw):
            prev = times["sent"]
            for n in fw:
                fol[n].append((ft[n] - prev) / 1e3); prev = ft[n]
            fol["ack->L r_in(any)"].append((times["L:r_in AppendEntriesResponse"] - ft["ack"]) / 1e3)
print(f"{len(total)} complete writes; leader c_in -> c_out median {statistics.median(total):.0f} us")
for (x, y), v in gaps.items():
    print(f"  L {x:>30s} -> {y:30s} {statistics.median(v):7.0f} us")
print("followers (median gap from previous step; first from the leader's 'sent')")
for n, v in fol.items():
    print(f"  F {n:30s} {statistics.median(v):7.0f} us  (n={len(v)})")
