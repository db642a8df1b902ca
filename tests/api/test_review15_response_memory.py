"""s15-review: what one client's *reads* make a node hold (docs/security.md, "Adversarial
review of session 15 (s15-review)", finding W1).

Request frames are bounded in bytes, items and decoded memory, and a connection in requests
in flight (4096), but not the responses those requests build: every request of a frame
executes at once and its result is held until it is sent. A page of ``workload.list`` holds
up to 1,000 workloads whatever their size, so one connection that pipelines list requests
makes the node hold a page per request: on a real 3-node cluster a 10 KB frame of 256 list
requests (pages of 1.4 MB) took a node from 165 MB to 1.78 GB RSS, and the 4,096 a
connection may have in flight would take ~28 GB (any caller with the `read` role; anyone
without auth).
"""

from __future__ import annotations

import pathlib
import sys
import tracemalloc

import trio

from tests.api.helpers import create_workloads, open_cluster
from univrs.client import open_client

WORKLOADS = 200
ARG = "a" * 4000  # a workload of about 4 KB: a page of 200 is about 0.8 MB
REQUESTS = 48
BOUND = 32 * 1024 * 1024  # what the reads may make the node hold at once (one page: ~5 MB)


# The attacking client runs in a process of its own, so that tracemalloc here sees the node
# only: it sends REQUESTS list requests in one frame on one connection and reads every answer.
CLIENT = """
import sys, trio
from trio_websocket import open_websocket_url
from univrs.client import protocol
from univrs.client.protocol import Request

async def main(port, n):
    got = answered = 0
    url = f"ws://127.0.0.1:{port}/client"
    async with open_websocket_url(url, max_message_size=2**30) as ws:
        await ws.send_message(protocol.encode_client_hello())
        await ws.get_message()
        reqs = [
            Request(id=i + 1, op="workload.list", args={"limit": 1000}, consistency="local")
            for i in range(n)
        ]
        await ws.send_message(protocol.encode_requests(reqs))
        while answered < n:
            frame = await ws.get_message()
            got += len(frame)
            answered += len(protocol.decode_responses(frame, max_size=2**30)[1])
    print(got)

trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
"""


async def _pipelined_lists(port: int, n: int) -> int:
    """Run the attacking client against ``port``; the bytes of the answers it read."""
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, "-c", CLIENT, str(port), str(n)], capture_stdout=True
        )
    return int(done.stdout)


async def test_pipelined_list_pages_are_held_in_bounded_memory(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        async with open_client([cluster.client_address(node)]) as client:
            await create_workloads(client, WORKLOADS, ARG)
        tracemalloc.start()
        try:
            assert node.raft_port is not None
            got = await _pipelined_lists(node.raft_port, REQUESTS)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got > REQUESTS * WORKLOADS * len(ARG)  # every page was answered whole
        assert peak < BOUND, f"peak {peak / 2**20:.0f} MiB for {REQUESTS} pipelined pages"
