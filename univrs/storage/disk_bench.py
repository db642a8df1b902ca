"""How data.mdb grows under compaction churn, with the snapshot layout before and after the fix.

Run with ``scripts/bench_disk [--dir DIR] [--writes N] [--batch B] [--every E] [--keep K]
[--snapshot-bytes S] [--entry-bytes X]``. A store takes ``writes`` entries in appends of
``batch`` (one fsync each, like the node's Readies); every ``every`` entries it stores a
snapshot of ``snapshot-bytes`` and compacts the log to ``keep`` entries behind it, as a node
does. Printed: the data file's size and the bytes in use as it goes, for

* ``before``: snapshot data in 1 MiB values (the layout before page-sized chunks), and
* ``after``: the layout of this build (one page per chunk),

then what ``defrag`` makes of the grown file. Point ``--dir`` at a tmpfs (``/dev/shm``) for a
quick run; the sizes do not depend on the disk.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator

from univrs.raft.messages import Entry, HardState, Membership, SnapshotMeta
from univrs.storage import layout
from univrs.storage.defragment import defrag
from univrs.storage.log_store import LogStore

MIB = 1 << 20
_MEMBERS = Membership(voters=frozenset({"bench"}))


def churn(
    store: LogStore,
    *,
    writes: int,
    batch: int,
    every: int,
    keep: int,
    snapshot_bytes: int,
    entry_bytes: int,
    report: Callable[[int], None] | None = None,
) -> int:
    """Append ``writes`` entries in batches; every ``every`` entries store a snapshot and
    compact the log to ``keep`` entries behind it. ``report(index)`` is called after each
    snapshot. Returns the largest in-use figure seen (the peak of the live data)."""
    rng = random.Random(7)
    payload = rng.randbytes(entry_bytes)
    peak = 0
    last = store.last_index()
    snap_at = last
    while last < writes:
        entries = [Entry(term=1, index=i, data=payload) for i in range(last + 1, last + batch + 1)]
        store.append(
            hard_state=HardState(term=1, commit=last + batch), truncate_from=None, entries=entries
        )
        last += batch
        peak = max(peak, store.statistics().db_in_use_bytes)
        if last - snap_at >= every:
            meta = SnapshotMeta(index=last, term=1, membership=_MEMBERS)
            store.save_snapshot(meta, rng.randbytes(snapshot_bytes))
            store.compact(last - keep)
            snap_at = last
            if report is not None:
                report(last)
    return peak


@contextlib.contextmanager
def old_snapshot_layout() -> Iterator[None]:
    """Store snapshot data in 1 MiB values, as before page-sized chunks."""
    current = layout.snapshot_chunk_size
    layout.snapshot_chunk_size = lambda page_size: MIB
    try:
        yield
    finally:
        layout.snapshot_chunk_size = current


def _mib(n: float) -> str:
    return f"{n / MIB:7.2f} MiB"


def run(label: str, data_dir: pathlib.Path, args: argparse.Namespace) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)
    lines = max(1, args.writes // args.every // 8)
    started = time.perf_counter()
    with LogStore.open(data_dir, node_id="bench") as store:
        snapshots = 0

        def report(index: int) -> None:
            nonlocal snapshots
            snapshots += 1
            if snapshots % lines == 0:
                s = store.statistics()
                print(
                    f"  {label:6} {index:9d} entries: data.mdb {_mib(s.db_bytes)}, "
                    f"in use {_mib(s.db_in_use_bytes)}"
                )

        peak = churn(
            store,
            writes=args.writes,
            batch=args.batch,
            every=args.every,
            keep=args.keep,
            snapshot_bytes=args.snapshot_bytes,
            entry_bytes=args.entry_bytes,
            report=report,
        )
        final = store.statistics()
    seconds = time.perf_counter() - started
    print(
        f"{label}: data.mdb {_mib(final.db_bytes)} for a live peak of {_mib(peak)} "
        f"({final.db_bytes / peak:.1f}x) after {args.writes} entries, {seconds:.1f}s"
    )
    result = defrag(data_dir)
    print(
        f"{label}: univrs defrag {_mib(result.before_bytes)} -> {_mib(result.after_bytes)} "
        f"in {result.seconds:.2f}s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="scratch directory")
    parser.add_argument("--writes", type=int, default=40_000, help="entries in all")
    parser.add_argument("--batch", type=int, default=2, help="entries per append (fsync)")
    parser.add_argument("--every", type=int, default=2_000, help="entries between snapshots")
    parser.add_argument("--keep", type=int, default=1_000, help="entries kept behind one")
    parser.add_argument("--snapshot-bytes", type=int, default=1_500_000)
    parser.add_argument("--entry-bytes", type=int, default=150)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="univrs-bench-disk-") as tmp:
        print(
            f"{args.writes} entries of {args.entry_bytes} B in appends of {args.batch}; "
            f"a {args.snapshot_bytes} B snapshot every {args.every}, {args.keep} kept"
        )
        with old_snapshot_layout():
            run("before", pathlib.Path(tmp) / "before", args)
        run("after", pathlib.Path(tmp) / "after", args)


if __name__ == "__main__":
    main()
