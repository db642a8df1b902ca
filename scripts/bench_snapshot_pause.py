"""The snapshot of an LMDB state and the install of a leader's snapshot on LMDB, measured in
one process each (issue 17, docs/state-at-scale.md, sixth increment).

Builds N workloads + N instances (``univrs.bench.scale_state.build``) into a ``StateEnv``, then:

* snapshot, both encoders on the same state, alternating (``--repeats`` each): the stored
  rows copied (``capture``'s raw views: this code) and the objects read back and encoded (the
  code before: ``capture`` with the raw views switched off). Each encoding runs in a worker
  thread, as the node runs it, while the Trio loop runs a 5 ms ticker; reported: the encoder's
  CPU, and the **longest gap between two ticks** (how long the loop could not run: a write
  acknowledgement, a heartbeat, a pong waits that long) and the ticks missed. Both encoders'
  bytes are checked equal.
* install, in fresh child processes (peak RSS is the child's own, VmHWM): the snapshot
  restored in memory and copied into an env (the code before: ``restore`` + ``replace``)
  against restored into a staging env a row at a time and copied as bytes (``stage`` +
  ``replace``); CPU of each step, peak RSS, digest checked equal.

``python scripts/bench_snapshot_pause.py --objects 100000 [--repeats 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

from univrs.bench.own import peak_rss_bytes
from univrs.bench.report import print_json
from univrs.bench.scale_state import build
from univrs.runtime.snapshots import capture, restore
from univrs.sm import ClusterStateMachine, state_digest
from univrs.storage.sm_tables import StateEnv

TICK = 0.005


def _encode_under_ticker(sm: ClusterStateMachine, raw: bool) -> dict[str, Any]:
    """One snapshot: capture on the loop, encode in a worker thread, ticker on the loop."""
    original = ClusterStateMachine.stored_raw_views
    if not raw:  # the encoder before: no raw views, objects read back and encoded
        ClusterStateMachine.stored_raw_views = lambda self: None  # type: ignore[method-assign]
    try:
        ticks: list[float] = []
        out: dict[str, Any] = {}

        async def main() -> None:
            done = trio.Event()

            async def ticker() -> None:
                while not done.is_set():
                    ticks.append(time.perf_counter())
                    await trio.sleep(TICK)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                await trio.sleep(0.1)
                start = time.perf_counter()
                encode = capture(sm)
                out["capture_s"] = time.perf_counter() - start

                def run() -> tuple[bytes, float]:
                    cpu = time.thread_time()
                    data = encode()
                    return data, time.thread_time() - cpu

                data, cpu = await trio.to_thread.run_sync(run)
                end = time.perf_counter()
                out.update(encode_wall_s=end - start, encode_cpu_s=cpu, data=data)
                inside = [t for t in ticks if start <= t <= end] or [start]
                edges = [start, *inside, end]
                out["longest_tick_gap_s"] = max(b - a for a, b in itertools.pairwise(edges))
                out["ticks"] = len(inside)
                out["ticks_expected"] = int((end - start) / TICK)
                done.set()

        trio.run(main)
        return out
    finally:
        ClusterStateMachine.stored_raw_views = original  # type: ignore[method-assign]


def _install_child(snapshot: str, how: str) -> None:
    data = Path(snapshot).read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench_install.") as tmp:
        env = StateEnv(os.path.join(tmp, "state.lmdb"))
        before = peak_rss_bytes()
        cpu = time.process_time()
        restored = restore(data) if how == "memory" else restore(data, env.stage)
        restored_cpu = time.process_time() - cpu
        stored = env.replace(restored)
        total = time.process_time() - cpu
        peak = peak_rss_bytes()  # before the digest, which builds the whole state's rows
        del restored
        digest = state_digest(stored)
        print(
            json.dumps(
                {
                    "check_cpu_s": round(restored_cpu, 3),
                    "replace_cpu_s": round(total - restored_cpu, 3),
                    "install_cpu_s": round(total, 3),
                    "peak_rss_bytes": peak,
                    "rss_before_bytes": before,
                    "digest": digest,
                }
            )
        )
        env.close()


def main() -> None:
    """Run the figures (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _install_child(*args.child)
        return
    n = args.objects
    out: dict[str, Any] = {"objects": n}
    with tempfile.TemporaryDirectory(prefix="bench_pause.") as tmp:
        env = StateEnv(os.path.join(tmp, "state.lmdb"))
        start = time.perf_counter()
        sm = env.replace(build(n))
        out["build_s"] = round(time.perf_counter() - start, 1)
        digest = state_digest(sm)
        rows: dict[str, list[dict[str, Any]]] = {"raw": [], "encode": []}
        data = b""
        for _ in range(args.repeats):
            for how in ("encode", "raw"):
                row = _encode_under_ticker(sm, raw=how == "raw")
                if data and row["data"] != data:
                    raise SystemExit("the two encoders gave different bytes")
                data = row.pop("data")
                rows[how].append({k: round(v, 4) for k, v in row.items()})
        out["snapshot"] = rows
        out["snapshot_bytes"] = len(data)
        path = os.path.join(tmp, "snapshot.cbor")
        Path(path).write_bytes(data)
        del data, sm
        env.close()
        installs: dict[str, Any] = {}
        for how in ("memory", "stage"):
            child = subprocess.run(
                [sys.executable, __file__, "--child", path, how],
                capture_output=True,
                text=True,
                check=True,
                timeout=3600,
            )
            installs[how] = json.loads(child.stdout.strip().splitlines()[-1])
            if installs[how].pop("digest") != digest:
                raise SystemExit(f"install by {how}: another digest")
        out["install"] = installs
    out["parent_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print_json(out, args.json)


if __name__ == "__main__":
    threading.current_thread().name = "main"
    main()
