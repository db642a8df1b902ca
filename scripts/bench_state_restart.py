"""Restart of a node's state, both ``[state] backend``s (issue 17, docs/state-at-scale.md).

Builds a state of ``--objects`` N workloads + N instances (``bench_scale.build``: N/100 nodes,
4 sessions with 32 cached responses, 100 accounts), stores it as the snapshot of a single-node
data dir (the node's own ``open_storage`` bootstraps it; the snapshot goes through the runtime's
``capture`` encoder), then opens that data dir the way a restarting node does
(``univrs.server.node.open_storage``: what runs before the node serves) in fresh processes:

* ``memory``: restores the stored snapshot (every start);
* ``lmdb`` first start: the state env is new, so it is filled from the stored snapshot once
  (what switching a data dir to ``lmdb`` costs, and an install from the leader);
* ``lmdb`` restart: opens the env and resumes after its applied index (no restore).

Each child reports CPU and wall seconds of the open, its peak RSS (VmHWM, the interpreter
included) and RSS after the open, the time of a first ``limit=100`` page of workloads, and
checks the state's digest equals the built one (after measuring). Prints a table and a JSON line.

    .venv/bin/python scripts/bench_state_restart.py --objects 100000 [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import build, peak_rss_bytes, rss_bytes  # type: ignore[import-not-found]

from univrs.config import NodeConfig
from univrs.raft.messages import HardState, Membership, SnapshotMeta
from univrs.runtime.snapshots import capture
from univrs.server.datadir import open_storage
from univrs.sm import state_digest


def make(n: int, folder: Path) -> tuple[Path, str]:
    """A single-node data dir whose stored snapshot holds the built state; its digest."""
    sm = build(n)
    digest = state_digest(sm)
    data = capture(sm)()
    del sm
    config = NodeConfig(node_id="n1", data_dir=folder / "n1")
    opened = open_storage(config)
    try:
        index = capture_index(data)
        meta = SnapshotMeta(index=index, term=3, membership=Membership(voters=frozenset({"n1"})))
        opened.storage.append(
            hard_state=HardState(term=3, vote="n1", commit=index), truncate_from=None, entries=()
        )
        opened.storage.save_snapshot(meta, data)
    finally:
        opened.storage.close()
    return config.data_dir, digest


def capture_index(data: bytes) -> int:
    """The applied index a snapshot holds."""
    from univrs import codec

    return int(codec.decode_plain(data, max_size=1 << 34, max_depth=64)["last_index"])


def child(backend: str, data_dir: str, digest: str) -> None:
    """Open the data dir as a restarting node does; print one JSON line."""
    before = rss_bytes()
    config = NodeConfig(node_id="n1", data_dir=Path(data_dir), state_backend=backend)
    wall, cpu = time.perf_counter(), time.process_time()
    opened = open_storage(config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    page = time.process_time()
    first = opened.sm.list_workloads(limit=100)
    page = time.process_time() - page
    out: dict[str, Any] = {
        "backend": backend,
        "open_cpu_s": round(cpu, 3),
        "open_wall_s": round(wall, 3),
        "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1),
        "rss_after_mib": round(rss_bytes() / 2**20, 1),
        "rss_before_mib": round(before / 2**20, 1),
        "first_page_ms": round(page * 1000, 2),
        "page_items": len(first),
    }
    out["digest_ok"] = state_digest(opened.sm) == digest
    if opened.state_env is not None:
        opened.state_env.close()
    opened.storage.close()
    print(json.dumps(out))


def apply_cost(folder: Path, count: int, batch: int) -> dict[str, float]:
    """CPU microseconds per applied command (a CreateWorkload, then a session's ScaleWorkload
    of it), ``batch`` commands per batch as the node's apply loop does, on both backends
    (the LMDB env with sync off, as the node opens it)."""
    from univrs.bench.scale_state import workload_spec
    from univrs.sm import ClusterStateMachine, CreateWorkload, Envelope, OpenSession
    from univrs.sm.commands import ScaleWorkload
    from univrs.storage.sm_tables import StateEnv

    out: dict[str, float] = {}
    for backend in ("memory", "lmdb"):
        if backend == "lmdb":
            env = StateEnv(str(folder / f"apply-{batch}"))
            sm = env.load()
        else:
            sm = ClusterStateMachine()
        opened = sm.apply(OpenSession(), index=1, term=1)
        client = opened.id  # type: ignore[union-attr]
        index = 1
        cpu = time.process_time()
        for start in range(0, count, batch):
            with sm.batch():
                for k in range(start, min(count, start + batch)):
                    index += 1
                    if k % 2 == 0:
                        sm.apply(
                            CreateWorkload(id=f"w{k:08d}", spec=workload_spec(k)),
                            index=index,
                            term=1,
                        )
                    else:
                        cmd = ScaleWorkload(id=f"w{k - 1:08d}", replicas=k % 5)
                        sm.apply(
                            Envelope(command=cmd, client_id=client, seq=k), index=index, term=1
                        )
        out[backend] = round((time.process_time() - cpu) / count * 1e6, 1)
        if backend == "lmdb":
            env.close()
    return out


def run_child(backend: str, data_dir: Path, digest: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", backend, str(data_dir), digest],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--apply", type=int, default=0, help="also: CPU per applied command")
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "DATA_DIR", "DIGEST"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.apply:
        with tempfile.TemporaryDirectory(prefix="univrs-apply.") as tmp:
            for batch in (1, 64, 512):
                costs = apply_cost(Path(tmp), args.apply, batch)
                print(json.dumps({"apply_us_per_command": costs, "batch": batch}))
        return
    with tempfile.TemporaryDirectory(prefix="univrs-restart.") as tmp:
        data_dir, digest = make(args.objects, Path(tmp))
        rows = [dict(run_child("memory", data_dir, digest), run="memory")]
        rows.append(dict(run_child("lmdb", data_dir, digest), run="lmdb, first start (fill)"))
        for _ in range(args.repeats):
            rows.append(dict(run_child("lmdb", data_dir, digest), run="lmdb, restart"))
            rows.append(dict(run_child("memory", data_dir, digest), run="memory"))
        size = sum(p.stat().st_size for p in (data_dir / "state.lmdb").rglob("*.mdb"))
    print(
        "| run | open CPU s | open wall s | peak RSS MiB | RSS after MiB | first page ms | digest |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['run']} | {r['open_cpu_s']} | {r['open_wall_s']} | {r['peak_rss_mib']} | "
            f"{r['rss_after_mib']} | {r['first_page_ms']} | {'ok' if r['digest_ok'] else 'BAD'} |"
        )
    print(f"state.lmdb: {size / 2**20:.1f} MiB")
    print(json.dumps({"objects": args.objects, "state_env_bytes": size, "runs": rows}))


if __name__ == "__main__":
    main()
