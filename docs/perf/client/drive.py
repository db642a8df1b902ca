"""The bench's 64-client closed loop of minimal keyed scales (univrs/bench/measure.py
``closed_loops``, univrs/bench/workers.py ``load_ops``: the same code), over 4 connections to
the stub node (stub.py), in this process; prints this process's CPU per write
(``time.process_time`` over the measured window / writes) as JSON. Run with the tree under
test first on PYTHONPATH.

    python docs/perf/client/drive.py PORT [--clients 64] [--connections 4] [--duration 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from contextlib import AsyncExitStack

import trio

import univrs
from univrs.bench.latency import Histogram
from univrs.bench.measure import closed_loops
from univrs.bench.workers import load_ops
from univrs.client.client import open_client
from univrs.server.heap import settle


async def main(args: argparse.Namespace) -> None:
    endpoints = [f"127.0.0.1:{args.port}"]
    keys = [f"bench-{i}" for i in range(args.clients)]
    write = load_ops(keys)["writes"]
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_client(endpoints, timeout=30))
            for _ in range(args.connections)
        ]
        out = []
        for _ in range(args.rounds):
            hist = Histogram()
            errors: list[str] = []
            now = trio.current_time()
            start, stop = now + args.warmup, now + args.warmup + args.duration
            cpu: list[float] = []

            async def mark(at: float, cpu: list[float] = cpu) -> None:
                await trio.sleep_until(at)
                cpu.append(time.process_time())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(mark, start)
                nursery.start_soon(mark, stop)
                nursery.start_soon(
                    closed_loops,
                    range(args.clients),
                    lambda i: clients[i % len(clients)],
                    write,
                    start,
                    stop,
                    hist,
                    errors,
                )
            assert not errors, errors[:3]
            out.append(
                {
                    "us_per_write": round((cpu[1] - cpu[0]) / hist.count * 1e6, 2),
                    "writes_s": round(hist.count / args.duration),
                    "p50_ms": round(hist.quantile_ms(0.5), 2),
                }
            )
        print(json.dumps({"tree": univrs.__file__, "rounds": out, "gc": gc.get_count()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    settle(())  # as the bench's process does (univrs/bench/client.py)
    trio.run(main, parser.parse_args())
