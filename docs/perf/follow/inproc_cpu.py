"""Round 16 (s16-follow), docs/performance.md. Run from a checkout: PYTHONPATH=. .venv/bin/python
docs/perf/follow/inproc_cpu.py [writes]

CPU per write of a 3-node in-process cluster (memcluster: all nodes and the client in one
process, no network), one write at a time, entries too large to apply on the driver's step,
followers' writes in the writer's thread with a 0.5 ms 'fsync' (a sleep: no CPU), commits
riding on the next append (lazy_commit_notice_bytes as nodes run for small ones)."""

import collections
import sys
import time

import attrs
import trio

from tests.runtime import memcluster
from tests.runtime.memcluster import CONFIG, start_cluster
from univrs.sm.commands import CreateWorkload, Envelope
from univrs.sm.model import WorkloadSpec

memcluster.CONFIG = attrs.evolve(CONFIG, lazy_commit_notice_bytes=1 << 20)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1500


class Steps(trio.abc.Instrument):
    """Task steps by the task's last two name parts."""

    def __init__(self):
        self.c = collections.Counter()

    def before_task_step(self, task):
        self.c[".".join(task.name.rsplit(".", 2)[-2:])] += 1


def big(name):
    return Envelope(command=CreateWorkload(id=name, spec=WorkloadSpec(name=name, image="i" * 1100)))


async def main():
    async with trio.open_nursery() as n:
        cluster, leader = await start_cluster(n, ["a", "b", "c"])
        for r in cluster.runtimes.values():
            if r is leader:
                continue
            w = r._writer
            app = w.write

            def slow(app=app, **p):
                time.sleep(0.0005)
                app(**p)

            w.write = slow
            w.in_thread = True
        for i in range(200):
            await leader.propose(big(f"w{i}"))
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        t0, w0 = time.process_time(), time.perf_counter()
        for i in range(N):
            await leader.propose(big(f"x{i}"))
        cpu = (time.process_time() - t0) / N * 1e6
        trio.lowlevel.remove_instrument(steps)
        wall = (time.perf_counter() - w0) / N * 1e3
        per = sum(steps.c.values()) / N
        print(f"{cpu:.1f} us CPU per write, {wall:.2f} ms wall, steps/write {per:.2f}:")
        print("  ", ", ".join(f"{k} {v / N:.2f}" for k, v in steps.c.most_common(8)))
        n.cancel_scope.cancel()


trio.run(main)
