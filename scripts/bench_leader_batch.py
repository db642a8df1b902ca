"""CPU per batch of a leader's Raft path, outside the client API and the state machine's apply
(session 30, slice he).

At 64 clients the leader proposes, per batch, one batch entry (about 60 keyed
``workload.scale`` commands, ~13 KB): the driver's step (``ProposalBatches.flush``, the core's
``propose_many``, the Ready, the writer's ``submit``, ``LogStore.append_nowait``, one
AppendEntries encoded per follower), then reads each follower's AppendEntriesResponse (two
per batch) on a transport reader (``_Reading.take``: decode, checks, the inline step, the
core's handling, the commit notices it sends). This runs a real leader ``RaftRuntime`` (a real
``RaftNode`` elected by the harness, a real ``LogStore`` on LMDB with sync forced off: the CPU,
not the disk) in one Trio loop. The transport is a sink that encodes each message as a link
does (``encode_message``); the state machine's apply is stubbed (another slice), and the
proposals are handed over as a client connection's reader does (``hold_proposals``,
``propose_together_nowait``, ``release_proposals``) with the payloads encoded beforehand (the
client API is another slice).

Prints the median CPU microseconds per batch (``time.process_time``) of the propose step and
of the two acks' reads, over ``--rounds`` runs of ``--batches`` batches, and a digest of the
log and of every frame sent (the same in every tree). ``--profile FILE``: a cProfile of one
run.

``--frames K`` (session 31): each batch's proposals come as K client frames while the open
batch gathers the proposers of the batch that applied before (at 64 clients the frames of a
batch arrive during that gather); prints CPU per batch (``node``: the frames' steps and every
task's steps but the harness's) and trio's task steps per batch. Timing decides how the frames
fall into batches there, so its digest may differ from run to run.

    PYTHONPATH=<tree> .venv/bin/python scripts/bench_leader_batch.py [--rounds 7]
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
    RecordingSink,
    ack,
    digest_run,
    idle,
    lmdb_without_sync,
    new_runtime,
    profiled,
    reading_for,
    stub_apply,
)
from univrs.codec import encode_message
from univrs.net.settings import TransportSettings
from univrs.raft.messages import AppendEntries, RequestVote, RequestVoteResponse
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.events import Propose, ProposeMany
from univrs.runtime.packing import Packing
from univrs.runtime.payload import encode_payload_doc
from univrs.runtime.waiter import Waiter

LEADER = "n1"
FOLLOWERS = ("n2", "n3")


def envelopes(commands: int, pad: int = 24) -> list[Any]:
    """``commands`` keyed scale writes of 64 clients (their ids ``pad`` bytes longer: 24 makes
    a ~6.8 KB batch entry of 60, 130 one of ~13 KB)."""
    from univrs.bench.sm_setup import keyed_scales

    clients = [f"bench-client-{i:04d}-{'x' * pad}" for i in range(64)]
    return keyed_scales(clients, commands, workloads=16)


async def elect(runtime: RaftRuntime, sink: RecordingSink) -> int:
    """Make n1 leader: campaign, grant its (pre-)votes, ack its first appends."""
    await runtime.call(lambda core: core.campaign())
    for _ in range(20):
        await idle(runtime)
        msgs, sink.msgs = sink.msgs, []
        for m in msgs:
            if isinstance(m, RequestVote):
                runtime.inbox.sender.send_nowait(
                    RequestVoteResponse(
                        term=m.term, src=m.dst, dst=LEADER, granted=True, pre_vote=m.pre_vote
                    )
                )
            elif isinstance(m, AppendEntries):
                last = m.entries[-1].index if m.entries else m.prev_log_index
                runtime.inbox.sender.send_nowait(ack(m.term, m.dst, LEADER, last))
    await idle(runtime)
    status = runtime.core.status()
    assert status.role.name == "LEADER" and status.commit == status.last_index, status
    sink.msgs.clear()
    return status.term


def acks(term: int, index: int) -> list[tuple[str, bytes]]:
    return [(f, encode_message(ack(term, f, LEADER, index))) for f in FOLLOWERS]


def proposals(runtime: RaftRuntime, envs: list[Any]) -> list[ProposeMany]:
    """The proposals of one batch, encoded beforehand (the client API's part)."""
    now = trio.current_time()
    batch = []
    for envelope in envs:
        payload, doc = encode_payload_doc(envelope, 1_700_000_000_000)
        batch.append(Propose(payload, Waiter(), now, doc))
    return [ProposeMany(batch)]


def _leader(sink: RecordingSink, **settings: Any) -> tuple[Any, Any]:
    """A leader's runtime on a fresh log (``new_runtime``), packing batches as a node whose
    members all apply them, owners kept."""
    runtime, store = new_runtime(
        LEADER,
        sink,
        packing=Packing.for_frames(
            enabled=True, max_payload_size=TransportSettings().max_payload_size
        ),
        **settings,
    )
    runtime._may_pack = lambda n: n >= 2  # type: ignore[assignment]  # every member applies them
    runtime._may_own = lambda: True  # type: ignore[assignment]
    return runtime, store


async def run(
    batches: int, rounds: int, envs: list[Any], profile: str | None
) -> dict[str, list[float]]:
    sink = RecordingSink()
    runtime, store = _leader(sink)
    out: dict[str, list[float]] = {"propose": [], "acks": [], "batch": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        term = await elect(runtime, sink)
        readers = {f: reading_for(runtime, LEADER, f, term, f"inc-{f}") for f in FOLLOWERS}
        clock = time.process_time
        for r in range(rounds + 1):
            nxt = runtime.core.status().last_index + 1
            todo = [(proposals(runtime, envs), acks(term, i)) for i in range(nxt, nxt + batches)]
            await idle(runtime)
            p = a = 0.0
            with profiled(profile if r == rounds else None):
                start = clock()
                for held, frames in todo:
                    t = clock()
                    assert runtime.hold_proposals()
                    runtime._held = held
                    runtime.release_proposals()
                    p += clock() - t
                    await idle(runtime)
                    for f, frame in frames:
                        t = clock()
                        assert readers[f].take(frame) is None
                        a += clock() - t
                        await idle(runtime)
                spent = clock() - start
            if r:
                out["batch"].append(spent / batches * 1e6)
                out["propose"].append(p / batches * 1e6)
                out["acks"].append(a / batches * 1e6)
            st = runtime.core.status()
            assert st.commit == st.last_index == nxt + batches - 1, st
        nursery.cancel_scope.cancel()
    digest_run(DIGEST, sink, store)
    return out


class _Steps(trio.abc.Instrument):
    """Counts the task steps trio runs (the driver's wake-ups among them) and the CPU of the
    steps of every task but the harness's own (``main``: its polling is not the node's)."""

    def __init__(self) -> None:
        self.steps = 0
        self.others = 0.0
        self.main: trio.lowlevel.Task | None = None
        self._at = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        self._at = time.process_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.main:
            self.others += time.process_time() - self._at


async def run_frames(
    batches: int, rounds: int, envs: list[Any], frames: int, profile: str | None
) -> dict[str, list[float]]:
    """``--frames K``: each batch's proposals come as K client frames (hold/release each,
    then a scheduling round, as a connection's reader does) while the open batch gathers the
    proposers of the batch that just applied (the 64-client case: frames arrive during the
    gather); then the acks of each batch they made. CPU per batch of everything (the
    harness's polling included), of the frames' own steps, of the node's (the frames' steps
    and every task's steps but the harness's: ``node``), trio's task steps per batch and the
    frames handed over on the inbox (the driver had something to read first)."""
    sink = RecordingSink()
    # (the gather ends when every proposer is back, not by time)
    runtime, store = _leader(sink, proposal_gather=5.0)
    steps = _Steps()
    steps.main = trio.lowlevel.current_task()
    trio.lowlevel.add_instrument(steps)
    out: dict[str, list[float]] = {
        "frames": [],
        "batch": [],
        "task_steps": [],
        "inboxed": [],
        "node": [],
    }
    size = -(-len(envs) // frames)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        term = await elect(runtime, sink)
        readers = {f: reading_for(runtime, LEADER, f, term, f"inc-{f}") for f in FOLLOWERS}
        clock = time.process_time
        for r in range(rounds + 1):
            todo = [
                [proposals(runtime, envs[k : k + size]) for k in range(0, len(envs), size)]
                for _ in range(batches)
            ]
            fr, inboxed = 0.0, 0
            with profiled(profile if r == rounds else None):
                start, first_steps, others = clock(), steps.steps, steps.others
                for held_frames in todo:
                    # The batch before applied; the driver gathers (or its gather timed out)
                    while runtime._batches.in_flight or not (runtime._gathering or runtime._parked):
                        await trio.sleep(0)
                    for held in held_frames:
                        t = clock()
                        if runtime.hold_proposals():
                            runtime._held = held
                            runtime.release_proposals()
                        else:  # the driver has its inbox to read first: the frame goes there
                            inboxed += 1
                            for event in held:
                                runtime.inbox.sender.send_nowait(event)
                        fr += clock() - t
                        await trio.sleep(0)  # the connection's reader goes on
                    # Ack every batch these frames made (a gather that timed out between
                    # them splits them in two), each once it is in flight.
                    batches_ = runtime._batches
                    while batches_.open or batches_.in_flight:
                        if batches_.in_flight and runtime._writer.idle:
                            last = batches_.in_flight[-1]
                            if runtime.core.status().commit < last:
                                for f, frame in acks(term, last):
                                    assert readers[f].take(frame) is None
                                    await trio.sleep(0)
                        await trio.sleep(0)
                spent = clock() - start
            if r:
                out["batch"].append(spent / batches * 1e6)
                out["frames"].append(fr / batches * 1e6)
                out["task_steps"].append((steps.steps - first_steps) / batches)
                out["inboxed"].append(inboxed / batches)
                out["node"].append((fr + steps.others - others) / batches * 1e6)
            await idle(runtime)
        nursery.cancel_scope.cancel()
    trio.lowlevel.remove_instrument(steps)
    digest_run(DIGEST, sink, store)
    return out


DIGEST = hashlib.sha256()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--commands", type=int, default=60)
    ap.add_argument("--pad", type=int, default=24, help="longer client ids: larger entries")
    ap.add_argument("--profile")
    ap.add_argument(
        "--frames", type=int, default=0, help="K > 0: K frames per batch, during the gather"
    )
    args = ap.parse_args()
    lmdb_without_sync()  # the CPU, not the disk
    stub_apply()
    envs = envelopes(args.commands, args.pad)
    if args.frames:
        res = trio.run(run_frames, args.batches, args.rounds, envs, args.frames, args.profile)
    else:
        res = trio.run(run, args.batches, args.rounds, envs, args.profile)
    line: dict[str, Any] = {k: round(statistics.median(v), 2) for k, v in res.items()}
    line["digest"] = DIGEST.hexdigest()[:16]
    print(json.dumps(line))


if __name__ == "__main__":
    main()
