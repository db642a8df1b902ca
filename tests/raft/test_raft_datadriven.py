"""Runs the data-driven transcripts in tests/raft/testdata (see datadriven.py for the format).

``UNIVRS_REWRITE_TESTDATA=1`` rewrites each file's expected output from the code as it is.
"""

from __future__ import annotations

import pathlib

import pytest
from datadriven import REWRITE, Runner, run_file

TESTDATA = pathlib.Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


def test_there_are_transcripts() -> None:
    assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_transcript(path: pathlib.Path) -> None:
    expected, actual = run_file(path)
    if REWRITE:
        path.write_text(actual)
        return
    assert actual == expected, f"{path.name} differs; rerun with UNIVRS_REWRITE_TESTDATA=1"


def test_a_wrong_expectation_fails(tmp_path: pathlib.Path) -> None:
    # The comparison is real: a transcript whose expected output is wrong does not pass.
    good = (TESTDATA / "election.txt").read_text()
    assert "leader term=2" in good
    bad = tmp_path / "bad.txt"
    bad.write_text(good.replace("leader term=2", "leader term=3", 1))
    expected, actual = run_file(bad)
    assert expected != actual and "leader term=2" in actual
    runner = Runner()
    runner.run("bootstrap voters=n1")
    assert runner.run("propose n1 x")[0].startswith("error: NotLeader")
