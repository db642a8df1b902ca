import collections
import sys

f = sys.argv[1]
depth = int(sys.argv[2]) if len(sys.argv) > 2 else 0
tot = collections.Counter()
selfc = collections.Counter()
incl = collections.Counter()
for line in open(f):
    line = line.rstrip()
    if not line:
        continue
    stack, _, n = line.rpartition(" ")
    n = int(n)
    frames = stack.split(";")
    thr = frames[0].split(" ")[0] + frames[0].split(")")[-1] if False else frames[0]
    main = "MainThread" in frames[0]
    key = "main" if main else "other"
    tot[key] += n
    if not main:
        selfc["[thr] " + frames[-1]] += n
        continue
    selfc[frames[-1]] += n
    seen = set()
    for fr in frames[1:]:
        nm = fr.split(" (")[0] + " (" + fr.split(" (")[1].split(":")[0] + ")" if " (" in fr else fr
        if nm in seen:
            continue
        seen.add(nm)
        incl[nm] += n
print(tot)
print("--- self top")
for k, v in selfc.most_common(45):
    print(f"{v:6d} {100 * v / tot['main']:5.1f}% {k}")
print("--- inclusive top")
for k, v in incl.most_common(int(sys.argv[3]) if len(sys.argv) > 3 else 70):
    print(f"{v:6d} {100 * v / tot['main']:5.1f}% {k}")
