"""The test tiers of tests/conftest.py name tests that exist, and the default run leaves the
soak tier out while `scripts/test --all` runs it."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib

from tests.conftest import SLOW, SOAK

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_tiered_test_exists() -> None:
    """A renamed test would leave its tier silently (a soak test back in the default run)."""
    exact = [(node_id, r"\(") for node_id in SOAK]  # conftest compares soak ids whole
    prefixes = [(node_id, "") for node_id in SLOW]  # and slow ids as prefixes
    for node_id, end in exact + prefixes:
        path, _, name = node_id.partition("::")
        name = name.partition("[")[0]  # a parametrized case: its function
        source = (ROOT / path).read_text()
        assert re.search(rf"def {re.escape(name)}{end}", source), node_id


def test_every_parametrized_soak_case_is_collected() -> None:
    """A soak id naming a case (``name[params]``) must name one pytest collects: with other
    parameters it would leave its tier silently."""
    cases = [node_id for node_id in SOAK if "[" in node_id]
    files = sorted({case.partition("::")[0] for case in cases})
    collect = [sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "", "-p"]
    collected = subprocess.run(
        [*collect, "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout.splitlines()
    for case in cases:
        assert case in collected, case


def test_the_default_run_leaves_out_soak_and_all_runs_it() -> None:
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert "-m 'not soak'" in pytest_ini["ini_options"]["addopts"]
    assert any(m.startswith("soak:") for m in pytest_ini["ini_options"]["markers"])
    script = (ROOT / "scripts" / "test").read_text()
    assert "--all)" in script and 'marks=(-m "")' in script
