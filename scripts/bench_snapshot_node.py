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
window just before it (the baseline on this machine now).

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


async def _run(store: LogStore, sm: Any, term: int, repeats: int) -> list[dict[str, Any]]:
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
        rows = trio.run(_run, store, sm, term, args.repeats)
        store.close()
        env.close()
    out = {
        "objects": head["objects"],
        "staged_s": round(staged_s, 1),
        "runs": rows,
        "median": {k: statistics.median(r[k] for r in rows) for k in rows[0]},
        "loadavg_1m": os.getloadavg()[0],
    }
    print_json(out, args.json)


if __name__ == "__main__":
    main()
