"""CPU and trio task steps per raft round trip over two transports' links, in one process.

Node a sends node b an AppendEntries (ENTRIES entries of SIZE bytes, one frame), b's stand-in
driver answers with an AppendEntriesResponse (one frame back), ROUNDS times, one at a time:
what one replicated write costs the links at one client, with nothing else running. Only the
public RaftTransport API and the real codec over real sockets on 127.0.0.1, so it runs against
any checkout (interleave them: `for r in base branch; do $r/.venv/bin/python frame_cost.py;
done`). Prints CPU (process_time) and wall time per round trip, and task steps per round
trip by task kind.

usage: python frame_cost.py [ROUNDS [ENTRIES [SIZE]]]
"""

from __future__ import annotations

import collections
import random
import statistics
import sys
import time

import trio

from univrs.net.settings import TransportSettings
from univrs.net.transport import RaftTransport, open_transport
from univrs.raft.messages import AppendEntries, AppendEntriesResponse, Entry

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
ENTRIES = int(sys.argv[2]) if len(sys.argv) > 2 else 1
SIZE = int(sys.argv[3]) if len(sys.argv) > 3 else 300
QUIET = TransportSettings(ping_interval=600.0, ping_timeout=600.0)


class Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps: collections.Counter[str] = collections.Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        name = task.name.rsplit(".", 1)[-1]
        self.steps[name] += 1


async def main() -> None:
    a_send, a_inbox = trio.open_memory_channel[object](4096)
    b_send, b_inbox = trio.open_memory_channel[object](4096)
    a = RaftTransport(
        node_id="a", cluster_id="c", inbox=a_send, rng=random.Random(1), settings=QUIET
    )
    b = RaftTransport(
        node_id="b", cluster_id="c", inbox=b_send, rng=random.Random(2), settings=QUIET
    )
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": f"127.0.0.1:{b.listen_port}"})
        b.set_peer_addresses({"a": f"127.0.0.1:{a.listen_port}"})

        async def answer() -> None:
            async for msg in b_inbox:
                assert isinstance(msg, AppendEntries)
                b.send(
                    AppendEntriesResponse(
                        term=1,
                        src="b",
                        dst="a",
                        success=True,
                        index=msg.prev_log_index + len(msg.entries),
                    )
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)

            async def round_trip(i: int) -> None:
                entries = tuple(
                    Entry(term=1, index=i * ENTRIES + k + 1, data=b"x" * SIZE)
                    for k in range(ENTRIES)
                )
                a.send(
                    AppendEntries(
                        term=1,
                        src="a",
                        dst="b",
                        prev_log_index=i * ENTRIES,
                        prev_log_term=1,
                        entries=entries,
                        commit=0,
                    )
                )
                await a_inbox.receive()

            for i in range(200):  # warm up: both links up, caches warm
                await round_trip(i)
            counter = Steps()
            trio.lowlevel.add_instrument(counter)
            walls = []
            cpu0 = time.process_time()
            for i in range(200, 200 + ROUNDS):
                t0 = time.perf_counter()
                await round_trip(i)
                walls.append(time.perf_counter() - t0)
            cpu = time.process_time() - cpu0
            trio.lowlevel.remove_instrument(counter)
            nursery.cancel_scope.cancel()
    steps = sum(counter.steps.values()) / ROUNDS
    kinds = ", ".join(f"{k} {v / ROUNDS:.2f}" for k, v in counter.steps.most_common(6))
    print(
        f"{ROUNDS} round trips of {ENTRIES}x{SIZE} B: CPU {cpu / ROUNDS * 1e6:.1f} us, wall p50 "
        f"{statistics.median(walls) * 1e6:.0f} us, {steps:.2f} steps ({kinds})"
    )


trio.run(main)
