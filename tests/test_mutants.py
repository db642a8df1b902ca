"""Each deliberately broken core must be caught by the simulator, and its seed must replay."""

from __future__ import annotations

import io
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from univrs.sim.cli import main
from univrs.sim.mutants import MUTANTS

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_SEEDS = 200


def run_cli(args: list[str]) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue().splitlines()


def failure_lines(lines: list[str]) -> list[str]:
    """The lines that must be identical when a failing seed is replayed."""
    keep = ("invariant violated:", "at tick", "replay:")
    # The FAILED line also counts the seeds that passed before, which a replay does not run.
    failed = [line.split(";")[0] for line in lines if line.startswith("FAILED seed")]
    return failed + [line for line in lines if line.startswith(keep)]


def replay_args(lines: list[str]) -> list[str]:
    (line,) = [ln for ln in lines if ln.startswith("replay: ")]
    cmd = shlex.split(line.removeprefix("replay: "))
    assert cmd[:3] == ["python", "-m", "univrs.sim"], line
    return cmd[3:]


def test_there_are_the_required_mutants() -> None:
    assert {
        "commit-previous-term",
        "double-vote",
        "no-log-check",
        "ack-before-persist",
        "read-no-quorum",
    } <= set(MUTANTS)
    code, lines = run_cli(["--list-mutants"])
    assert code == 0
    assert sorted(line.split()[0] for line in lines) == sorted(MUTANTS)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught_and_its_seed_replays(name: str) -> None:
    code, lines = run_cli(["--seeds", str(MAX_SEEDS), "--seed", "1", "--mutant", name])
    assert code == 1, "\n".join(lines[-5:])
    assert lines[-1].startswith("replay: ")
    first = failure_lines(lines)
    assert any(line.startswith("invariant violated:") for line in first)
    again_code, again = run_cli(replay_args(lines))
    assert again_code == 1
    assert failure_lines(again) == first


def test_replay_in_a_fresh_process_with_other_string_hashing() -> None:
    # Determinism must not depend on set/dict order of strings (PYTHONHASHSEED).
    code, lines = run_cli(["--seeds", "5", "--seed", "1", "--mutant", "no-log-check"])
    assert code == 1
    env = dict(os.environ, PYTHONHASHSEED="4242")
    proc = subprocess.run(
        [sys.executable, "-m", "univrs.sim", *replay_args(lines)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert failure_lines(proc.stdout.splitlines()) == failure_lines(lines)
