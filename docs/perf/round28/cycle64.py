"""One batch cycle's marks in order, across the processes (README.md)."""

import collections
import sys

from marks import load

d = sys.argv[1]; k = int(sys.argv[2])
ev = load(d)
leader = collections.Counter(p for _, p, n in ev if n == "prop").most_common(1)[0][0]
props = [i for i, (_, p, n) in enumerate(ev) if p == leader and n == "prop"]
a, b = props[k], props[k + 1]
t0 = ev[a][0]; last = t0
for t, p, n in ev[a:b + 1]:
    print(f"{(t - t0) / 1e3:8.0f} {(t - last) / 1e3:6.0f} {'L' if p == leader else 'F' + p[-1]:3s} {n}")
    last = t
