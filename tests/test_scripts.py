"""The helper scripts work on a fresh clone (issue 13: `scripts/bench --help` failed with
`.venv/bin/python` missing)."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    p for p in (ROOT / "scripts").iterdir() if p.is_file() and p.read_text().startswith("#!")
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_script_creates_the_venv_before_using_it(script: pathlib.Path) -> None:
    lines = script.read_text().splitlines()
    uses = [i for i, line in enumerate(lines) if ".venv/bin/" in line]
    if not uses:
        return  # runs no venv program (a python script run by another one)
    creates = [i for i, line in enumerate(lines) if "python3 -m venv .venv" in line]
    assert creates and creates[0] <= uses[0], f"{script.name} uses .venv before creating it"


def test_scripts_name_folders_that_exist() -> None:
    """scripts/check linted a `chaos` folder that no longer exists (ruff then fails)."""
    check = (ROOT / "scripts" / "check").read_text()
    for folders in re.findall(r"\.venv/bin/ruff (?:check|format --check) ([^\n]+)", check):
        for folder in folders.split():
            assert (ROOT / folder).exists(), folder
