"""The bench's output: the human report, the plot, and py-spy profiles of a process.

``report`` prints one block per phase (univrs and, if run, etcd side by side, with the ratio,
the CPU per operation per process and the linearizability sample's verdict) and the profile's
summary; ``plot`` writes throughput and p99 against clients as a PNG (matplotlib, the
``bench`` extra); ``py_spy_command`` and ``summarise_profile`` take and read the profile of
the leader or another chosen process (docs/performance.md, "--profile"). ``print_json`` is
how the one-shot bench scripts (``scripts/bench_scale.py``, ``bench_snapshot_*.py``) end: one
JSON line, last on stdout, and the same in their ``--json`` file.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import sys
from typing import Any

__all__ = ["plot", "print_json", "py_spy_command", "report", "summarise_profile"]


def print_json(figures: Any, path: pathlib.Path | None = None) -> None:
    """``figures`` as one JSON line on stdout (a script's last line: what a caller parses) and,
    given ``path`` (the scripts' ``--json``), as that file's one line."""
    text = json.dumps(figures)
    print(text)
    if path:
        path.write_text(text + "\n")


def py_spy_command(pid: int, path: pathlib.Path) -> list[str]:
    """``py-spy record`` of ``pid`` into ``path`` as collapsed stacks, without pausing it."""
    exe = pathlib.Path(sys.executable).with_name("py-spy")
    return [
        str(exe) if exe.exists() else "py-spy",
        "record",
        "--pid",
        str(pid),
        "--nonblocking",
        "--gil",  # the thread holding the GIL: the one Python thread that caps the node
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(path),
    ]


def summarise_profile(path: pathlib.Path, top: int = 15) -> dict[str, Any]:
    """The functions the sampled process spent its time in: share of the samples in which a
    function was running (self) and, for univrs's own functions, on the stack (total), from
    py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        # "function (file:line)" -> "function (file)": one entry per function.
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            if "univrs/" in f and "univrs/cli/" not in f and "__main__" not in f:
                total[f] = total.get(f, 0) + count

    def share(table: dict[str, int]) -> list[list[Any]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [[f, round(100 * n / max(1, samples), 1)] for f, n in ranked]

    return {"samples": samples, "self_pct": share(own), "total_pct": share(total)}


def _cpu_text(r: dict[str, Any]) -> str:
    leaders = r.get("leaders") or []
    tag = " (leader)" if len(leaders) == 1 else " (leader in some runs)"
    parts = []
    for name, v in r["cpu_ms_per_op"].items():
        label = f"{name}{tag}" if name in leaders else name
        parts.append(f"{label} {v:.3f}")
    return f"total {r['cpu_ms_per_op_total']:.3f}: " + ", ".join(parts)


def report(result: dict[str, Any]) -> str:
    """The human report: one block per phase, univrs and (if run) etcd side by side."""
    c = result["config"]
    uni, etc = result["univrs"], result.get("etcd")
    procs = uni.get("client_procs", 1)
    if uni.get("loadgen") == "go":
        where = " in one Go worker process"
    else:
        where = "" if procs == 1 else f" in {procs} worker processes"
    if uni.get("read_nodes") == "all":
        where += ", reads spread over every node"
    lines = [
        f"{c['nodes']} nodes, fsync on; clients over {uni['connections']} connections{where}, "
        f"{c['duration_s']:g} s per run after {c.get('warmup_s', 1.0):g} s warm-up, "
        f"median of {c['repeat']}; "
        f"load average {c['load_before']} before, {c['load_after']} after "
        "(figures are only comparable on a quiet machine)",
    ]
    if etc is None and c.get("etcd_skipped"):
        lines.append(f"etcd comparison skipped: {c['etcd_skipped']}")
    phases = (
        ("writes", "writes"),
        ("reads", "linearizable reads"),
        ("lease-reads", "lease reads (clock-bound: docs/performance.md, Lease reads)"),
    )
    for phase, title in phases:
        if phase not in uni:
            continue
        lines.append(f"\n{title}")
        for n, r in uni[phase].items():
            text = (
                f"  {n:>5} clients  univrs {r['ops_per_s']:>8.0f}/s  p50 {r['p50_ms']:7.2f} ms"
                f"  p99 {r['p99_ms']:7.2f} ms  max {r['max_ms']:8.2f} ms"
            )
            e = (etc or {}).get(phase, {}).get(n)
            if e:
                ratio = r["ops_per_s"] / e["ops_per_s"] if e["ops_per_s"] else math.nan
                text += (
                    f"\n  {'':>13}  etcd   {e['ops_per_s']:>8.0f}/s  p50 {e['p50_ms']:7.2f} ms"
                    f"  p99 {e['p99_ms']:7.2f} ms  max {e['max_ms']:8.2f} ms"
                    f"\n  {'':>13}  univrs/etcd throughput {ratio:.2f}x,"
                    f" p99 {r['p99_ms'] / e['p99_ms'] if e['p99_ms'] else math.nan:.2f}x"
                )
            text += f"\n  {'':>13}  univrs CPU ms/op {_cpu_text(r)}"
            role = r.get("cpu_ms_per_op_by_role")
            if role:
                text += f"\n  {'':>13}  by role (median of runs): " + ", ".join(
                    f"{name} {v:.3f}" for name, v in role.items()
                )
            if e:
                text += f"\n  {'':>13}  etcd   CPU ms/op {_cpu_text(e)}"
            for name, side in (("univrs", r), ("etcd", e)):
                if side and side.get("errors"):
                    text += (
                        f"\n  {'':>13}  {name} errors {side['errors']}: {side.get('first_error')}"
                    )
            if phase != "writes" and r.get("reads_per_confirmation"):
                text += (
                    f"\n  {'':>13}  reads per ReadIndex confirmation (nodes' metrics): "
                    f"{r['reads_per_confirmation']:g}"
                )
            if r.get("leader_changes"):
                text += f"\n  {'':>13}  leader changes during the runs: {r['leader_changes']}"
            if "check" in r:
                text += f"\n  {'':>13}  linearizability sample: {r['check']['summary']}"
            lines.append(text)
    if "reads" in uni and "lease-reads" not in uni:
        lines.append(f"\nlease reads: {uni.get('lease_reads', 'not measured')}")
    prof = uni.get("profile")
    if prof and prof.get("samples"):
        lines.append(
            f"\nprofile of {prof.get('process', prof.get('node'))} ({prof['clients']} clients, "
            f"{prof.get('phase', 'writes')}, "
            f"{prof['samples']} samples holding the GIL; % of samples)"
        )
        lines.append("  running (self):")
        lines += [f"    {pct:5.1f}%  {f}" for f, pct in prof["self_pct"]]
        lines.append("  on the stack (total), univrs functions:")
        lines += [f"    {pct:5.1f}%  {f}" for f, pct in prof["total_pct"]]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: pathlib.Path) -> bool:
    """Throughput and p99 against clients, univrs and etcd, as a PNG; False without
    matplotlib (the ``bench`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system in ("univrs", "etcd"):
        side = result.get(system)
        if not side:
            continue
        for phase, style in (("writes", "-o"), ("reads", "--s"), ("lease-reads", ":^")):
            points = side.get(phase)
            if not points:
                continue
            xs = [int(n) for n in points]
            label = f"{system} {phase}"
            ax_t.plot(xs, [points[n]["ops_per_s"] for n in points], style, label=label)
            ax_p.plot(xs, [points[n]["p99_ms"] for n in points], style, label=label)
    for ax, ylabel in ((ax_t, "operations/s (median)"), (ax_p, "p99 latency, ms (median)")):
        ax.set_xscale("log", base=2)
        ticks = sorted(
            {int(n) for side in ("univrs", "etcd") for n in result.get(side, {}).get("writes", {})}
        )
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_p.set_yscale("log")
    c = result["config"]
    fig.suptitle(
        f"{c['nodes']} nodes on loopback, fsync on, median of {c['repeat']} x "
        f"{c['duration_s']:g} s; load average {c['load_before']} ({c['commit']})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
