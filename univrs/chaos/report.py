"""Presenting a run: the verdict document, a terminal summary and a self-contained HTML page.

The out dir of a run holds ``history.jsonl`` (the issue's format), ``report.json`` (everything
below as data), ``summary.txt`` (what the terminal showed), ``report.html`` (one file, no
scripts, no network: throughput and latency over time as inline SVG with the fault windows and
leaderless intervals shaded, then the tables) and ``cluster/`` with every node's config and log.
"""

from __future__ import annotations

import html
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import attrs

from univrs.chaos.history import Operation
from univrs.chaos.metrics import latencies, throughput

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"


@attrs.define(eq=False)
class RunResult:
    """Everything a run found (see ``runner.run_scenario``)."""

    scenario: str
    path: str
    seed: int
    out: str
    verdict: str = FAIL
    reasons: list[str] = attrs.field(factory=list)  # why not pass
    wall_seconds: float = 0.0
    duration: float = 0.0  # fault phase, seconds
    recovery: float = 0.0
    end: float = 0.0  # seconds after the workload start when the workload stopped
    counts: dict[str, dict[str, int]] = attrs.field(factory=dict)
    faults: list[dict[str, Any]] = attrs.field(factory=list)
    leaderless: list[tuple[float, float]] = attrs.field(factory=list)
    longest_unavailability: tuple[float, float] = (0.0, 0.0)
    linearizability: dict[str, Any] = attrs.field(factory=dict)
    lost_writes: list[str] = attrs.field(factory=list)
    convergence: dict[str, Any] = attrs.field(factory=dict)
    dead: list[str] = attrs.field(factory=list)
    log_errors: list[str] = attrs.field(factory=list)  # error lines of node logs (no verdict)
    snapshots_installed: list[str] = attrs.field(factory=list)  # "<node>@<index>"
    final_values: dict[str, Any] = attrs.field(factory=dict)
    errors: dict[str, int] = attrs.field(factory=dict)
    latency_ms: dict[str, float | None] = attrs.field(factory=dict)
    scale: dict[str, Any] = attrs.field(factory=dict)  # [scale]: what the reconciler left

    def to_plain(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @property
    def ok_ops(self) -> int:
        return self.counts.get("all", {}).get("ok", 0)


# ---------------------------------------------------------------------------- terminal


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def heal_times(r: RunResult) -> list[float]:
    """Every measured time from a partition's healing to its node following the leader."""
    return [
        t for f in r.faults for t in (f.get("leader_after_heal") or {}).values() if t is not None
    ]


def missed_heals(r: RunResult) -> int:
    """Healed nodes that did not follow the leader within the watch."""
    return sum(
        1 for f in r.faults for t in (f.get("leader_after_heal") or {}).values() if t is None
    )


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summary_lines(r: RunResult) -> list[str]:
    """The per-scenario summary printed on the terminal."""
    c = r.counts.get("all", {"ok": 0, "fail": 0, "info": 0})
    gap = r.longest_unavailability
    lines = [
        f"scenario {r.scenario} (seed {r.seed}): {r.verdict.upper()}",
        f"  operations: {c['ok']} ok, {c['fail']} fail, {c['info']} info"
        + "".join(
            f"; {f} {v['ok']}/{v['fail']}/{v['info']}"
            for f, v in sorted(r.counts.items())
            if f != "all"
        ),
        f"  faults injected: {len(r.faults)}; longest unavailability (no ok write): "
        f"{gap[1] - gap[0]:.2f}s at {gap[0]:.1f}..{gap[1]:.1f}s; leaderless: "
        f"{sum(b - a for a, b in r.leaderless):.2f}s in {len(r.leaderless)} windows",
    ]
    for f in r.faults:
        rec = f.get("recovery", {})
        lines.append(
            f"    {f['start']:7.2f}..{f['end'] if f['end'] is not None else '?':>7}  "
            f"{f['label']:<34} {','.join(f['targets']) or '-':<10} first ok write after "
            f"start {_fmt_s(rec.get('to_first_ok_write_after_start'))}, after end "
            f"{_fmt_s(rec.get('to_first_ok_write_after_end'))}"
            + (f"  [{f['note']}]" if f.get("note") else "")
        )
        if f.get("leader_after_heal"):
            lines.append(
                "             leader after heal: "
                + ", ".join(
                    f"{n} {_fmt_s(t) if t is not None else 'not within the watch'}"
                    for n, t in sorted(f["leader_after_heal"].items())
                )
            )
    heals = heal_times(r)
    if heals:
        lines.append(
            f"  time to leader after heal: {len(heals)} measured, "
            f"median {_fmt_s(_median(heals))}, max {_fmt_s(max(heals))}"
            + (f"; {r_missed} never" if (r_missed := missed_heals(r)) else "")
        )
    lin = r.linearizability
    if lin:
        lines.append(f"  linearizability: {lin.get('summary', lin.get('verdict'))}")
    conv = r.convergence
    if conv:
        lines.append(
            "  replicas: "
            + (
                f"same state and log at applied index {conv.get('applied_index')}"
                if conv.get("same_state") and conv.get("same_log")
                else conv.get("detail") or "did not converge"
            )
        )
    if r.snapshots_installed:
        lines.append("  snapshots installed from the leader: " + ", ".join(r.snapshots_installed))
    if r.scale:
        lines.append(
            f"  scale: {r.scale.get('instances')} of {r.scale.get('replicas')} instances, "
            f"converged {r.scale.get('converged')}, by machine {r.scale.get('by_machine')}"
        )
    lines.append(f"  acknowledged writes lost: {len(r.lost_writes)}")
    lines.extend(f"    {w}" for w in r.lost_writes[:10])
    if r.dead:
        lines.append("  nodes: " + "; ".join(r.dead))
    if r.log_errors:
        lines.append(f"  error lines in node logs: {len(r.log_errors)} (see report.json)")
    if r.reasons:
        lines.append("  verdict reasons: " + "; ".join(r.reasons))
    lines.append(f"  out: {r.out}  ({r.wall_seconds:.0f}s)")
    return lines


def summary_table(results: Sequence[RunResult]) -> str:
    """One row per scenario (for ``scripts/chaos``)."""
    headers = [
        "SCENARIO", "VERDICT", "OK", "FAIL", "INFO", "FAULTS", "UNAVAIL", "HEAL", "LOST", "TIME",
    ]  # fmt: skip
    rows = []
    for r in results:
        c = r.counts.get("all", {"ok": 0, "fail": 0, "info": 0})
        gap = r.longest_unavailability
        rows.append(
            [
                r.scenario,
                r.verdict.upper() + ("" if not r.reasons or r.verdict == PASS else " *"),
                c["ok"],
                c["fail"],
                c["info"],
                len(r.faults),
                f"{gap[1] - gap[0]:.1f}s",
                # the slowest return to the leader after a partition healed
                f"{max(heals):.2f}s" if (heals := heal_times(r)) else "-",
                len(r.lost_writes),
                f"{r.wall_seconds:.0f}s",
            ]
        )
    cells = [headers] + [[str(x) for x in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


# ---------------------------------------------------------------------------- files


def write_report(r: RunResult, ops: Sequence[Operation], out: pathlib.Path) -> None:
    """report.json, summary.txt and report.html into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(r.to_plain(), indent=2, default=str) + "\n")
    (out / "summary.txt").write_text("\n".join(summary_lines(r)) + "\n")
    (out / "report.html").write_text(render_html(r, ops))


# ---------------------------------------------------------------------------- HTML + SVG

_COLORS = {"ok": "#2e7d32", "fail": "#ef6c00", "info": "#c62828"}
_W, _LEFT, _RIGHT = 1000, 60, 20


def _x(t: float, end: float) -> float:
    return _LEFT + (_W - _LEFT - _RIGHT) * (t / end if end > 0 else 0)


def _shading(r: RunResult, top: float, height: float, *, labels: bool) -> list[str]:
    end = max(r.end, 1e-9)
    parts = []
    for a, b in r.leaderless:
        x0, x1 = _x(a, end), _x(b, end)
        parts.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{max(1.0, x1 - x0):.1f}" height="{height}" '
            f'fill="#9e9e9e" fill-opacity="0.25"><title>no leader {a:.2f}..{b:.2f}s</title></rect>'
        )
    for i, f in enumerate(r.faults):
        a = f["start"]
        b = f["end"] if f["end"] is not None else r.end
        x0, x1 = _x(a, end), _x(b, end)
        title = html.escape(f"{f['label']} {','.join(f['targets'])} {a:.2f}..{b:.2f}s")
        parts.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{max(1.5, x1 - x0):.1f}" height="{height}" '
            f'fill="#1565c0" fill-opacity="0.12" stroke="#1565c0" stroke-opacity="0.4">'
            f"<title>{title}</title></rect>"
        )
        if labels:
            parts.append(
                f'<text x="{x0 + 2:.1f}" y="{top + 10 + 10 * (i % 3)}" font-size="9" '
                f'fill="#0d47a1">{html.escape(f["label"])}</text>'
            )
    return parts


def _axis_x(end: float, y: float) -> list[str]:
    parts = [f'<line x1="{_LEFT}" y1="{y}" x2="{_W - _RIGHT}" y2="{y}" stroke="#555"/>']
    step = max(1, math.ceil(end / 20))
    t = 0
    while t <= end + 1e-9:
        x = _x(t, end)
        parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#555"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{y + 15}" font-size="10" text-anchor="middle">{t}s</text>'
        )
        t += step
    return parts


def throughput_svg(r: RunResult, ops: Sequence[Operation]) -> str:
    end = max(r.end, 1.0)
    series = throughput(ops, end)
    n = len(series["ok"])
    top, h = 20, 180
    peak = max(1, max(series["ok"][i] + series["fail"][i] + series["info"][i] for i in range(n)))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{h + 50}">']
    parts.append(f'<text x="{_LEFT}" y="12" font-size="12">operations completed per second '
                 "(ok / fail / info), faults shaded blue, no leader grey</text>")  # fmt: skip
    parts += _shading(r, top, h, labels=True)
    bw = (_W - _LEFT - _RIGHT) / n
    for i in range(n):
        y: float = top + h
        for kind in ("ok", "fail", "info"):
            v = series[kind][i]
            if not v:
                continue
            bh = h * v / peak
            y -= bh
            parts.append(
                f'<rect x="{_LEFT + i * bw + 0.5:.1f}" y="{y:.1f}" width="{max(0.5, bw - 1):.1f}" '
                f'height="{bh:.1f}" fill="{_COLORS[kind]}"><title>{i}s: {v} {kind}</title></rect>'
            )
    parts.append(
        f'<text x="{_LEFT - 5}" y="{top + 8}" font-size="10" text-anchor="end">{peak}</text>'
    )
    parts.append(f'<text x="{_LEFT - 5}" y="{top + h}" font-size="10" text-anchor="end">0</text>')
    parts += _axis_x(end, top + h)
    parts.append("</svg>")
    return "".join(parts)


def latency_svg(r: RunResult, ops: Sequence[Operation]) -> str:
    end = max(r.end, 1.0)
    points = latencies(ops)
    top, h = 20, 220
    hi_ms = max([10.0, *(p["ms"] for p in points)])
    lo_log, hi_log = 0.0, math.log10(hi_ms) + 0.1  # 1 ms .. max

    def y(ms: float) -> float:
        v = math.log10(max(ms, 1.0))
        return top + h - h * (v - lo_log) / (hi_log - lo_log)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{h + 50}">']
    parts.append(f'<text x="{_LEFT}" y="12" font-size="12">latency of each operation '
                 "(log scale) at its invocation time; colour = outcome</text>")  # fmt: skip
    parts += _shading(r, top, h, labels=False)
    decade: float = 1.0
    while decade <= hi_ms * 1.01:
        yy = y(decade)
        parts.append(
            f'<line x1="{_LEFT}" y1="{yy:.1f}" x2="{_W - _RIGHT}" y2="{yy:.1f}" stroke="#ddd"/>'
            f'<text x="{_LEFT - 5}" y="{yy + 3:.1f}" font-size="10" text-anchor="end">'
            f"{decade:g}ms</text>"
        )
        decade *= 10
    for p in points:
        parts.append(
            f'<circle cx="{_x(p["t"], end):.1f}" cy="{y(p["ms"]):.1f}" r="1.8" '
            f'fill="{_COLORS[p["type"]]}" fill-opacity="0.6"/>'
        )
    parts += _axis_x(end, top + h)
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(r: RunResult, ops: Sequence[Operation]) -> str:
    color = {"pass": "#2e7d32", "fail": "#c62828"}.get(r.verdict, "#ef6c00")
    fault_rows = [
        [
            f["index"],
            f["label"],
            ",".join(f["targets"]),
            f"{f['start']:.2f}",
            "-" if f["end"] is None else f"{f['end']:.2f}",
            _fmt_s(f.get("recovery", {}).get("to_first_ok_write_after_start")),
            _fmt_s(f.get("recovery", {}).get("to_first_ok_write_after_end")),
            ", ".join(
                f"{n} {_fmt_s(t)}" for n, t in sorted((f.get("leader_after_heal") or {}).items())
            )
            or "-",
            f.get("note", ""),
        ]
        for f in r.faults
    ]
    count_rows = [[f, v["ok"], v["fail"], v["info"]] for f, v in sorted(r.counts.items())]
    keys = r.linearizability.get("keys", [])
    key_rows = [[k["key"], k["verdict"], k["operations"], k.get("explanation", "")] for k in keys]
    summary = "\n".join(summary_lines(r))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>chaos: {html.escape(r.scenario)}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
th {{ background: #f3f3f3; }}
.verdict {{ font-size: 22px; font-weight: bold; color: {color}; }}
pre {{ background: #f7f7f7; padding: 10px; font-size: 12px; overflow-x: auto; }}
</style></head><body>
<h1>chaos scenario {html.escape(r.scenario)}</h1>
<p class="verdict">{html.escape(r.verdict.upper())}</p>
<p>seed {r.seed}; faults for {r.duration:g}s, then {r.recovery:g}s healed;
file {html.escape(r.path)}</p>
{throughput_svg(r, ops)}
{latency_svg(r, ops)}
<h2>Faults</h2>
{
        _table(
            [
                "#",
                "fault",
                "targets",
                "start",
                "end",
                "first ok write after start",
                "after end",
                "leader after heal",
                "note",
            ],
            fault_rows,
        )
    }
<h2>Operations</h2>
{_table(["f", "ok", "fail", "info"], count_rows)}
<h2>Linearizability per key</h2>
{_table(["key", "verdict", "operations searched", "explanation"], key_rows)}
<h2>Summary</h2>
<pre>{html.escape(summary)}</pre>
</body></html>
"""
