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

    PYTHONPATH=<tree> .venv/bin/python scripts/bench_leader_batch.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from typing import Any

import lmdb
import trio

_open = lmdb.open


def _open_nosync(*args: Any, **kwargs: Any) -> Any:
    kwargs["sync"] = False
    kwargs["metasync"] = False
    return _open(*args, **kwargs)


lmdb.open = _open_nosync  # type: ignore[assignment]  # the CPU, not the disk

from univrs.codec import decode_frame, encode_message  # noqa: E402
from univrs.config import NodeConfig  # noqa: E402
from univrs.net.inbound_frames import FrameReading, InboundConnection, _Reading  # noqa: E402
from univrs.net.settings import TransportSettings  # noqa: E402
from univrs.net.stats import PeerCounters  # noqa: E402
from univrs.raft import Membership, RaftNode, bootstrap_state  # noqa: E402
from univrs.raft.messages import (  # noqa: E402
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from univrs.runtime.applier import Applier  # noqa: E402
from univrs.runtime.driver import RaftRuntime  # noqa: E402
from univrs.runtime.events import Propose, ProposeMany  # noqa: E402
from univrs.runtime.metrics import NodeMetrics  # noqa: E402
from univrs.runtime.packing import Packing  # noqa: E402
from univrs.runtime.payload import encode_payload_doc  # noqa: E402
from univrs.runtime.waiter import Waiter  # noqa: E402
from univrs.sm.state import ClusterStateMachine  # noqa: E402
from univrs.storage.log_store import LogStore  # noqa: E402

LEADER = "n1"
FOLLOWERS = ("n2", "n3")
MEMBERS = Membership(
    voters=frozenset({"n1", "n2", "n3"}),
    addresses=(("n1", "127.0.0.1:1"), ("n2", "127.0.0.1:2"), ("n3", "127.0.0.1:3")),
)


def _apply_stub(self: Applier, entry: Entry) -> int:
    self.applied_index, self.applied_term = entry.index, entry.term
    return 1


Applier._apply_one = _apply_stub  # type: ignore[method-assign]


def envelopes(commands: int, pad: int = 24) -> list[Any]:
    """``commands`` keyed scale writes of 64 clients (their ids ``pad`` bytes longer: 24 makes
    a ~6.8 KB batch entry of 60, 130 one of ~13 KB)."""
    from univrs.bench.sm_setup import keyed_scales

    clients = [f"bench-client-{i:04d}-{'x' * pad}" for i in range(64)]
    return keyed_scales(clients, commands, workloads=16)


class Sink:
    """The transport: encodes what the runtime sends, as a link does (one frame each)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.msgs: list[Message] = []

    def send(self, msg: Message) -> None:
        self.msgs.append(msg)
        self.sent.append(encode_message(msg))

    def send_now(self, msgs: Any) -> None:
        for msg in msgs:
            self.msgs.append(msg)
            self.sent.append(encode_message(msg))


class _Scope:
    cancel_called = False


class _WS:
    closed = None


def reading_for(runtime: RaftRuntime, src: str, term: int) -> _Reading:
    reader: Any = object.__new__(FrameReading)
    reader.node_id = LEADER
    reader.inbox = runtime.inbox.sender
    reader.leave = runtime.inbox.leave
    reader.settings = TransportSettings()
    reader.decode = decode_frame
    reader._configured = dict(MEMBERS.addresses)
    reader._source = src
    reader._source_term = term
    reader._leader_terms = {}
    reader._rejected = 0
    reader._warned_protocol = set()
    conn: Any = InboundConnection.__new__(InboundConnection)
    object.__setattr__(conn, "scope", _Scope())
    object.__setattr__(conn, "incarnation", None)
    hello: Any = type("H", (), {"src": src})()
    object.__setattr__(conn, "hello", hello)
    return _Reading(reader, runtime.inbox.sender, _WS(), conn, PeerCounters(), f"inc-{src}")  # type: ignore[arg-type]


async def idle(runtime: RaftRuntime) -> None:
    while True:
        stats = runtime.inbox.receiver.statistics()
        if (
            runtime._parked
            and stats.tasks_waiting_receive
            and not stats.current_buffer_used
            and runtime._applier._idle
            and not runtime._applier._queue
            and runtime._writer.idle
        ):
            return
        await trio.sleep(0)


async def elect(runtime: RaftRuntime, sink: Sink) -> int:
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
                runtime.inbox.sender.send_nowait(
                    AppendEntriesResponse(
                        term=m.term,
                        src=m.dst,
                        dst=LEADER,
                        success=True,
                        index=last,
                        hint_index=0,
                        hint_term=0,
                    )
                )
    await idle(runtime)
    status = runtime.core.status()
    assert status.role.name == "LEADER" and status.commit == status.last_index, status
    sink.msgs.clear()
    return status.term


def acks(term: int, index: int) -> list[tuple[str, bytes]]:
    return [
        (
            f,
            encode_message(
                AppendEntriesResponse(
                    term=term,
                    src=f,
                    dst=LEADER,
                    success=True,
                    index=index,
                    hint_index=0,
                    hint_term=0,
                )
            ),
        )
        for f in FOLLOWERS
    ]


def proposals(runtime: RaftRuntime, envs: list[Any]) -> list[ProposeMany]:
    """The proposals of one batch, encoded beforehand (the client API's part)."""
    now = trio.current_time()
    batch = []
    for envelope in envs:
        payload, doc = encode_payload_doc(envelope, 1_700_000_000_000)
        batch.append(Propose(payload, Waiter(), now, doc))
    return [ProposeMany(batch)]


async def run(
    batches: int, rounds: int, envs: list[Any], profile: str | None
) -> dict[str, list[float]]:
    folder = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    store = LogStore.open(folder, node_id=LEADER, cluster_id="c")
    initial = bootstrap_state(MEMBERS)
    store.append(hard_state=initial.hard_state, truncate_from=None, entries=initial.entries)
    config = NodeConfig(node_id=LEADER).raft_config()
    core = RaftNode(LEADER, rng=random.Random(1), config=config, initial=initial)
    sink = Sink()
    runtime: RaftRuntime

    def status() -> Any:
        return runtime.status()

    metrics = NodeMetrics(status, storage=store.statistics)
    runtime = RaftRuntime(
        core=core,
        sm=ClusterStateMachine(),
        storage=store,
        transport=sink,
        tick_seconds=3600.0,
        metrics=metrics,
        write_inline_bytes=NodeConfig().inline_write_bytes,
        packing=Packing.for_frames(
            enabled=True, max_payload_size=TransportSettings().max_payload_size
        ),
    )
    runtime._may_pack = lambda n: n >= 2  # type: ignore[assignment]  # every member applies them
    runtime._may_own = lambda: True  # type: ignore[assignment]
    out: dict[str, list[float]] = {"propose": [], "acks": [], "batch": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        term = await elect(runtime, sink)
        readers = {f: reading_for(runtime, f, term) for f in FOLLOWERS}
        clock = time.process_time
        for r in range(rounds + 1):
            nxt = runtime.core.status().last_index + 1
            todo = [(proposals(runtime, envs), acks(term, i)) for i in range(nxt, nxt + batches)]
            await idle(runtime)
            prof = cProfile.Profile() if profile and r == rounds else None
            if prof is not None:
                prof.enable()
            p = a = 0.0
            start = clock()
            for held, ack in todo:
                t = clock()
                assert runtime.hold_proposals()
                runtime._held = held
                runtime.release_proposals()
                p += clock() - t
                await idle(runtime)
                for f, frame in ack:
                    t = clock()
                    assert readers[f].take(frame) is None
                    a += clock() - t
                    await idle(runtime)
            spent = clock() - start
            if prof is not None:
                prof.disable()
                prof.dump_stats(profile)  # type: ignore[arg-type]
            if r:
                out["batch"].append(spent / batches * 1e6)
                out["propose"].append(p / batches * 1e6)
                out["acks"].append(a / batches * 1e6)
            st = runtime.core.status()
            assert st.commit == st.last_index == nxt + batches - 1, st
        nursery.cancel_scope.cancel()
    DIGEST.update(b"".join(sink.sent))

    def stored(txn: Any) -> None:
        env = store._env
        for key, value in txn.cursor(db=env.log):
            DIGEST.update(key + value)
        for key in (b"hard_state", b"pins", b"named"):
            DIGEST.update(key + (txn.get(key, db=env.meta) or b""))

    store._env.read(stored)
    store.close()
    return out


DIGEST = hashlib.sha256()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--commands", type=int, default=60)
    ap.add_argument("--pad", type=int, default=24, help="longer client ids: larger entries")
    ap.add_argument("--profile")
    args = ap.parse_args()
    envs = envelopes(args.commands, args.pad)
    res = trio.run(run, args.batches, args.rounds, envs, args.profile)
    line: dict[str, Any] = {k: round(statistics.median(v), 2) for k, v in res.items()}
    line["digest"] = DIGEST.hexdigest()[:16]
    print(json.dumps(line))


if __name__ == "__main__":
    main()
