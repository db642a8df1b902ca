"""CPU per command of a follower's apply loop, in one process (docs/performance.md, "Round 14
(s14-cpu)").

What a follower does with a committed batch entry of the bench's writes, and nothing else:
the entry's bytes (built as the leader builds them: ``encode_payload_doc`` per write, spliced
by ``batch_payload``) decoded (``decode_entry``), applied (``ClusterStateMachine.apply_batch``)
with every command's changes handed to the node's watch history (``WatchHub.applied``), one
``sm.batch()`` (one LMDB write transaction with the applied index) per entry, the state on the
LMDB backend opened as a node opens it. ``--commands`` keyed ``ScaleWorkload`` writes of
``--sessions`` sessions over ``--workloads`` workloads, ``--per-entry`` per entry (64 clients
make batches of about 42). Prints the median CPU microseconds per command (user + system) over
``--repeats`` runs, the state digest (equal in every run) and one JSON line.

    .venv/bin/python scripts/bench_follower_apply.py [--repeats 5] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from univrs.bench.sm_setup import keyed_scales, open_sessions
from univrs.runtime.payload import batch_payload, decode_entry, encode_payload_doc
from univrs.runtime.watch import WatchHub
from univrs.sm import (
    CreateWorkload,
    Envelope,
    WorkloadSpec,
    state_digest,
)
from univrs.sm.responses import ErrorCode, Failure, Success
from univrs.storage.sm_tables import StateEnv


def _cpu() -> float:
    return time.process_time()  # user + system of this process, finer than os.times


def entry_bytes(envelopes: list[Envelope], time_ms: int) -> bytes:
    """A batch entry's payload as the leader builds it."""
    docs, payloads = [], []
    for envelope in envelopes:
        payload, doc = encode_payload_doc(envelope, time_ms)
        assert doc is not None
        docs.append(doc)
        payloads.append(payload)
    return batch_payload(docs, payloads)[0]


def apply_entry(sm: Any, hub: WatchHub, data: bytes, index: int) -> int:
    """The follower's ``Applier._apply_one`` for a batch entry: decode, apply, watch history."""
    decoded = decode_entry(data)
    assert not isinstance(decoded, str)
    commands, time_ms, _ = decoded
    size = len(data) // len(commands)
    failures = [
        Failure(code=ErrorCode.INVALID_ARGUMENT, message=c) if isinstance(c, str) else c
        for c in commands
    ]
    with sm.batch():
        if hasattr(hub, "applied_many"):  # round 14: the changes handed over once per entry
            captured: list[Any] = []
            responses = sm.apply_batch(
                failures, index=index, term=1, time_ms=time_ms, captured=captured
            )
            hub.applied_many(captured, size)
        else:  # older code (an A/B against it)
            responses = sm.apply_batch(
                failures,
                index=index,
                term=1,
                time_ms=time_ms,
                each=lambda revision, changes: hub.applied(revision, changes, size),
            )
    return sum(isinstance(r, Success) for r in responses)


def prepare(
    folder: Path, args: argparse.Namespace
) -> tuple[StateEnv, Any, WatchHub, int, list[bytes]]:
    """A fresh state env with ``args.sessions`` sessions and ``args.workloads`` workloads
    applied, and the entries of ``args.commands`` keyed scales, ``args.per_entry`` each:
    (env, state machine, watch hub, last applied index, entries). Also bench_apply_phases.py."""
    env = StateEnv(str(folder / f"state-{os.urandom(4).hex()}"))
    sm = env.load()
    hub = WatchHub()
    clients, index = open_sessions(sm, args.sessions, index=0, time_ms=1)
    hub.reset(sm.revision)
    spec = WorkloadSpec(name="bench", image="nginx:1.27", replicas=2, labels={"tier": "web"})
    creates = [
        Envelope(command=CreateWorkload(id=f"bench-{i}", spec=spec)) for i in range(args.workloads)
    ]
    index += 1
    apply_entry(sm, hub, entry_bytes(creates, 1), index)
    writes = keyed_scales(clients, args.commands, workloads=args.workloads)
    entries = [
        entry_bytes(writes[i : i + args.per_entry], 2)
        for i in range(0, len(writes), args.per_entry)
    ]
    return env, sm, hub, index, entries


def run(
    folder: Path, args: argparse.Namespace, profile: cProfile.Profile | None
) -> tuple[float, str, int]:
    env, sm, hub, index, entries = prepare(folder, args)
    cpu = _cpu()
    if profile is not None:
        profile.enable()
    applied = 0  # scales answered Success (a refused or deduplicated one would time nothing)
    for data in entries:
        index += 1
        applied += apply_entry(sm, hub, data, index)
    if profile is not None:
        profile.disable()
    us = (_cpu() - cpu) / args.commands * 1e6
    digest = state_digest(sm)
    env.close()
    return us, digest, applied


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--workloads", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--per-entry", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", help="write a cProfile of the timed part of the first run")
    args = parser.parse_args(argv)
    runs, digests, applied_counts = [], set(), set()
    with tempfile.TemporaryDirectory(prefix="univrs-follower-apply.") as tmp:
        for k in range(args.repeats):
            profile = cProfile.Profile() if args.profile and k == 0 else None
            us, digest, applied = run(Path(tmp), args, profile)
            if profile is not None:
                profile.dump_stats(args.profile)
            runs.append(us)
            digests.add(digest)
            applied_counts.add(applied)
    summary = {
        "config": vars(args),
        "us_per_command": [round(x, 1) for x in runs],
        "median_us_per_command": round(statistics.median(runs), 1),
        "min_us_per_command": round(min(runs), 1),
        "digests": sorted(digests),
        "applied": sorted(applied_counts),
    }
    print(
        f"follower apply: {summary['median_us_per_command']} µs CPU per command "
        f"(median of {args.repeats}: {summary['us_per_command']}); "
        f"digests equal: {len(digests) == 1}"
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
