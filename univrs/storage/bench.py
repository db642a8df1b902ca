"""Micro-benchmark of the log store: appends/s and syncs/s for batches of 1, 16 and 256 entries.

Run with ``scripts/bench_storage [--dir DIR] [--seconds S] [--size BYTES]``. Numbers are
medians of per-call times; the directory's filesystem decides the fsync cost, so point
``--dir`` at the disk the nodes will use (a tmpfs makes syncs nearly free).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

from univrs.raft.messages import Entry, HardState
from univrs.storage.log_store import LogStore

BATCHES = (1, 16, 256)


def bench_batch(data_dir: pathlib.Path, batch: int, *, seconds: float, size: int) -> str:
    data = b"x" * size
    call_times: list[float] = []
    sync_times: list[float] = []
    with LogStore.open(data_dir, node_id="bench") as store:
        last = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(call_times) < 5:
            entries = [Entry(term=1, index=i, data=data) for i in range(last + 1, last + 1 + batch)]
            start = time.perf_counter()
            store.append(
                hard_state=HardState(term=1, commit=last), truncate_from=None, entries=entries
            )
            call_times.append(time.perf_counter() - start)
            sync_times.append(store.statistics().last_sync_seconds)
            last += batch
        start = time.perf_counter()
        n = len(store.initial_state().entries)
        read_seconds = time.perf_counter() - start
    call = statistics.median(call_times)
    sync = statistics.median(sync_times)
    return (
        f"batch {batch:4d}: {1 / call:9.0f} appends/s {batch / call:10.0f} entries/s "
        f"{1 / sync:9.0f} syncs/s  (median append {call * 1e3:.3f} ms, commit+fsync "
        f"{sync * 1e3:.3f} ms, {len(call_times)} calls; reading {n} entries back: "
        f"{read_seconds * 1e3:.0f} ms)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="parent directory")
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    parser.add_argument("--size", type=int, default=100, help="bytes of data per entry")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="univrs-bench-") as tmp:
        print(f"log store benchmark in {tmp}, {args.size}-byte entries")
        for batch in BATCHES:
            print(
                bench_batch(
                    pathlib.Path(tmp) / f"b{batch}", batch, seconds=args.seconds, size=args.size
                )
            )


if __name__ == "__main__":
    main()
