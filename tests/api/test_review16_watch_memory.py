"""s16-review: what one client's pipelined *watch polls* make a node hold (docs/security.md,
"Review of session 15's landing (s16-review)").

Reads are rendered only while their connection has answer-budget room (s15-budget, W1), but a
watch poll's answer was charged 128 bytes (``SMALL_ANSWER``) whatever it held, and a poll frees
its slot among the connection's 16 (``MAX_WATCHES``) once answered, not once written: a
client that pipelined polls from an old revision made the node hold one page of events per
poll, up to the 4,096 requests a connection may have in flight. Now a poll's answer is charged
its encoded bytes, so polls stop starting while the connection's answers are unread.
"""

from __future__ import annotations

import pathlib
import sys
import tracemalloc

import trio

from tests.api.helpers import create_workloads, open_cluster
from univrs.client import open_client

WORKLOADS = 200
ARG = "a" * 4000  # a workload of about 4 KB: a poll of their 200 creations is about 0.8 MB
REQUESTS = 96
BOUND = 40 * 1024 * 1024  # the budget (8 MiB) plus the polls that start together, with room

# The polling client runs in a process of its own, so that tracemalloc here sees the node
# only: it sends REQUESTS polls from one old revision in one frame and reads every answer.
CLIENT = """
import sys, trio
from trio_websocket import open_websocket_url
from univrs.client import protocol
from univrs.client.protocol import Request

async def main(port, n, start):
    answered = 0
    url = f"ws://127.0.0.1:{port}/client"
    async with open_websocket_url(url, max_message_size=2**30) as ws:
        await ws.send_message(protocol.encode_client_hello())
        await ws.get_message()
        args = {"from_revision": start, "limit": 1000, "kinds": "workloads"}
        # 16 polls a frame (a connection's MAX_WATCHES), a frame every 0.2 s, nothing read
        # until all are sent: what the node holds is every answer not yet written.
        for first in range(0, n, 16):
            ids = range(first + 1, first + 17)
            reqs = [Request(id=i, op="events.poll", args=args) for i in ids]
            await ws.send_message(protocol.encode_requests(reqs))
            await trio.sleep(0.2)
        codes = {}
        while answered < n:
            frame = await ws.get_message()
            for r in protocol.decode_responses(frame, max_size=2**30)[1]:
                answered += 1
                code = "ok" if "ok" in r else r["error"]["code"]
                if code == "ok":
                    assert len(r["ok"]["events"]) == 200, len(r["ok"]["events"])
                codes[code] = codes.get(code, 0) + 1
    print(codes.get("ok", 0), codes.get("unavailable", 0), sum(codes.values()))

trio.run(main, int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
"""


async def test_pipelined_watch_polls_are_held_in_bounded_memory(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        async with open_client([cluster.client_address(node)]) as client:
            page = await client.call("workload.list", {}, consistency="local")
            await create_workloads(client, WORKLOADS, ARG)
        tracemalloc.start()
        try:
            assert node.raft_port is not None
            argv = [sys.executable, "-c", CLIENT, str(node.raft_port), str(REQUESTS)]
            with trio.fail_after(120):
                done = await trio.run_process(
                    [*argv, str(page["revision"] + 1)], capture_stdout=True
                )
            ok, unavailable, answered = map(int, done.stdout.split())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # Each poll answered all 200 creations, or unavailable while the connection's 16 wait
        # for room (the client reads nothing until it sent them all): nothing else.
        assert answered == ok + unavailable == REQUESTS and ok >= 16, (ok, unavailable)
        assert peak < BOUND, f"peak {peak / 2**20:.0f} MiB for {REQUESTS} pipelined polls"
