"""Medians of ab.sh's runs per variant: writes/s, p99, writes/batch, CPU ms/write (total,
leader, each follower, client). usage: absum.py OUT..."""
import collections, re, statistics, sys

rows = collections.defaultdict(list)
for out in sys.argv[1:]:
    import glob, os
    for f in sorted(glob.glob(os.path.join(out, "*.txt"))):
        name = os.path.basename(f).split(".")[0]
        t = open(f).read()
        m = re.search(r"run 1: (\d+)/s p99 ([\d.]+) ms.*?([\d.]+) writes/batch", t)
        c = re.search(r"CPU ms/op total ([\d.]+): (.*)", t)
        if not m or not c or "exited" in t:
            continue
        parts = dict(re.findall(r"(\S+?)(?: \(leader\))? ([\d.]+)(?:,|$)", c.group(2)))
        lead = [k for k in re.findall(r"(\S+) \(leader\)", c.group(2))]
        leader = float(parts.pop(lead[0])) if lead else float("nan")
        client = sum(float(v) for k, v in parts.items() if k.startswith("client"))
        fol = [float(v) for k, v in parts.items() if not k.startswith("client")]
        rows[name].append((int(m.group(1)), float(m.group(2)), float(m.group(3)), float(c.group(1)), leader, statistics.mean(fol) if fol else float("nan"), client))
print("%-8s %3s %8s %7s %7s %7s %7s %7s %7s" % ("variant", "n", "writes/s", "p99", "w/batch", "total", "leader", "follow", "client"))
for name, v in rows.items():
    md = [statistics.median(x[i] for x in v) for i in range(7)]
    print("%-8s %3d %8.0f %7.1f %7.1f %7.3f %7.3f %7.3f %7.3f" % (name, len(v), *md))
    print("         runs: " + ", ".join("%d/s %.3f" % (x[0], x[3]) for x in v))
