"""State at scale: snapshot, restore and digest of N workloads + N instances (issue 17).

Builds, in this process, a state machine holding ``--objects`` workloads, as many instances
(100 per node, so N/100 nodes) and a few client sessions with cached responses. The fast path
builds the tables directly (``ClusterStateMachine.from_parts``, the constructor restore uses)
instead of applying 2N commands; everything measured afterwards goes through the real code:

* snapshot: ``univrs.runtime.snapshots.capture`` (the part that runs on the event loop and
  pauses applies: ``capture`` below) and the encoding it returns (run in a worker thread by the
  runtime: ``encode``), giving the bytes the node stores and sends;
* restore: ``univrs.runtime.snapshots.restore`` (what a restarting node and a snapshot install
  run), in a fresh subprocess so its peak RSS is the restore's own (``ru_maxrss`` of the child,
  and the RSS left once restored from /proc/self/status), split into CBOR decoding and
  ``restore_plain``; the child also counts the Python memory blocks the restored state holds
  (``sys.getallocatedblocks``), a machine-independent figure;
* digest: ``univrs.sm.snapshot.state_digest`` of the restored state, checked equal to the
  original's;
* pages: ``workload.list`` and ``instance.list`` (of one node) with ``limit=100`` from random
  ``after`` ids, through the API's read handlers (``univrs.api.ops``) on the built state: CPU
  time per page, median and p99 (one process, no network, no load: the state machine's share
  of a page);
* apply: CPU time per command of a ``CreateInstance`` + ``DeleteInstance`` pair applied to the
  built state (the tables' insert and delete at this size).

Machine-independent figures come with the timings: bytes, bytes per object, blocks per object,
and ``restore / cbor2.loads``: the restore CPU time as a multiple of a bare ``cbor2.loads`` of the
same bytes measured in the same child (the floor for any restore that decodes one CBOR item).

With ``--cluster`` (or ``--cluster-only``) the same snapshot also seeds a 3-node cluster of
real processes: ``univrs.bench.scale_cluster`` (its figures, its table, the ``--seed`` files).

Prints a table and, last, one JSON line (also written to ``--json PATH``). Bounded in time:
the child is killed after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from univrs.bench import own
from univrs.bench.own import peak_rss_bytes, rss_bytes
from univrs.bench.report import print_json
from univrs.bench.scale_state import INSTANCES_PER_NODE, build
from univrs.runtime.snapshots import capture, restore
from univrs.sm import ClusterStateMachine, state_digest

PAGES = 200
APPLY_PAIRS = 2000


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def pages(sm: ClusterStateMachine, n: int) -> dict[str, float]:
    """CPU seconds per ``limit=100`` page of workloads and of one node's instances (median,
    p99), through the API's read handlers, from ``after`` ids spread over the table."""
    from univrs.api import ops

    out: dict[str, float] = {}
    n_nodes = max(1, n // INSTANCES_PER_NODE)
    pages_of: list[tuple[str, str, Callable[[int], dict[str, Any]]]] = [
        (
            "workload_page",
            "workload.list",
            lambda k: {"limit": 100, "after": f"wl-{k * 7919 % n:08d}"},
        ),
        (
            "node_instance_page",
            "instance.list",
            lambda k: {"limit": 100, "node_id": f"node-{k % n_nodes:06d}"},
        ),
    ]
    for name, op, args_of in pages_of:
        read = ops.handler(op)
        assert read.read is not None
        times = []
        for k in range(PAGES):
            args = args_of(k)
            start = time.process_time()
            page = read.read(args, sm)
            times.append(time.process_time() - start)
            assert page["items"]
        out[f"{name}_cpu_p50_s"] = round(statistics.median(times), 5)
        out[f"{name}_cpu_p99_s"] = round(_p(times, 0.99), 5)
    return out


def create_delete(
    machine: ClusterStateMachine, index: int, n: int, pairs: int, ident: Callable[[int], str]
) -> None:
    """``pairs`` CreateInstance + DeleteInstance pairs applied to ``machine`` (holding a
    built state of ``n``) after log index ``index``: the k-th instance ``ident(k)``, of a
    workload picked across the state."""
    from univrs.sm import CreateInstance, DeleteInstance, InstanceSpec

    for k in range(pairs):
        instance = ident(k)
        spec = InstanceSpec(workload_id=f"wl-{k * 104729 % n:08d}", node_id="node-000000")
        index += 1
        machine.apply(CreateInstance(id=instance, spec=spec), index=index, term=3)
        index += 1
        machine.apply(DeleteInstance(id=instance), index=index, term=3)


def applies(sm: ClusterStateMachine, n: int) -> float:
    """CPU seconds per command of CreateInstance + DeleteInstance pairs on the built state."""
    start = time.process_time()
    create_delete(sm, sm.last_applied_index, n, APPLY_PAIRS, lambda k: f"in-x{k * 7919 % n:08d}")
    return round((time.process_time() - start) / (2 * APPLY_PAIRS), 7)


def lmdb_load(sm: ClusterStateMachine, n: int, path: str) -> dict[str, Any]:
    """The built state's object tables loaded into LMDB (``univrs.storage.sm_tables``, fsync on),
    and CPU per applied command there (one write transaction, fsynced, per command)."""
    from univrs.storage.sm_tables import objects_in_lmdb

    objects = objects_in_lmdb(path)
    with _Clock() as c:
        problems = objects.load(sm.stored_workloads(), sm.stored_instances(), sm.stored_nodes())
    assert not problems, problems
    out: dict[str, Any] = {"lmdb_load_s": round(c.wall, 3), "lmdb_load_cpu_s": round(c.cpu, 3)}
    # Apply through a state machine whose tables are these (sessions etc. in memory).
    from univrs.sm import objects as objects_module

    real = objects_module.new_objects
    objects_module.new_objects = lambda: objects  # type: ignore[assignment]
    try:
        machine = ClusterStateMachine()
    finally:
        objects_module.new_objects = real  # type: ignore[assignment]
    index, pairs = sm.last_applied_index, 200
    with _Clock() as c:
        create_delete(machine, index, n, pairs, lambda k: f"in-y{k:08d}")
    out["lmdb_apply_cpu_s"] = round(c.cpu / (2 * pairs), 6)
    out["lmdb_apply_wall_s"] = round(c.wall / (2 * pairs), 6)
    out["lmdb_file_bytes"] = os.path.getsize(os.path.join(path, "data.mdb"))
    return out


def lmdb_child(path: str, n: int) -> None:
    """A fresh process opens the LMDB tables (a restart) and serves pages from them; prints
    the time to open and count, the page times and the peak RSS as JSON."""
    from univrs.storage.sm_tables import objects_in_lmdb

    out: dict[str, Any] = {"rss_before": rss_bytes()}
    with _Clock() as c:
        objects = objects_in_lmdb(path)
        counts = objects.counts()
        first = objects.list_workloads(limit=100)
    assert counts[0] == n and len(first) == 100, counts
    out["open_s"], out["open_cpu_s"] = c.wall, c.cpu
    n_nodes = max(1, n // INSTANCES_PER_NODE)
    for name, page in (
        (
            "workload_page",
            lambda k: objects.list_workloads(after=f"wl-{k * 7919 % n:08d}", limit=100),
        ),
        (
            "node_instance_page",
            lambda k: objects.list_instances(node_id=f"node-{k % n_nodes:06d}", limit=100),
        ),
    ):
        times = []
        for k in range(PAGES):
            start = time.process_time()
            assert page(k)
            times.append(time.process_time() - start)
        out[f"{name}_cpu_p50_s"] = round(statistics.median(times), 5)
        out[f"{name}_cpu_p99_s"] = round(_p(times, 0.99), 5)
    out["peak_rss"] = peak_rss_bytes()
    out["rss_serving"] = rss_bytes()
    print(json.dumps(out))


class _Clock:
    """Wall and CPU time of a block (CPU time is the steadier one on a loaded machine)."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def child(path: str) -> None:
    """Restore the snapshot in ``path`` the way a node does; print figures as JSON."""
    import gc

    import cbor2

    from univrs import codec
    from univrs.runtime import snapshots
    from univrs.sm.snapshot import restore_plain

    data = Path(path).read_bytes()
    out: dict[str, Any] = {"rss_before": rss_bytes()}
    # The floor: one bare cbor2.loads of the same bytes, GC paused (then freed).
    gc.disable()
    with _Clock() as c:
        bare = cbor2.loads(data)
    out["cbor2_loads_s"], out["cbor2_loads_cpu_s"] = c.wall, c.cpu
    del bare
    gc.enable()
    gc.collect()
    # The split, for the profile of where restore goes (decode, then restore_plain).
    with _Clock() as c:
        plain = codec.decode_plain(data, max_size=snapshots.MAX_SNAPSHOT_BYTES, max_depth=64)
    out["decode_s"], out["decode_cpu_s"] = c.wall, c.cpu
    with _Clock() as c:
        sm = restore_plain(plain)
    out["restore_plain_s"], out["restore_plain_cpu_s"] = c.wall, c.cpu
    del sm, plain
    gc.collect()
    # The real thing, as a node runs it: bytes in, state machine out.
    blocks = sys.getallocatedblocks()
    with _Clock() as c:
        sm = restore(data)
    out["restore_s"], out["restore_cpu_s"] = c.wall, c.cpu
    # The next full collection of the cyclic GC after a restore: what a node pays, on its
    # event loop, when the collector next walks its oldest generation (unless the restore
    # moved the restored state out of it: gc.freeze).
    with _Clock() as c:
        gc.collect()
    out["gc_full_after_restore_cpu_s"] = c.cpu
    out["gc_frozen_objects"] = gc.get_freeze_count()
    out["state_blocks"] = sys.getallocatedblocks() - blocks
    out["rss_restored"] = rss_bytes()
    with _Clock() as c:
        out["digest"] = state_digest(sm)
    out["digest_s"], out["digest_cpu_s"] = c.wall, c.cpu
    out["peak_rss"] = peak_rss_bytes()
    print(json.dumps(out))


def run_child(path: str, timeout: float, how: list[str] | None = None) -> dict[str, Any]:
    """The child's figures (a fresh interpreter, so its peak RSS is the restore's)."""
    return own.run_child(__file__, [*(how or []), "--child", path], timeout, "restore child")


def measure(
    n: int, repeats: int, timeout: float, with_lmdb: bool = False, args: Any = None
) -> dict[str, Any]:
    """Every figure for n objects (medians over ``repeats``); with ``args.cluster`` the
    cluster figures too, from the same snapshot."""
    start = time.perf_counter()
    sm = build(n)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    digest = state_digest(sm)
    digest_s = time.perf_counter() - start
    page_figures = pages(sm, n)
    captures, encodes, encodes_cpu, children = [], [], [], []
    data = b""
    with tempfile.TemporaryDirectory(prefix="bench_scale.") as tmp:
        path = os.path.join(tmp, "snapshot.cbor")
        for _ in range(repeats):
            with _Clock() as c:
                encode = capture(sm)
            captures.append(c.wall)
            with _Clock() as c:
                data = encode()
            encodes.append(c.wall)
            encodes_cpu.append(c.cpu)
            del encode
        Path(path).write_bytes(data)
        size = len(data)
        del data
        index, term = sm.last_applied_index, sm.last_applied_term
        parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        lmdb_path = os.path.join(tmp, "lmdb")
        lmdb_figures = lmdb_load(sm, n, lmdb_path) if with_lmdb else {}
        apply_s = applies(sm, n)  # after the digest and snapshot: it changes the state
        del sm
        if with_lmdb:
            opened = run_child(lmdb_path, timeout, ["--lmdb-child", str(n)])
            lmdb_figures.update(
                {
                    "lmdb_restart_s": round(opened["open_s"], 4),
                    "lmdb_restart_cpu_s": round(opened["open_cpu_s"], 4),
                    "lmdb_workload_page_cpu_p99_s": opened["workload_page_cpu_p99_s"],
                    "lmdb_node_instance_page_cpu_p99_s": opened["node_instance_page_cpu_p99_s"],
                    "lmdb_serving_peak_rss_bytes": opened["peak_rss"],
                    "lmdb_serving_rss_bytes": opened["rss_serving"],
                }
            )
        for _ in range(repeats):
            found = run_child(path, timeout)
            if found["digest"] != digest:
                raise SystemExit("restored state's digest differs from the original's")
            children.append(found)
        cluster: dict[str, Any] = {}
        if args is not None and args.cluster:
            from univrs.bench.scale_cluster import cluster_figures

            cluster = cluster_figures(Path(path).read_bytes(), index, term, n, args)
    med = statistics.median
    objects = 2 * n  # workloads + instances (nodes and sessions are extra)

    def cm(key: str) -> float:
        return float(med(c[key] for c in children))

    return {
        "objects_workloads": n,
        "objects_instances": n,
        "nodes": max(1, n // INSTANCES_PER_NODE),
        "repeats": repeats,
        "build_s": round(build_s, 3),
        "snapshot_capture_s": round(med(captures), 4),
        "snapshot_encode_s": round(med(encodes), 3),
        "snapshot_s": round(med(captures) + med(encodes), 3),
        "snapshot_bytes": size,
        "snapshot_bytes_per_object": round(size / objects, 1),
        "snapshot_encode_cpu_s": round(med(encodes_cpu), 3),
        "restore_s": round(cm("restore_s"), 3),
        "restore_cpu_s": round(cm("restore_cpu_s"), 3),
        "restore_decode_cpu_s": round(cm("decode_cpu_s"), 3),
        "restore_plain_cpu_s": round(cm("restore_plain_cpu_s"), 3),
        "cbor2_loads_cpu_s": round(cm("cbor2_loads_cpu_s"), 3),
        "digest_cpu_s": round(cm("digest_cpu_s"), 3),
        "restore_decode_s": round(cm("decode_s"), 3),
        "restore_plain_s": round(cm("restore_plain_s"), 3),
        "cbor2_loads_s": round(cm("cbor2_loads_s"), 3),
        "restore_over_cbor2_loads": round(cm("restore_cpu_s") / cm("cbor2_loads_cpu_s"), 2),
        "digest_s": round(cm("digest_s"), 3),
        "digest_original_s": round(digest_s, 3),
        "restore_peak_rss_bytes": int(cm("peak_rss")),
        "restored_rss_bytes": int(cm("rss_restored")),
        "interpreter_rss_bytes": int(cm("rss_before")),
        "state_blocks_per_object": round(cm("state_blocks") / objects, 2),
        "builder_peak_rss_bytes": parent_peak,
        **page_figures,
        **lmdb_figures,
        "apply_cpu_s": apply_s,
        **cluster,
        "loadavg_1m": os.getloadavg()[0],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table (CPU seconds: steadier than wall time under load)."""
    head = (
        "| workloads + instances | snapshot pause (wall) | encode (CPU) | size | restore (CPU: "
        "decode + restore_plain) | restore / cbor2.loads | digest (CPU) | restore peak RSS "
        "| blocks/object | workload page p99 (CPU) | node's instances page p99 | apply (CPU) "
        "| load |"
    )
    lines = [head, "|" + " --- |" * 13]
    for r in rows:
        lines.append(
            f"| {r['objects_workloads']:,} + {r['objects_instances']:,} "
            f"| {r['snapshot_capture_s'] * 1000:.0f} ms "
            f"| {r['snapshot_encode_cpu_s']:.2f} s "
            f"| {r['snapshot_bytes'] / 1e6:.1f} MB ({r['snapshot_bytes_per_object']:.0f} B/obj) "
            f"| {r['restore_cpu_s']:.2f} s ({r['restore_decode_cpu_s']:.2f} + "
            f"{r['restore_plain_cpu_s']:.2f}) "
            f"| {r['restore_over_cbor2_loads']:.1f}x "
            f"| {r['digest_cpu_s']:.2f} s "
            f"| {r['restore_peak_rss_bytes'] / 2**30:.2f} GiB "
            f"| {r['state_blocks_per_object']:.1f} "
            f"| {r['workload_page_cpu_p99_s'] * 1000:.1f} ms "
            f"| {r['node_instance_page_cpu_p99_s'] * 1000:.1f} ms "
            f"| {r['apply_cpu_s'] * 1e6:.0f} us "
            f"| {r['loadavg_1m']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--objects",
        type=int,
        nargs="+",
        default=[100_000],
        help="workloads (and as many instances); several values: one row each",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure (median)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per restore child")
    parser.add_argument("--json", type=Path, help="also write the JSON figures here")
    parser.add_argument(
        "--restore",
        metavar="FILE",
        help="only restore this stored snapshot in a child and print its figures as JSON",
    )
    parser.add_argument(
        "--lmdb",
        action="store_true",
        help="also load the object tables into LMDB and measure a restart and pages from it",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also seed a 3-node cluster of real processes with the snapshot and measure "
        "restart, join, snapshot pause, peak RSS, pages under load and the apply rate",
    )
    parser.add_argument(
        "--cluster-only",
        action="store_true",
        help="only the cluster figures (skips the in-process ones: the 1M run fits in less)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=3600.0,
        help="seconds for one cluster run, every wait included (figures so far when spent)",
    )
    parser.add_argument(
        "--load-seconds", type=float, default=10.0, help="seconds of the 64-client write load"
    )
    parser.add_argument(
        "--backend",
        choices=("memory", "lmdb"),
        default="memory",
        help="the nodes' state-machine backend, written into their configs ([state] backend)",
    )
    parser.add_argument(
        "--keep", type=Path, help="run the cluster in this folder and keep its logs and data"
    )
    parser.add_argument(
        "--seed",
        type=Path,
        help="with --cluster-only: the built state's snapshot is kept in this file and "
        "reused when it exists (the build of 1,000,000 + 1,000,000 takes tens of minutes)",
    )
    parser.add_argument(
        "--snapshot-rounds",
        type=int,
        default=0,
        help="with --cluster-only: only the snapshot pause, this many times (medians)",
    )
    parser.add_argument(
        "--page-reader",
        choices=("loop", "thread"),
        default="loop",
        help="the page reader on the writers' event loop, or on its own loop and thread "
        "(linearizable pages, local pages and local gets in turn: the barrier's and the "
        "trip's shares)",
    )
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="with --cluster-only: stop after the write load and the pages",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--lmdb-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and args.lmdb_child:
        lmdb_child(args.child, args.lmdb_child)
        return
    if args.child:
        child(args.child)
        return
    if args.restore:
        print(json.dumps(run_child(args.restore, args.timeout)))
        return
    # Imported here, not at the top: the restore children (above) would count its modules in
    # their RSS figures.
    from univrs.bench.scale_cluster import cluster_table, measure_cluster

    if args.cluster_only:
        rows = [measure_cluster(n, args) for n in args.objects]
    else:
        rows = [measure(n, args.repeats, args.timeout, args.lmdb, args) for n in args.objects]
        print(table(rows))
    if args.cluster or args.cluster_only:
        print(cluster_table(rows))
    print_json(rows, args.json)


if __name__ == "__main__":
    main()
