"""``univrs chaos run|list|check``: run scenario files, list them, check a history file.

The chaos tools (``univrs.chaos``: runner, client workload, checker) are imported only when a
command runs, so the command line starts fast.
"""

from __future__ import annotations

import logging
import pathlib
import sys
import time

import click

# The scenarios live in the repository's top-level chaos/ and ship inside the package
# (univrs/chaos/scenarios links to it; pyproject package-data), so `univrs chaos list` and
# `univrs chaos run NAME` work from any directory and from an installed wheel.
DEFAULT_DIR = str(pathlib.Path(__file__).resolve().parents[1] / "chaos" / "scenarios")
DEFAULT_OUT = "chaos-out"


def resolve_scenario(name: str, folder: str = DEFAULT_DIR) -> pathlib.Path:
    """A path as given, or a bare name looked up in the scenarios folder."""
    path = pathlib.Path(name)
    if path.exists():
        return path
    candidate = pathlib.Path(folder) / (name if name.endswith(".toml") else f"{name}.toml")
    if candidate.exists():
        return candidate
    raise click.BadParameter(f"no scenario file {name!r} (nor {candidate})")


@click.group()
def chaos() -> None:
    """Scripted chaos scenarios against a local cluster, with a linearizability check."""


@chaos.command("run")
@click.argument("scenarios", nargs=-1)
@click.option("--seed", type=int, help="Seed for every random choice (default: the file's).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help=f"Output folder (default {DEFAULT_OUT}/NAME-SEED-TIME; per scenario when several).",
)
@click.option("--check-timeout", default=60.0, show_default=True, help="Seconds for the checker.")
@click.option("--keep-data", is_flag=True, help="Keep the nodes' data dirs after a pass.")
@click.option(
    "--backend",
    type=click.Choice(["memory", "lmdb"]),
    help="Every node's [state] backend (default: the scenario's cluster.backend, else the "
    "node's default).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log faults and client retries.")
def chaos_run(
    scenarios: tuple[str, ...],
    seed: int | None,
    out_dir: str | None,
    check_timeout: float,
    keep_data: bool,
    backend: str | None,
    verbose: bool,
) -> None:
    """Run scenario files (paths, or names of the shipped scenarios in chaos/;
    none: all of them) and print a summary of each (a table too when several); exit 1 unless
    every one passed."""
    import trio

    from univrs.chaos.report import PASS, summary_lines, summary_table
    from univrs.chaos.runner import RunOptions, run_scenario
    from univrs.chaos.scenario import ScenarioError, load

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from univrs.chaos.scenario import find_scenarios

    paths = [resolve_scenario(s) for s in scenarios] or find_scenarios(DEFAULT_DIR)
    if not paths:
        raise click.ClickException(f"no scenario files in {DEFAULT_DIR}")
    try:
        loaded = [load(p) for p in paths]
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    options = RunOptions(
        seed=seed, check_timeout=check_timeout, keep_data=keep_data, backend=backend
    )
    results = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for scenario in loaded:
        s = scenario.seed if seed is None else seed
        if out_dir is None:
            out = pathlib.Path(DEFAULT_OUT) / f"{scenario.name}-{s}-{stamp}"
        elif len(loaded) > 1:
            out = pathlib.Path(out_dir) / scenario.name
        else:
            out = pathlib.Path(out_dir)
        result = trio.run(run_scenario, scenario, out, options, click.echo)
        for line in summary_lines(result):
            click.echo(line)
        results.append(result)
    if len(results) > 1:
        click.echo("")
        click.echo(summary_table(results))
    bad = [r for r in results if r.verdict != PASS]
    if bad:
        sys.exit(1)


@chaos.command("list")
@click.option(
    "--dir",
    "folder",
    default=DEFAULT_DIR,
    show_default="the shipped scenarios",
    help="Folder of scenario files.",
)
def chaos_list(folder: str) -> None:
    """The scenario files of a folder with their size, duration and faults."""
    from univrs.chaos.scenario import ScenarioError, find_scenarios, load

    paths = find_scenarios(folder)
    if not paths:
        raise click.ClickException(f"no scenario files in {folder}")
    for path in paths:
        try:
            s = load(path)
        except ScenarioError as exc:
            click.echo(f"{path.stem:<32} INVALID: {exc}")
            continue
        kinds = ", ".join(sorted({f.kind for f in s.faults})) or "none"
        click.echo(
            f"{s.name:<32} {s.cluster.nodes} nodes"
            + (f" (+{s.cluster.spares} spares)" if s.cluster.spares else "")
            + f", {s.duration:g}+{s.recovery:g}s, faults: {kinds}"
        )
        if s.description:
            click.echo(f"{'':<32} {s.description}")


@chaos.command("check")
@click.argument("history", type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", default=60.0, show_default=True, help="Seconds for the search.")
def chaos_check(history: str, timeout: float) -> None:
    """Check a JSON Lines history for linearizability (exit 1 if not, 2 if unknown)."""
    from univrs.chaos.history import HistoryError, read_jsonl
    from univrs.chaos.linearizability import Verdict, check_history

    try:
        events = read_jsonl(history)
        result = check_history(events, timeout=timeout)
    except HistoryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.summary())
    for k in result.keys:
        click.echo(f"  {k.key}: {k.verdict.value} ({k.operations} ops) {k.explanation}")
    if result.verdict is Verdict.FAIL:
        sys.exit(1)
    if result.verdict is Verdict.UNKNOWN:
        sys.exit(2)
