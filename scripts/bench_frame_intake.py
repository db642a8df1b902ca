"""CPU per client frame taken in by a leader (session 30): ``_ClientConnection._take`` for one
frame of 16 keyed ``workload.scale`` writes with ``answer: "minimal"`` and a timeout of its own
each, as the Go load generator (univrs/bench/univrs_loadgen) sends them at 64 clients: the
decode, the checks, the build, the payload encoding and the hand-off to the runtime.

A one-node leader runs in this process; the runtime's inbox is replaced by
scripts/bench_client_path.py's ``StubInbox`` (no Raft) and ``reader_steps`` is off, so the
inline step of the proposals is excluded. Only the ``_take`` calls are timed
(``time.process_time`` around each); the answers are drained untimed. Prints the median µs of
CPU per frame over ``REPS`` runs of ``FRAMES`` frames (run it with PYTHONPATH at a copy of
older code for A/B runs); ``PROF=tottime`` (or ``cumtime``): cProfile it. ``SLICE=1`` (session
31) also times two slices of ``_take`` alone, per frame, over the same frames: the decode
(``protocol.decode_requests``) and the writes' build (``WriteBuilder.build`` of a recorded
frame's 16 calls, its arguments, key and answer as ``_check_frame`` passes them).

    PYTHONPATH=. .venv/bin/python scripts/bench_frame_intake.py
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import bench_client_path as bcp  # type: ignore[import-not-found]  # (scripts/: sys.path[0])
import trio

from univrs import codec
from univrs.api import fast
from univrs.api.budget import AnswerBudget
from univrs.api.building import WriteBuilder
from univrs.api.service import ApiService
from univrs.client import protocol
from univrs.client.wire import Wire
from univrs.server.node import Node

PER = 16
FRAMES = int(os.environ.get("FRAMES", "1500"))


def frames(rounds: int, sessions: list[str], seq0: int) -> list[bytes]:
    out = []
    for r in range(rounds):
        reqs = []
        for j in range(PER):
            reqs.append(
                {
                    "id": r * PER + j + 1,
                    "op": "workload.scale",
                    "args": {"id": f"bench-{j}", "replicas": (r + j) % 10},
                    "key": [sessions[j], seq0 + r + 1],
                    "timeout_ms": 29000 + j,
                    "answer": "minimal",
                }
            )
        out.append(codec.encode_plain(reqs))
    return out


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            node: Node = await bcp.start_leader(nursery, Path(tmp) / "n1")
            service = ApiService(node.store)
            sessions = await bcp.setup(node, service, PER)
            stub = bcp.StubInbox(node.runtime.inbox.sender)
            node.runtime.inbox.sender = stub
            node.runtime.reader_steps = False
            nursery.start_soon(stub.run)
            ws = bcp.FakeSocket()
            conn = fast._ClientConnection(
                ws=ws,
                service=service,
                remote="bench",
                scope=nursery.cancel_scope,
                host="127.0.0.1",
                budget=AnswerBudget(service.answer_pool),
                wire=Wire(ws),
            )
            conn.max_size = node.config.max_payload_size
            nursery.start_soon(conn.write_responses)
            seq0 = 0
            per: list[float] = []
            prof = cProfile.Profile() if os.environ.get("PROF") else None
            for _ in range(int(os.environ.get("REPS", "3"))):
                fr = frames(FRAMES, sessions, seq0)
                seq0 += FRAMES
                gc.collect()
                tot = 0.0
                clock = time.process_time
                for f in fr:
                    if prof:
                        prof.enable()
                    t0 = clock()
                    r = conn._take(f, nursery)
                    tot += clock() - t0
                    if prof:
                        prof.disable()
                    assert r is None, r
                    while conn._in_flight:
                        await trio.sleep(0)
                per.append(tot / FRAMES * 1e6)
            if os.environ.get("SLICE"):
                slices = await _slices(conn, nursery, sessions, seq0 + FRAMES)
            nursery.cancel_scope.cancel()
    errs = sum(1 for d in ws.sent if b"error" in d)
    print(
        f"{statistics.median(per):.1f} us/frame {[round(x, 1) for x in per]} errs={errs}",
        flush=True,
    )
    if os.environ.get("SLICE"):
        for name, runs in slices.items():
            print(f"  {name}: {statistics.median(runs):.1f} us/frame {[round(x, 1) for x in runs]}")
    if prof:
        pstats.Stats(prof).sort_stats(os.environ["PROF"]).print_stats(40)


async def _slices(
    conn: fast._ClientConnection, nursery: trio.Nursery, sessions: list[str], seq0: int
) -> dict[str, list[float]]:
    """CPU per frame of the decode and of the writes' build alone (``SLICE=1``), medians over
    ``REPS`` runs of ``FRAMES`` frames (the build: one recorded frame's calls, ``FRAMES``
    times over)."""
    calls: list[tuple[WriteBuilder, tuple[object, ...]]] = []
    build = WriteBuilder.build

    def spy(self: WriteBuilder, *args: object) -> object:
        calls.append((self, args))
        return build(self, *args)  # type: ignore[arg-type]

    WriteBuilder.build = spy  # type: ignore[method-assign,assignment]
    try:
        assert conn._take(frames(1, sessions, seq0)[0], nursery) is None
    finally:
        WriteBuilder.build = build  # type: ignore[method-assign]
    while conn._in_flight:
        await trio.sleep(0)
    assert len(calls) == PER, len(calls)
    fr = frames(FRAMES, sessions, seq0 + 1)
    decode, max_size, clock = protocol.decode_requests, conn.max_size, time.process_time
    out: dict[str, list[float]] = {"decode_requests": [], "WriteBuilder.build": []}
    for _ in range(int(os.environ.get("REPS", "3"))):
        gc.collect()
        t0 = clock()
        for f in fr:
            decode(f, max_size=max_size)
        out["decode_requests"].append((clock() - t0) / FRAMES * 1e6)
        t0 = clock()
        for _ in range(FRAMES):
            for builder, args in calls:
                builder.build(*args)  # type: ignore[arg-type]
        out["WriteBuilder.build"].append((clock() - t0) / FRAMES * 1e6)
    return out


trio.run(main)
