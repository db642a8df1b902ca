"""Self time by module and by function, and inclusive time, of a ``py-spy record -f raw``
file (docs/perf/round25): ``spyan.py FILE [TOP] [INCLUSIVE_TOP]``."""

from __future__ import annotations

import collections
import re
import sys


def main(path: str, top: int, inclusive_top: int) -> None:
    self_fn: collections.Counter[str] = collections.Counter()
    self_mod: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as fh:
        lines = fh.readlines()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        self_fn[leaf] += n
        m = re.search(r"\(([^:)]+)", leaf)
        where = (m.group(1) if m else leaf).split("site-packages/")[-1]
        where = re.sub(r"^.*?/univrs/", "univrs/", where)
        parts = where.split("/")
        self_mod["/".join(parts[:2]) if where.startswith("univrs") else parts[0]] += n
        for key in {re.sub(r":\d+\)", ")", f) for f in frames}:
            incl[key] += n
    print("samples", total)
    print("--- self by module")
    for k, v in self_mod.most_common(25):
        print(f"{100 * v / total:5.1f}% {k}")
    print("--- self by function")
    for k, v in self_fn.most_common(top):
        print(f"{100 * v / total:5.1f}% {k[:150]}")
    print("--- inclusive")
    for k, v in incl.most_common(inclusive_top):
        print(f"{100 * v / total:5.1f}% {k[:150]}")


if __name__ == "__main__":
    args = [*sys.argv[2:4], "40", "40"]
    main(sys.argv[1], int(args[0]), int(args[1]))
