"""CPU per batch of a follower's append path, outside the state machine's apply (session 30,
slice hb).

At 64 clients the leader sends each follower, per batch, one AppendEntries carrying one batch
entry (about 60 keyed ``workload.scale`` commands, ~13 KB) and then a commit notice (a
Heartbeat with ctx ``COMMIT_NOTICE_CTX``). This runs a real follower ``RaftRuntime`` (a real
``RaftNode``, a real ``LogStore`` on LMDB with sync forced off so that the CPU is timed, not the
disk, ``NodeMetrics``) in one Trio loop, and feeds it the leader's frames as its transport's
direct path does: each frame's bytes go through ``_Reading.take`` (decode, sender checks,
``_accept_message``, ``Inbox.leave``: the append is stepped inline, its write runs on the loop,
its ack is encoded), then the commit notice (stepped by the driver's task). The state
machine's apply is stubbed out (``Applier._apply_one`` only records the index): that is
another slice. The websocket's own read of the frame (unmasking, wsfast) is timed apart.

Prints the median CPU microseconds per batch (``time.process_time``) over ``--rounds`` runs of
``--batches`` batches, and of the stages alone: the frame's decode, the LogStore write and the
ack's encode. ``--profile FILE`` writes a cProfile of one run.

    PYTHONPATH=<tree> .venv/bin/python scripts/bench_follower_append.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from typing import Any

import trio

from univrs.bench.raft_setup import (
    Sink,
    ack,
    digest_run,
    idle,
    lmdb_without_sync,
    new_log,
    new_runtime,
    profiled,
    reading_for,
    stub_apply,
)
from univrs.codec import decode_frame, encode_message
from univrs.net import wsfast
from univrs.net.settings import TransportSettings
from univrs.raft import RaftNode
from univrs.raft.messages import COMMIT_NOTICE_CTX, AppendEntries, Entry, EntryKind, Heartbeat
from univrs.runtime.writer import StorageWriter
from univrs.storage.log_store import LogStore

LEADER, FOLLOWER = "n1", "n2"
TERM = 2
ATTESTED = "3f9c2a7e-n1"  # the incarnation the leader's hello named


def entry_data(commands: int, at_least: int = 0) -> bytes:
    """A batch entry as the leader builds it: ``commands`` keyed scale writes (their session
    ids made longer until the entry takes ``at_least`` bytes: the apply is not run, only the
    size matters here)."""
    from univrs.bench.sm_setup import keyed_scales
    from univrs.runtime.payload import batch_payload, encode_payload_doc

    pad = 24
    while True:
        clients = [f"bench-client-{i:04d}-{'x' * pad}" for i in range(64)]
        envelopes = keyed_scales(clients, commands, workloads=16)
        docs, payloads = [], []
        for envelope in envelopes:
            payload, doc = encode_payload_doc(envelope, 1_700_000_000_000)
            assert doc is not None
            docs.append(doc)
            payloads.append(payload)
        data = batch_payload(docs, payloads)[0]
        if len(data) >= at_least:
            return data
        pad += 8


def frames(first: int, batches: int, data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for index in range(first, first + batches):
        ae = AppendEntries(
            term=TERM,
            src=LEADER,
            dst=FOLLOWER,
            prev_log_index=index - 1,
            prev_log_term=TERM if index > 2 else 1,
            entries=(Entry(term=TERM, index=index, kind=EntryKind.NORMAL, data=data),),
            commit=index - 1,
        )
        cn = Heartbeat(term=TERM, src=LEADER, dst=FOLLOWER, commit=index, ctx=COMMIT_NOTICE_CTX)
        out.append((encode_message(ae), encode_message(cn)))
    return out


async def run(batches: int, rounds: int, data: bytes, profile: str | None) -> list[float]:
    sink = Sink()
    runtime, store = new_runtime(FOLLOWER, sink)
    results = []
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        # (this module's decode_frame, looked up now: ``--split`` wraps it)
        reading = reading_for(runtime, FOLLOWER, LEADER, TERM, ATTESTED, decode_frame)
        nxt = 2
        for r in range(rounds + 1):  # the first round warms up
            todo = frames(nxt, batches, data)
            nxt += batches
            await idle(runtime)
            with profiled(profile if r == rounds else None):
                start = time.process_time()
                for ae, cn in todo:
                    assert reading.take(ae) is None
                    await idle(runtime)
                    assert reading.take(cn) is None
                    await idle(runtime)
                spent = time.process_time() - start
            if r:
                results.append(spent / batches * 1e6)
            assert runtime.core.status().commit == nxt - 1, runtime.core.status()
            assert len(sink.sent) == nxt - 2, len(sink.sent)
        nursery.cancel_scope.cancel()
    digest_run(DIGEST, sink, store)  # the acks as encoded for the wire, the log
    return results


DIGEST = hashlib.sha256()  # of what a run wrote to the log and sent (``run``)


def stages(data: bytes, n: int) -> dict[str, float]:
    """The stages alone, per batch: the append frame's decode, its unmasking by wsfast, the
    log write (LogStore.append_nowait, sync off), the ack's encode."""
    (ae, _cn), *_ = frames(5, 1, data)
    out: dict[str, float] = {}
    t = time.process_time()
    for _ in range(n):
        decode_frame(ae, max_size=TransportSettings().max_payload_size)
    out["decode"] = (time.process_time() - t) / n * 1e6
    key = b"\x01\x02\x03\x04"
    t = time.process_time()
    for _ in range(n):
        wsfast._mask(key, ae)
    out["unmask"] = (time.process_time() - t) / n * 1e6
    answer = ack(TERM, FOLLOWER, LEADER, 5)
    t = time.process_time()
    for _ in range(n):
        encode_message(answer)
    out["ack_encode"] = (time.process_time() - t) / n * 1e6
    store, _ = new_log(FOLLOWER)
    with store:
        t = time.process_time()
        for i in range(2, n + 2):
            store.append_nowait(
                hard_state=None,
                truncate_from=None,
                entries=(Entry(term=TERM, index=i, kind=EntryKind.NORMAL, data=data),),
            )
        out["log_write"] = (time.process_time() - t) / n * 1e6
    return out


def split_stages() -> dict[str, list[float]]:
    """Wrap the stages of the path with timers (``--split``; wall time): the frame's decode, the
    core's step, the Ready's ``ready()``, the log write and the ack's encode; what is left
    of a batch is the runtime's glue (the inline step, the interpreter, the writer, trio)."""
    spent: dict[str, list[float]] = {}

    def timed(owner: Any, name: str, stage: str) -> None:
        fn = getattr(owner, name)
        box = spent.setdefault(stage, [0.0])
        clock = time.perf_counter  # (cheap; process_time costs a system call)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                box[0] += clock() - t

        setattr(owner, name, wrapper)

    global decode_frame
    holder: Any = type("H", (), {"decode_frame": staticmethod(decode_frame)})
    timed(holder, "decode_frame", "decode")
    decode_frame = holder.decode_frame
    timed(RaftNode, "step", "core_step")
    timed(RaftNode, "ready", "core_ready")
    timed(LogStore, "append_nowait", "log_write")
    timed(Sink, "send_now", "ack_encode")
    timed(StorageWriter, "submit", "writer_submit")
    return spent


def derived(us: dict[str, float], batch: float) -> dict[str, float]:
    """The stages of ``split_stages`` as parts of a batch: the frames' decode, the core's
    steps and Readies, the writes (the log store's call, the ack's encode and the writer's
    own work: the write queue, the completion), and the rest (the frames' checks and
    attestation, the driver's steps around the core wherever they run, trio's scheduling, the
    apply loop with the apply stubbed, this harness's waits)."""
    write = us["writer_submit"]
    named = {
        "decode": us["decode"],
        "core_step": us["core_step"],
        "core_ready": us["core_ready"],
        "log_write": us["log_write"],
        "ack_encode": us["ack_encode"],
        "writer_rest": write - us["log_write"] - us["ack_encode"],
    }
    named["rest"] = batch - sum(named.values())
    return named


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--commands", type=int, default=60)
    ap.add_argument("--entry-bytes", type=int, default=0, help="pad the entry to this size")
    ap.add_argument("--profile")
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--split", action="store_true", help="time the stages (wrapped)")
    args = ap.parse_args()
    lmdb_without_sync()  # the CPU, not the disk (the write path is the same code)
    stub_apply()
    data = entry_data(args.commands, args.entry_bytes)
    spent = split_stages() if args.split else None
    results = trio.run(run, args.batches, args.rounds, data, args.profile)
    line: dict[str, Any] = {
        "batch_us": round(statistics.median(results), 2),
        "runs": [round(x, 1) for x in results],
        "entry_bytes": len(data),
        "digest": DIGEST.hexdigest()[:16],  # the same in every tree: same bytes, same acks
    }
    if spent is not None:
        total = args.batches * (args.rounds + 1)
        us = {k: v[0] / total * 1e6 for k, v in spent.items()}
        line["split_us"] = {
            k: round(v, 2) for k, v in derived(us, statistics.mean(results)).items()
        }
    if args.stages:
        line.update({k: round(v, 2) for k, v in stages(data, 2000).items()})
    print(json.dumps(line))


if __name__ == "__main__":
    main()
