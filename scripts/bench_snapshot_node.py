"""A node's own snapshot of an LMDB state, its whole path in one process, with writes going on
(issue 17's "takes a snapshot without pausing writes for more than one heartbeat";
docs/state-at-scale.md, tenth increment).

The state is staged from a seed (``scripts/bench_scale --seed``'s file: a JSON line, then a
snapshot) into a ``StateEnv``, as an install does; a ``LogStore`` holds a stored snapshot and a
log behind the state (as a restored node's does). Then ``Snapshotter.take`` (the node's code:
capture on the loop, encode, store through the storage writer, compact) runs ``--repeats``
times, each while the Trio loop runs

* a 5 ms ticker: the **longest gap between two ticks** is how long the loop could not run (a
  heartbeat, a pong, an ack waits that long);
* a writer that appends one log entry at a time through the same storage writer (FIFO with the
  snapshot's storage work, as a leader's persist jobs are) and waits for it: the **longest
  gap between two durable appends** is the write pause a leader's clients see.

Reported per run: the wall time of the snapshot, both gaps, and the same gaps over an equal
window just before it (the baseline on this machine now); and per phase of the save (``phases``:
the encoding, each kind of storage step, the state env's fsync, the log's compaction) how many
items it ran, their total and longest time, and the longest gap between two durable appends
that overlaps one of its items: which phase the write pause comes from.

``python scripts/bench_snapshot_node.py SEED [--repeats 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from univrs.bench.report import print_json
from univrs.raft.messages import Entry, HardState, Membership, SnapshotMeta
from univrs.runtime.snapshots import restore
from univrs.runtime.snapshotter import Snapshotter
from univrs.runtime.waiter import Waiter
from univrs.runtime.writer import StorageTask, StorageWriter
from univrs.storage.log_store import LogStore
from univrs.storage.sm_tables import StateEnv

TICK = 0.005
LEAD = 1.0  # seconds of ticks and writes before each snapshot (the baseline window)


class _Phases:
    """Intervals of the save's phases (label, start, end), recorded by wrapping the storage's
    steps (whatever code is imported: the bench measures the code before a change as well)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    def wrap(self, label: Any, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label(*args) if callable(label) else label
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans.append((name, start, time.perf_counter()))

        return timed

    def install(self) -> None:
        import univrs.runtime.snapshotter as snapshotter
        import univrs.storage.snapshot_parts as parts

        step = parts.SnapshotParts.step

        def phase(saving: Any) -> str:
            return f"step:{getattr(saving, '_phase', '?')}"

        parts.SnapshotParts.step = self.wrap(phase, step)  # type: ignore[method-assign]
        LogStore.compact = self.wrap("compact", LogStore.compact)  # type: ignore[method-assign]
        for extra in ("compact_some", "remove_files"):
            if hasattr(LogStore, extra):
                setattr(LogStore, extra, self.wrap(extra, getattr(LogStore, extra)))
        capture = snapshotter.capture

        def captured(*args: Any, **kwargs: Any) -> Any:
            return self.wrap("encode", capture(*args, **kwargs))

        snapshotter.capture = captured  # type: ignore[assignment]

    def summary(self, acks: list[float], start: float, end: float) -> dict[str, Any]:
        gaps = [(a, b) for a, b in itertools.pairwise(acks) if b >= start and a <= end]
        out: dict[str, Any] = {}
        for name, lo, hi in self.spans:
            if hi < start or lo > end:
                continue
            row = out.setdefault(
                name, {"items": 0, "total_s": 0.0, "max_item_s": 0.0, "gap_s": 0.0}
            )
            row["items"] += 1
            row["total_s"] = round(row["total_s"] + hi - lo, 4)
            row["max_item_s"] = round(max(row["max_item_s"], hi - lo), 4)
            over = [b - a for a, b in gaps if b >= lo and a <= hi]
            row["gap_s"] = round(max([row["gap_s"], *over]), 4)
        return out


def _gap(times: list[float], start: float, end: float) -> float:
    inside = [t for t in times if start <= t <= end]
    before = [t for t in times if t < start][-1:]
    after = [t for t in times if t > end][:1]
    edges = before + inside + after
    if len(edges) < 2:
        return end - start
    return max(b - a for a, b in itertools.pairwise(edges))


class _Core:
    """What ``Snapshotter.take`` asks of the core: compact up to ``meta.index - keep``."""

    def snapshot_taken(self, meta: SnapshotMeta, data: Any, *, keep: int = 0) -> int:
        return max(0, meta.index - keep)


async def _run(
    store: LogStore, sm: Any, term: int, repeats: int, durable: Any, phases: _Phases
) -> list[dict[str, Any]]:
    ticks: list[float] = []
    acks: list[float] = []
    writer = StorageWriter(write=store.append, send=lambda _m: None, on_persisted=lambda *_a: None)
    applier = SimpleNamespace(
        sm=sm,
        applied_index=sm.last_applied_index,
        applied_term=term,
        view=SimpleNamespace(applied_membership=Membership(voters=frozenset({"n1"}))),
    )
    core = _Core()

    async def call(fn: Any) -> Any:
        return fn(core)

    snapshots = Snapshotter(
        storage=store,
        writer=writer,
        applier=applier,  # type: ignore[arg-type]  # what take() reads of an Applier
        call=call,
        keep=100,
        durable=phases.wrap("state-fsync", durable),
    )
    rows: list[dict[str, Any]] = []
    next_index = [store.last_index() + 1]

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await trio.sleep(TICK)

    async def appender() -> None:
        while True:
            index = next_index[0]
            entry = Entry(term=term, index=index, data=b"x" * 100)
            waiter: Waiter[Any] = Waiter()

            def append(e: Entry = entry) -> None:
                store.append(hard_state=None, truncate_from=None, entries=(e,))

            writer.submit(StorageTask(fn=append, waiter=waiter))
            await waiter.wait()
            next_index[0] = index + 1
            acks.append(time.perf_counter())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        nursery.start_soon(ticker)
        nursery.start_soon(appender)
        for _ in range(repeats):
            await trio.sleep(LEAD)
            # The state machine "applied" the entries appended so far (the snapshot's index
            # must be in the log, and past the stored snapshot).
            applier.applied_index = next_index[0] - 1
            start = time.perf_counter()
            cpu = time.process_time()
            await snapshots.take()
            end = time.perf_counter()
            length = end - start
            rows.append(
                {
                    "snapshot_s": round(length, 3),
                    "process_cpu_s": round(time.process_time() - cpu, 3),
                    "tick_gap_s": round(_gap(ticks, start, end), 4),
                    "ack_gap_s": round(_gap(acks, start, end), 4),
                    "baseline_tick_gap_s": round(_gap(ticks, start - min(length, LEAD), start), 4),
                    "baseline_ack_gap_s": round(_gap(acks, start - min(length, LEAD), start), 4),
                    "phases": phases.summary(acks, start, end),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        nursery.cancel_scope.cancel()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with args.seed.open("rb") as src:
        head = json.loads(src.readline())
        data = src.read()
    index, term = int(head["index"]), int(head["term"])
    with tempfile.TemporaryDirectory(prefix="bench_snapshot_node.") as tmp:
        env = StateEnv(os.path.join(tmp, "state.lmdb"))
        start = time.perf_counter()
        sm = env.replace(restore(data, env.stage))
        staged_s = time.perf_counter() - start
        store = LogStore.open(os.path.join(tmp, "node"), node_id="n1", cluster_id="bench")
        # As a restored node: the snapshot stored, a log behind the state.
        store.append(hard_state=HardState(term=term), truncate_from=None, entries=())
        members = Membership(voters=frozenset({"n1"}))
        store.save_snapshot(SnapshotMeta(index=index - 1000, term=term, membership=members), data)
        store.append(
            hard_state=None,
            truncate_from=None,
            entries=[Entry(term=term, index=i) for i in range(index - 999, index + 1)],
        )
        del data
        phases = _Phases()
        phases.install()
        rows = trio.run(_run, store, sm, term, args.repeats, env.sync, phases)
        store.close()
        env.close()
    out = {
        "objects": head["objects"],
        "staged_s": round(staged_s, 1),
        "runs": rows,
        "median": {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "phases"},
        "loadavg_1m": os.getloadavg()[0],
    }
    print_json(out, args.json)


if __name__ == "__main__":
    main()
