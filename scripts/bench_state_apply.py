"""CPU per applied command on both ``[state] backend``s, applied the way a node applies the
bench's writes (docs/performance.md, "The LMDB state backend's cost per write").

In one process, no Raft: ``--workloads`` workloads are created (``CreateWorkload``, a batch
entry of them), then ``--commands`` keyed ``ScaleWorkload`` writes (each in an ``Envelope`` of
one of ``--sessions`` sessions, as the bench's clients send them) are applied as batch
entries of ``--per-entry`` commands (``apply_batch``, with the watch hub's per-command
``last_changes``), ``--entries`` entries per ``sm.batch()`` (one LMDB write transaction with
the applied index, as the applier's chunks). Creates (``--creates``) are measured the same way
apart. The LMDB env is opened as a node opens it (sync off). Prints per backend the median CPU
microseconds per command (user + system) over ``--repeats`` runs, each on a fresh state, and
one JSON line; the two backends' digests must match. The JSON line also says, per backend,
how many of the measured commands changed the state (``changed``: a write the state machine
refused, or a backend that lost one, shows there) and the final revision.

    .venv/bin/python scripts/bench_state_apply.py [--repeats 5] [--commands 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from univrs.bench.sm_setup import keyed_scales, open_sessions
from univrs.sm import (
    ClusterStateMachine,
    CreateWorkload,
    Envelope,
    WorkloadSpec,
    state_digest,
)
from univrs.sm.commands import Command
from univrs.sm.objects import AppliedChanges
from univrs.storage.sm_tables import StateEnv


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


class Applier:
    """Applies entries to one state machine as a node's applier does."""

    def __init__(self, sm: ClusterStateMachine) -> None:
        self.sm = sm
        self.index = 0
        self.kept: list[AppliedChanges] = []
        self.changed = 0  # commands whose changes were not empty

    def each(self, revision: int, changes: AppliedChanges) -> None:
        self.kept.append(changes)  # the watch hub keeps them (bounded there; cleared here)
        self.changed += len(changes) > 0

    def entries(self, entries: list[list[Envelope | Command]], per_batch: int) -> None:
        sm = self.sm
        for start in range(0, len(entries), per_batch):
            with sm.batch():
                for commands in entries[start : start + per_batch]:
                    self.index += 1
                    sm.apply_batch(commands, index=self.index, term=1, each=self.each)
            self.kept.clear()


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run(backend: str, folder: Path, args: argparse.Namespace) -> tuple[float, float, str, int, int]:
    """(µs per create, µs per scale, digest, measured commands that changed the state, final
    revision) on a fresh state of ``backend``."""
    env: StateEnv | None = None
    if backend == "lmdb":
        env = StateEnv(str(folder / f"state-{os.urandom(4).hex()}"))
        sm = env.load()
    else:
        sm = ClusterStateMachine()
    applier = Applier(sm)
    clients, applier.index = open_sessions(sm, args.sessions, index=applier.index)
    spec = WorkloadSpec(name="bench", image="bench:1", replicas=1)
    creates: list[Envelope | Command] = [
        CreateWorkload(id=f"bench-{i}", spec=spec) for i in range(args.workloads)
    ]
    applier.entries(_chunks(creates, args.per_entry), args.entries)
    more: list[Envelope | Command] = [
        CreateWorkload(id=f"more-{i:08d}", spec=spec) for i in range(args.creates)
    ]
    applier.changed = 0
    cpu = _cpu()
    applier.entries(_chunks(more, args.per_entry), args.entries)
    create_us = (_cpu() - cpu) / max(1, args.creates) * 1e6
    writes: list[Envelope | Command] = []
    writes += keyed_scales(clients, args.commands, workloads=args.workloads)
    cpu = _cpu()
    applier.entries(_chunks(writes, args.per_entry), args.entries)
    scale_us = (_cpu() - cpu) / args.commands * 1e6
    digest = state_digest(sm)
    revision = sm.revision
    if env is not None:
        env.close()
    return create_us, scale_us, digest, applier.changed, revision


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=20_000, help="scale writes per run")
    parser.add_argument("--creates", type=int, default=5_000, help="creates per run")
    parser.add_argument("--workloads", type=int, default=64, help="workloads scaled")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--per-entry", type=int, default=16, help="commands per batch entry")
    parser.add_argument("--entries", type=int, default=1, help="entries per sm.batch()")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="memory,lmdb")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    results: dict[str, dict[str, list[float]]] = {b: {"create": [], "scale": []} for b in backends}
    digests: set[str] = set()
    outcome: dict[str, set[tuple[int, int]]] = {b: set() for b in backends}
    with tempfile.TemporaryDirectory(prefix="univrs-apply.") as tmp:
        for _ in range(args.repeats):
            for backend in backends:  # interleaved
                create_us, scale_us, digest, changed, revision = run(backend, Path(tmp), args)
                results[backend]["create"].append(create_us)
                results[backend]["scale"].append(scale_us)
                digests.add(digest)
                outcome[backend].add((changed, revision))
    summary: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "backends"},
        "digests_equal": len(digests) == 1,
    }
    for backend, runs in results.items():
        summary[backend] = {
            "create_us": round(statistics.median(runs["create"]), 1),
            "scale_us": round(statistics.median(runs["scale"]), 1),
            "scale_runs": [round(x, 1) for x in runs["scale"]],
            # (every repeat the same: a list of one, or the differing ones)
            "changed": sorted(c for c, _ in outcome[backend]),
            "revision": sorted(r for _, r in outcome[backend]),
        }
        out(
            f"{backend:7} create {summary[backend]['create_us']:6.1f} µs/command   "
            f"scale {summary[backend]['scale_us']:6.1f} µs/command "
            f"(median of {args.repeats}: {summary[backend]['scale_runs']})"
        )
    out(f"digests equal: {summary['digests_equal']}")
    out(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
