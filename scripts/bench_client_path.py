"""CPU per write on the leader's fast client protocol path, in one process (docs/performance.md,
"Round 9 (session 10): the leader's client path").

A one-node cluster runs in this process (fsync on, ``--backend``). ``--connections`` fast-protocol
connections are served by the node's own code (``univrs.api.fast._ClientConnection``: its reader,
its frame tasks, ``ApiService.execute_many``, ``RaftStateStore.submit_many``, its response
writer) over a stand-in websocket that hands it pre-encoded request frames and counts the
response frames. Each connection sends ``--frame`` keyed ``workload.scale`` requests per frame
(one per client, each client its own session and sequence numbers, as the bench's closed-loop
clients do: 64 clients over 4 connections send frames of about 16), the next frame once every
response of the last one was sent. Client work (encoding requests, decoding responses) is done
outside the timed part.

``--proposer stub`` (the default) isolates the client path: the runtime's inbox is replaced by a
stand-in that fills each proposal's waiter with a ``Success`` from a task of its own (as the apply
loop fills them), so what is timed is the protocol, the service, the store, the runtime's
``propose_together`` (encoding each entry) and the rendering of the answers, without Raft, the
log writer or the state machine. ``--proposer real`` runs the whole node (everything one node
does per write, for context).

Prints the median CPU microseconds per write (process CPU: user + system) over ``--repeats``
runs and one JSON line. ``--ingress`` also times the ingress alone, per write: the frame's
decode (``protocol.decode_requests``) and its start (``_ClientConnection._start_inline``: the
checks, the build and the hand-off to the runtime), each call timed with ``time.process_time``
(s18-ingress).

    .venv/bin/python scripts/bench_client_path.py [--proposer stub|real] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from univrs import codec
from univrs.api import fast
from univrs.api.budget import AnswerBudget
from univrs.api.service import ApiService
from univrs.client import protocol
from univrs.config import NodeConfig
from univrs.raft.ready import Role
from univrs.runtime.events import ProposeMany
from univrs.server.node import Node, run_node
from univrs.sm.responses import Success
from univrs.tools.devcluster import free_ports  # type: ignore[attr-defined]

try:
    from univrs.client.wire import Wire
except ImportError:  # an export before s16-api
    Wire = None  # type: ignore[assignment,misc]

SPEC = {"name": "web", "image": "nginx:1.27", "replicas": 2, "labels": {"tier": "web"}}


class StubInbox:
    """Stands in for the runtime's inbox sender: proposals are answered ``Success`` by a task of
    its own (as the apply loop answers them), without Raft; other events (the node's own
    calls) go to the driver."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.pending: list[Any] = []
        self.wake = trio.Event()
        self.version = 1 << 30

    async def send(self, event: object) -> None:
        if not isinstance(event, ProposeMany):
            await self.inner.send(event)
            return
        self.send_nowait(event)
        await trio.lowlevel.cancel_shielded_checkpoint()  # as a memory channel's send does

    def send_nowait(self, event: object) -> None:
        if not isinstance(event, ProposeMany):
            self.inner.send_nowait(event)
            return
        self.pending.extend(event.proposals)
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            pending, self.pending = self.pending, []
            for proposal in pending:
                self.version += 1
                proposal.waiter.set(Success(version=self.version))


class FakeSocket:
    """The websocket of one connection: request frames in, response frames counted (and kept,
    decoded after the timed part)."""

    def __init__(self) -> None:
        self.send_in, self.receive_in = trio.open_memory_channel[bytes](1)
        self.sent: list[bytes] = []
        self.answered = trio.Event()

    async def get_message(self) -> bytes:
        return await self.receive_in.receive()

    async def send_message(self, data: bytes) -> None:
        self.sent.append(data)
        self.answered.set()


class IngressClock:
    """Process CPU seconds spent in the ingress functions (``--ingress``)."""

    def __init__(self) -> None:
        self.decode = 0.0
        self.start = 0.0

    def install(self) -> None:
        clock = time.process_time
        decode, start_inline = protocol.decode_requests, fast._ClientConnection._start_inline

        def timed_decode(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return decode(*args, **kwargs)
            finally:
                self.decode += clock() - t0

        def timed_start(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return start_inline(*args, **kwargs)
            finally:
                self.start += clock() - t0

        protocol.decode_requests = timed_decode
        fast._ClientConnection._start_inline = timed_start  # type: ignore[method-assign]


def frames(conn: int, rounds: int, per_frame: int, sessions: list[str], seq0: int) -> list[bytes]:
    """One connection's request frames: round r carries seq seq0+r+1 of each of its clients."""
    out = []
    for r in range(rounds):
        requests = []
        for j in range(per_frame):
            client = conn * per_frame + j
            requests.append(
                {
                    "id": r * per_frame + j,
                    "op": "workload.scale",
                    "args": {"id": f"bench-{client}", "replicas": (r + j) % 10},
                    "key": [sessions[client], seq0 + r + 1],
                    "timeout_ms": 30000,
                }
            )
        out.append(codec.encode_plain(requests))
    return out


async def drive(conn: fast._ClientConnection, ws: FakeSocket, frames: list[bytes]) -> None:
    """Send each frame once every response to the previous one was sent."""
    for frame in frames:
        ws.answered = trio.Event()
        await ws.send_in.send(frame)
        while True:
            await ws.answered.wait()
            ws.answered = trio.Event()
            if conn._in_flight == 0:
                break


async def start_leader(nursery: trio.Nursery, data_dir: Path, **config: Any) -> Node:
    """A one-node cluster's node (its data in ``data_dir``, ``config``: more of its
    ``NodeConfig``) run in ``nursery``, once it leads."""
    raft_port, api_port = free_ports(2)
    node: Node = await nursery.start(
        run_node,
        NodeConfig(
            node_id="n1",
            data_dir=data_dir,
            raft_addr=f"127.0.0.1:{raft_port}",
            api_addr=f"127.0.0.1:{api_port}",
            reconcile_resync_ms=0,
            **config,
        ),
    )
    with trio.fail_after(30):
        while node.status().role is not Role.LEADER:
            await trio.sleep(0.01)
    return node


async def setup(node: Node, service: ApiService, clients: int) -> list[str]:
    """``clients`` sessions and workloads bench-0.., through the real proposer."""
    sessions = []
    for _ in range(clients):
        opened, _ = await service.execute("session.open", {})
        sessions.append(opened["client_id"])
    for i in range(clients):
        await service.execute("workload.create", {"id": f"bench-{i}", "spec": SPEC})
    return sessions


async def run_once(
    node: Node, service: ApiService, sessions: list[str], args: argparse.Namespace, seq0: int
) -> tuple[float, int, int]:
    """(CPU seconds, writes, error responses) of one run."""
    per = args.frame
    rounds = args.writes // (args.connections * per)
    all_frames = [frames(c, rounds, per, sessions, seq0) for c in range(args.connections)]
    sockets = [FakeSocket() for _ in range(args.connections)]
    gc.collect()
    async with trio.open_nursery() as nursery:
        conns = []
        for ws in sockets:
            # The connection's fields as the code under test has them (an export of an older
            # main has no answer budget, one before s16-api no ``wire``).
            fields = attrs.fields_dict(fast._ClientConnection)
            extra: dict[str, Any] = {}
            if "budget" in fields:
                extra["budget"] = AnswerBudget(service.answer_pool)
            if "wire" in fields:
                extra["wire"] = Wire(ws)  # type: ignore[arg-type]
            conn = fast._ClientConnection(
                ws=ws,  # type: ignore[arg-type]
                service=service,
                remote="bench",
                scope=nursery.cancel_scope,
                host="127.0.0.1",
                **extra,
            )
            nursery.start_soon(conn.write_responses)
            nursery.start_soon(conn.read_requests, nursery)
            conns.append(conn)
        profiler = args.profiler
        clock = args.clock
        if clock is not None:
            clock.decode = clock.start = 0.0
        start = time.process_time()
        if profiler is not None:
            profiler.enable()
        async with trio.open_nursery() as clients:
            for conn, ws, fr in zip(conns, sockets, all_frames, strict=True):
                clients.start_soon(drive, conn, ws, fr)
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - start
        nursery.cancel_scope.cancel()
    errors = 0
    writes = 0
    for ws in sockets:
        for data in ws.sent:
            _, responses = protocol.decode_responses(data)
            writes += len(responses)
            errors += sum(1 for r in responses if "error" in r)
            if errors and not args.quiet_errors:
                bad = next(r for r in responses if "error" in r)
                print(f"error response: {bad}", file=sys.stderr)
                args.quiet_errors = True
    return cpu, writes, errors


async def main(args: argparse.Namespace) -> dict[str, Any]:
    clients = args.connections * args.frame
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            node = await start_leader(nursery, Path(tmp) / "n1", state_backend=args.backend)
            service = ApiService(node.store)
            sessions = await setup(node, service, clients)
            real = node.runtime.inbox.sender
            stub = StubInbox(real)
            if args.proposer == "stub":
                node.runtime.inbox.sender = stub  # type: ignore[assignment]
                nursery.start_soon(stub.run)
            per_write: list[float] = []
            decodes: list[float] = []
            starts: list[float] = []
            seq0 = 0
            rounds = args.writes // (args.connections * args.frame)
            for _ in range(args.repeats):
                cpu, writes, errors = await run_once(node, service, sessions, args, seq0)
                seq0 += rounds
                if errors:
                    raise SystemExit(f"{errors} of {writes} writes answered with an error")
                per_write.append(cpu / writes * 1e6)
                if args.clock is not None:
                    decodes.append(args.clock.decode / writes * 1e6)
                    starts.append(args.clock.start / writes * 1e6)
            node.runtime.inbox.sender = real
            nursery.cancel_scope.cancel()
    result: dict[str, Any] = {
        "proposer": args.proposer,
        "backend": args.backend,
        "connections": args.connections,
        "frame": args.frame,
        "writes": rounds * args.connections * args.frame,
        "us_per_write": [round(x, 1) for x in per_write],
        "median_us_per_write": round(statistics.median(per_write), 1),
    }
    if decodes:
        result["decode_us_per_write"] = [round(x, 2) for x in decodes]
        result["start_us_per_write"] = [round(x, 2) for x in starts]
        result["median_ingress_us_per_write"] = round(
            statistics.median(d + s for d, s in zip(decodes, starts, strict=True)), 2
        )
    return result


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proposer", choices=("stub", "real"), default="stub")
    parser.add_argument("--backend", choices=("lmdb", "memory"), default="lmdb")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--frame", type=int, default=16, help="requests per frame (16)")
    parser.add_argument("--writes", type=int, default=20000, help="writes per run (20000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", help="write a cProfile of the timed parts to this file")
    parser.add_argument(
        "--ingress", action="store_true", help="also time the frame's decode and start, per write"
    )
    args = parser.parse_args()
    args.clock = None
    if args.ingress:
        args.clock = IngressClock()
        args.clock.install()
    args.quiet_errors = False
    args.profiler = None
    if args.profile:
        import cProfile

        args.profiler = cProfile.Profile()
    return args


if __name__ == "__main__":
    options = parse()
    logging.disable(logging.INFO)  # the node's start and stop lines
    result = trio.run(main, options)
    if options.profiler is not None:
        options.profiler.dump_stats(options.profile)
    runs = result["us_per_write"]
    print(
        f"{result['proposer']} proposer, {result['backend']}: "
        f"{result['median_us_per_write']} µs CPU per write (median of {len(runs)}: {runs})"
    )
    if "median_ingress_us_per_write" in result:
        print(
            f"ingress (decode + start): {result['median_ingress_us_per_write']} µs CPU per write "
            f"(decode {result['decode_us_per_write']}, start {result['start_us_per_write']})"
        )
    print(json.dumps(result))
