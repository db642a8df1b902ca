"""In-process CPU of a leader answering a client frame of applied writes (the fast protocol):
from the filled waiters to the frame's bytes on the socket (session 31).

A connection (univrs/api/fast.py ``_ClientConnection``) over a socketpair, its writer task
running as on a node: each frame's writes (``workload.scale``, ``"answer": "minimal"`` by
default, as the bench's Go load generator asks) are built and proposed together
(``FrameWrites.propose_now``) to a stand-in runtime, their waiters filled as the apply fills
them, and the writer settles them (``FrameWait.settle``: the render), queues the answers
(``_answered``), encodes the frame (``response_frames``, ``protocol.encode_responses``) and
writes it (``Wire.write_now``). Timed: the thread CPU of the writer task's steps per frame
(a trio instrument), median and mean over the frames after the first tenth. ``--check`` adds
failed writes and expired ones and times nothing: its digest of every byte the client
received compares two versions of the code byte for byte (run it under each with
``PYTHONPATH``). ``--random`` draws request ids and versions over every size (else sequential
request ids, 7-digit versions and ids ``bench-N``, as the bench's).

    PYTHONPATH=. .venv/bin/python scripts/bench_write_answers.py [--frames 3000] [--seed 1]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import socket
import statistics
import time
from typing import Any

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream, wrap_server_stream

from univrs.api import fast
from univrs.api.answers import WorkloadAnswers
from univrs.api.auth import Caller
from univrs.api.batcher import FrameWrites
from univrs.api.budget import AnswerBudget
from univrs.api.building import WriteBuilder
from univrs.api.metrics import ApiMetrics
from univrs.api.ops import HANDLERS
from univrs.api.service import ApiService, Job
from univrs.api.writes import Submission
from univrs.client.protocol import Request, decode_responses
from univrs.client.wire import Wire
from univrs.metrics import Registry
from univrs.runtime.waiter import Waiter
from univrs.sm.responses import Failure, Success

OP = HANDLERS["workload.scale"]


class _Status:
    leader = "n1"


class _View:
    def last_status(self) -> _Status:
        return _Status()


class _Runtime:
    """The node's runtime as the writes' path uses it: proposals get waiters, filled here."""

    def __init__(self) -> None:
        self.view = _View()
        self.sm: Any = None  # (the minimal answers read no state)
        self.pending: list[Waiter[Any]] = []

    def at_apply_end(self, fn: Any) -> bool:
        return False  # the writer answers (the path at many clients)

    def propose_together_nowait(self, envelopes: list[Any]) -> tuple[list[Waiter[Any]], None]:
        self.pending = [Waiter() for _ in envelopes]
        return self.pending, None


class _Node:
    def __init__(self) -> None:
        self.runtime = _Runtime()


class _Store:
    def __init__(self) -> None:
        self.node = _Node()
        self.metrics = ApiMetrics.register(
            Registry(),
            proposal_batches=lambda: 0,
            proposals=lambda: 0,
            read_confirmations=lambda: 0,
        )
        self.quota = None

    def check_quota(self, write: Any) -> None:
        pass


class _Timer(trio.abc.Instrument):
    """Thread CPU of one task's steps while ``on``."""

    def __init__(self, name: str) -> None:
        self.name, self.total, self.t0, self.on = name, 0, 0, False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on and task.name.endswith(self.name):
            self.t0 = time.thread_time_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on and task.name.endswith(self.name):
            self.total += time.thread_time_ns() - self.t0


async def _connected(nursery: trio.Nursery) -> tuple[WebSocketConnection, WebSocketConnection]:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    server_stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    client_stream = trio.SocketStream(trio.socket.from_stdlib_socket(b))
    out: dict[str, WebSocketConnection] = {}

    async def client() -> None:
        out["c"] = await wrap_client_stream(nursery, client_stream, "localhost", "/client")

    async def server() -> None:
        out["s"] = await (await wrap_server_stream(nursery, server_stream)).accept()

    async with trio.open_nursery() as both:
        both.start_soon(client)
        both.start_soon(server)
    return out["c"], out["s"]


async def run(args: argparse.Namespace) -> tuple[list[int], str]:
    rng = random.Random(args.seed)
    timer = _Timer("write_responses")
    trio.lowlevel.add_instrument(timer)
    digest = hashlib.sha256()
    store = _Store()
    service = ApiService(store=store)  # type: ignore[arg-type]
    frame_writes = FrameWrites(store)  # type: ignore[arg-type]
    answer = "minimal"
    per_frame: list[int] = []
    async with trio.open_nursery() as nursery:
        client, ws = await _connected(nursery)
        conn = fast._ClientConnection(
            ws=ws,
            service=service,
            remote="127.0.0.1:1",
            scope=nursery.cancel_scope,
            host="127.0.0.1",
            token=None,
            budget=AnswerBudget(service.answer_pool),
            wire=Wire(ws),
        )
        nursery.start_soon(conn.write_responses, name="write_responses")
        await trio.sleep(0)
        caller = Caller(token=None, address="127.0.0.1")
        runtime = store.node.runtime
        builder = WriteBuilder(
            store.node,  # type: ignore[arg-type]
            WorkloadAnswers(),
            OP,
            caller,
            "127.0.0.1",
            False,
            runtime.sm,
        )
        seq = 0
        for _ in range(args.frames):
            n = 16 if not args.check or rng.random() < 0.8 else rng.randint(1, 40)
            kind = rng.random() if args.check else 1.0  # check: some failures and expiries
            jobs, subs = [], []
            now = trio.current_time()
            deadline = now + (0.01 if kind < 0.1 else 5.0)  # 0.01: expires before filled
            for _ in range(n):
                seq += 1
                rid, wid = seq, f"bench-{rng.randrange(64)}"
                if args.random:
                    rid = rng.choice((seq, rng.randrange(1 << 63), rng.randrange(30)))
                    wid = f"w{rng.randrange(10 ** rng.randint(1, 6))}"
                key = ("c", seq)
                wargs = {"id": wid, "replicas": rng.randrange(5)}
                req = Request(rid, OP.name, wargs, key, None, None, 0, None, None, answer)
                job = Job(OP.name, wargs, key, None, None, 0, caller, req, answer, OP)
                job.deadline = deadline
                jobs.append(job)
                write = builder.build(wargs, key, True)
                subs.append(Submission(write, key, deadline, 0))
            answered, send = conn._recorded()
            done = service._writes_answered(jobs, now, send)
            wait = frame_writes.propose_now(subs, done, nursery.start_soon)
            assert wait is not None
            conn.inline.add(wait, jobs, answered)
            if kind < 0.1:
                await trio.sleep(0.02)
            timer.total, timer.on = 0, not args.check
            for waiter in runtime.pending if kind >= 0.1 else ():
                version = 3_000_000 + seq
                if args.random:
                    version = rng.randrange(1 << rng.choice((5, 20, 40)))
                if kind < 0.2 and rng.random() < 0.3:
                    waiter.set(Failure(code="not-found", message="workload not found"))  # type: ignore[arg-type]
                else:
                    waiter.set(Success(version=version))
            got = 0
            while got < n:
                message = await client.get_message()
                timer.on = False
                assert isinstance(message, bytes)
                digest.update(message)
                got += len(decode_responses(message)[1])
            per_frame.append(timer.total)
        nursery.cancel_scope.cancel()
    return per_frame[args.frames // 10 :], digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="failures, expiries; no timing")
    parser.add_argument("--random", action="store_true", help="ids and versions of any size")
    args = parser.parse_args()
    warm, digest = trio.run(run, args)
    median = statistics.median(warm) / 1000
    mean = statistics.fmean(warm) / 1000
    print(f"median_us={median:.2f} mean_us={mean:.2f} digest={digest}")


if __name__ == "__main__":
    main()
