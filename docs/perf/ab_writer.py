"""A/B of the storage writer's hand-off in one process (docs/performance.md, "Round 4"):
the old writer (a task woken per job, ``trio.to_thread.run_sync`` per group commit, an
``await``ed report) against the new one (univrs/runtime/writer.py: one long-lived worker
thread, completions by ``run_sync_soon``). The blocking call is a no-op, so what is measured
is the hand-off itself: CPU (process_time, all threads) and wall time per job from submit to
the report, one job at a time (one client's writes). Medians of 9 interleaved rounds.

Run: .venv/bin/python docs/perf/ab_writer.py
"""

from __future__ import annotations

import statistics
import time

import trio

from univrs.raft.messages import Entry, HardState
from univrs.runtime.writer import PersistJob, StorageWriter

N = 500


class OldWriter:
    """The writer as it was at c74caaf, reduced to the hand-off: a task woken by an event,
    the call in ``trio.to_thread.run_sync``, the report awaited on the driver's channel."""

    def __init__(self, report: trio.MemorySendChannel[int]) -> None:
        self.report = report
        self.jobs: list[int] = []
        self.wakeup = trio.Event()

    def submit(self, i: int) -> None:
        self.jobs.append(i)
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            while self.jobs:
                i = self.jobs.pop(0)
                await trio.to_thread.run_sync(lambda: None)
                await self.report.send(i)


def noop_write(**_kw: object) -> None:
    pass


async def old_round() -> tuple[float, float]:
    send, recv = trio.open_memory_channel[int](100)
    writer = OldWriter(send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        c, w = time.process_time(), time.perf_counter()
        for i in range(N):
            writer.submit(i)
            await recv.receive()
        c, w = time.process_time() - c, time.perf_counter() - w
        nursery.cancel_scope.cancel()
    return c / N * 1e6, w / N * 1e6


async def new_round() -> tuple[float, float]:
    send, recv = trio.open_memory_channel[int](100)
    writer = StorageWriter(
        write=noop_write,
        send=lambda _m: None,
        on_persisted=lambda index, _t, _hs: send.send_nowait(index),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        c, w = time.process_time(), time.perf_counter()
        for i in range(1, N + 1):
            entry = Entry(term=1, index=i)
            hs = HardState(term=1, vote="a", commit=i)
            writer.submit(
                PersistJob(hard_state=hs, truncate_from=None, entries=(entry,), after_persist=())
            )
            await recv.receive()
        c, w = time.process_time() - c, time.perf_counter() - w
        nursery.cancel_scope.cancel()
    return c / N * 1e6, w / N * 1e6


async def main() -> None:
    old: list[tuple[float, float]] = []
    new: list[tuple[float, float]] = []
    for _ in range(9):
        old.append(await old_round())
        new.append(await new_round())
    for name, runs in (("old", old), ("new", new)):
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{name}: {cpu:6.1f} us CPU, {wall:6.1f} us wall per job (median of 9)")


if __name__ == "__main__":
    trio.run(main)
