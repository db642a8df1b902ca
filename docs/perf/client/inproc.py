"""The client library's CPU per write in one process, without sockets (docs/performance.md,
"Round 19 (s19-client)"): the bench's 64 closed loops of minimal keyed scales
(univrs/bench/measure.py ``closed_loops``, univrs/bench/workers.py ``load_ops``) over 4
``Client``s, each on a ``Connection`` whose websocket is a fake: the connection's writer hands
it each request frame (``send_message``, as on TLS), and a ticker answers every request it
took every ``--tick`` seconds with one minimal-answer frame per connection, given to the
connection's frame tap (``Connection._take``, as trio-websocket's reader does). What is left
out is the socket and wsproto (the same code in both trees); the fake node's own work (a
cbor2 load and dump per frame) is counted, the same in both. Prints ``time.process_time`` per
write over each measured round as JSON. Run with the tree under test first on PYTHONPATH.

    python docs/perf/client/inproc.py [--rounds 5] [--duration 2] [--tick 0.005]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import cbor2
import trio

from univrs.bench.latency import Histogram
from univrs.bench.measure import closed_loops
from univrs.bench.workers import load_ops
from univrs.client.client import Client
from univrs.client.connection import Connection
from univrs.client.protocol import ServerHello
from univrs.server.heap import settle


class FakeNode:
    """One connection's node: takes request frames, answers them at the next tick."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.version = 0

    async def send_message(self, data: bytes) -> None:
        for req in cbor2.loads(data):
            self.version += 1
            if req["op"] == "session.open":
                ok: dict[str, Any] = {"client_id": f"c{self.version}-{id(self)}"}
                self.answers.append({"id": req["id"], "ok": ok})
            else:
                ok = {"id": req["args"]["id"], "version": self.version}
                self.answers.append({"id": req["id"], "ok": ok, "meta": {"index": self.version}})

    def flush(self, conn: Connection) -> None:
        if self.answers:
            frame = cbor2.dumps({"leader": "n1", "r": self.answers})
            self.answers = []
            assert conn._take(frame) is None


async def main(args: argparse.Namespace) -> None:
    hello = ServerHello(node="n1", leader="n1", members={}, minimal=True)
    keys = [f"bench-{i}" for i in range(args.clients)]
    write = load_ops(keys)["writes"]
    out = []
    async with trio.open_nursery() as nursery:
        pairs = []
        clients = []
        for _ in range(args.connections):
            node, conn = FakeNode(), Connection(address="fake:1", hello=hello)
            nursery.start_soon(conn._writer, node)
            nursery.start_soon(conn._expire)
            client = Client(endpoints=["fake:1"], nursery=nursery, timeout=30)
            client._conn = conn
            pairs.append((node, conn))
            clients.append(client)

        async def ticker() -> None:
            while True:
                await trio.sleep(args.tick)
                for node, conn in pairs:
                    node.flush(conn)

        nursery.start_soon(ticker)
        for _ in range(args.rounds):
            hist = Histogram()
            errors: list[str] = []
            now = trio.current_time()
            start, stop = now + args.warmup, now + args.warmup + args.duration
            cpu: list[float] = []

            async def mark(at: float, cpu: list[float] = cpu) -> None:
                await trio.sleep_until(at)
                cpu.append(time.process_time())

            async with trio.open_nursery() as inner:
                inner.start_soon(mark, start)
                inner.start_soon(mark, stop)
                inner.start_soon(
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
            out.append(round((cpu[1] - cpu[0]) / hist.count * 1e6, 2))
        nursery.cancel_scope.cancel()
    print(json.dumps({"us_per_write": out, "writes_s": round(hist.count / args.duration)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--tick", type=float, default=0.005)
    settle(())  # as the bench's process does (univrs/bench/client.py)
    trio.run(main, parser.parse_args())
