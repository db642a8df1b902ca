"""Print one write's syscalls across the nodes and the load generator from a `perf trace`
output (trace.sh): the client's request write, every call until its next request."""

import re
import sys

lines = open(sys.argv[1]).read().splitlines()
which = int(sys.argv[3]) if len(sys.argv) > 3 else 200
ev = []
for line in lines:
    m = re.match(r"\s*([\d.]+) \(\s*([\d.]*)\s*(?:ms)?\): (\S+)/(\d+) (.*)", line)
    if not m:
        continue
    t, d, _comm, tid, rest = m.groups()
    t, dur = float(t), (float(d) if d else None)
    if "[continued]" in rest:
        ev.append((t + (dur or 0), tid, "END " + rest.split("]:")[1].strip()[:60]))
        continue
    ev.append((t, tid, rest[:90] + (f" [{dur:.3f}]" if dur is not None else " ...")))
ev.sort()
names = {}
for line in open(sys.argv[2]):
    pid, args = line.split(" ", 1)
    names[pid] = "loadgen" if "loadgen" in args else re.search(r"(n\d)\.toml", args).group(1)
starts = [
    i
    for i, (_t, tid, r) in enumerate(ev)
    if tid not in names
    and r.startswith("write(")
    and 40 < int(re.search(r"count: (\d+)", r).group(1)) < 400
]
i, j = starts[which], starts[which + 1]
for t, tid, r in ev[i : j + 1]:
    print(f"{t - ev[i][0]:7.3f} {names.get(tid, 'g' + tid):8s} {r}")
