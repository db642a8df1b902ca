"""`univrs chaos list|check|run` through click (no node processes)."""

from __future__ import annotations

import pathlib

from click.testing import CliRunner

from tests.chaos.histories import H
from univrs.chaos.history import write_jsonl
from univrs.cli import main

REPO = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "chaos"  # their home; the package ships them as univrs/chaos/scenarios


def test_list_shows_every_scenario() -> None:
    result = CliRunner().invoke(main, ["chaos", "list", "--dir", str(SCENARIOS)])
    assert result.exit_code == 0, result.output
    assert "leader-kill" in result.output and "smoke" in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("join-and-leave"))
    assert "(+2 spares)" in line and "join" in line


def _history(tmp_path: pathlib.Path, h: H) -> str:
    path = tmp_path / "h.jsonl"
    with open(path, "w") as f:
        write_jsonl(h.sorted_events(), f)
    return str(path)


def test_check_exit_codes(tmp_path: pathlib.Path) -> None:
    good = _history(
        tmp_path, H().op(0, "write", "x", "a", 0, 1).op(1, "read", "x", None, 2, 3, out="a")
    )
    result = CliRunner().invoke(main, ["chaos", "check", good])
    assert result.exit_code == 0 and "linearizable" in result.output
    bad = _history(tmp_path, H().op(0, "write", "x", "a", 0, 1).op(1, "read", "x", None, 2, 3))
    result = CliRunner().invoke(main, ["chaos", "check", bad])
    assert result.exit_code == 1 and "NOT linearizable" in result.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    result = CliRunner().invoke(main, ["chaos", "check", str(broken)])
    assert result.exit_code == 1 and "broken.jsonl:1" in result.output


def test_run_refuses_an_invalid_file(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('duration = 10\n[[fault]]\nkind = "meteor"\n')
    result = CliRunner().invoke(main, ["chaos", "run", str(bad)])
    assert result.exit_code != 0
    assert "fault[0].kind" in result.output


def test_list_and_resolve_from_any_directory(tmp_path: pathlib.Path, monkeypatch: object) -> None:
    """The scenarios ship with the package: `chaos list` worked only from the repository root."""
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["chaos", "list"])
    assert result.exit_code == 0, result.output
    assert "leader-kill" in result.output and "smoke" in result.output
    from univrs.cli.chaos import resolve_scenario

    assert resolve_scenario("smoke").is_file()


def test_scenarios_are_package_data() -> None:
    """Every shipped scenario matches a package-data pattern, so a wheel carries it."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["univrs.chaos"]
    files = [f"scenarios/{p.name}" for p in SCENARIOS.glob("*.toml")] + ["scenarios/README.md"]
    assert len(files) > 1
    for name in files:
        assert any(fnmatch.fnmatch(name, pat) for pat in patterns), name


def test_the_shipped_scenarios_are_the_top_level_chaos_folder() -> None:
    """chaos/ is the scenarios' home and the package ships that very folder (a link), so the two
    can never drift apart; the command's default folder is the package's."""
    from univrs.cli.chaos import DEFAULT_DIR

    shipped = REPO / "univrs" / "chaos" / "scenarios"
    assert shipped.is_symlink() and shipped.resolve() == SCENARIOS.resolve()
    assert pathlib.Path(DEFAULT_DIR).resolve() == SCENARIOS.resolve()
    assert (SCENARIOS / "README.md").is_file() and (SCENARIOS / "smoke.toml").is_file()
