"""Synced one-put LMDB commits in 1, 2 and 3 processes at once: does the disk serialize the
nodes' flushes (docs/performance.md, "Round 25")? Prints each process's median commit time.
Run it from a folder on the disk the nodes use (its environments go there)."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from multiprocessing.synchronize import Event

import lmdb


def worker(n: int, out: mp.Queue[float], start: Event, where: str) -> None:
    folder = tempfile.mkdtemp(dir=where)
    env = lmdb.open(folder, map_size=1 << 26, sync=True, metasync=True)
    start.wait()
    took = []
    for i in range(n):
        t = time.perf_counter()
        with env.begin(write=True) as txn:
            txn.put(b"k%d" % (i % 50), b"x" * 300)
        took.append(time.perf_counter() - t)
    out.put(statistics.median(took) * 1000)
    env.close()
    shutil.rmtree(folder)


def main(where: str = ".") -> None:
    for procs in (1, 2, 3, 1, 3):
        out: mp.Queue[float] = mp.Queue()
        start = mp.Event()
        ps = [mp.Process(target=worker, args=(400, out, start, where)) for _ in range(procs)]
        for p in ps:
            p.start()
        time.sleep(0.3)
        start.set()
        for p in ps:
            p.join()
        print(procs, "processes: median commit ms", sorted(round(out.get(), 3) for _ in ps))


if __name__ == "__main__":
    main()
