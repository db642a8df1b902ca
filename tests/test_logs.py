"""Operator logs (univrs/logs.py): the key=value default, JSON lines, and clean usage errors."""

from __future__ import annotations

import json
import logging
import sys

from click.testing import CliRunner

from univrs.cli import main
from univrs.logs import JsonFormatter, KeyValueFormatter


def _record(exc: bool = False) -> logging.LogRecord:
    record = logging.LogRecord("univrs.raft", logging.INFO, "f.py", 1, "became leader", None, None)
    record.term = 7
    record.peers = ["n2", "n3"]
    record.why = 'a "quoted" reason'
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record.exc_info = sys.exc_info()
    return record


def test_key_value_default() -> None:
    line = KeyValueFormatter("n1").format(_record())
    assert line.split(" ", 3)[1:3] == ["info", "univrs.raft"]
    assert '"became leader" node=n1 term=7' in line and 'why="a \\"quoted\\" reason"' in line


def test_json_lines() -> None:
    line = JsonFormatter("n1").format(_record(exc=True))
    assert "\n" not in line  # one object per line, the traceback inside it
    doc = json.loads(line)
    assert doc["level"] == "info" and doc["logger"] == "univrs.raft" and doc["node"] == "n1"
    assert doc["msg"] == "became leader" and doc["term"] == 7
    assert doc["peers"] == "['n2', 'n3']" and doc["why"] == 'a "quoted" reason'
    assert doc["ts"].endswith("Z") and "RuntimeError: boom" in doc["error"]


def test_bad_log_options_are_usage_errors() -> None:
    """`--log-level bogus` was a traceback (ValueError: Unknown level) after the config load."""
    for args in (["--log-level", "bogus"], ["--log-format", "xml"]):
        result = CliRunner().invoke(main, ["node", "start", *args])
        assert result.exit_code == 2, result.output
        assert "Invalid value for" in result.output and "Traceback" not in result.output
