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


def test_a_remote_string_cannot_forge_a_log_line() -> None:
    """Red team: a raft hello whose node id held a newline, logged in a refusal, wrote a forged
    ``critical`` line into the node's log. Control characters (and U+2028/U+2029) in the
    message or a field are escaped: one event, one line."""
    forged = 'evil\n2026-12-05T00:00:00.000Z critical univrs.node "FAKE"'
    record = logging.LogRecord(
        "univrs.net", logging.WARNING, "f.py", 1, "closing raft connection from %s", (forged,), None
    )
    record.peer = "x\r\x1b[31my\u2028z\x00"
    line = KeyValueFormatter("n1").format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "\x00" not in line
    assert 'from evil\\n2026-12-05T00:00:00.000Z critical univrs.node \\"FAKE\\""' in line
    assert 'peer="x\\r\\x1b[31my\\u2028z\\x00"' in line
    assert "plain=ok" in KeyValueFormatter().format(_with(record, plain="ok"))


def _with(record: logging.LogRecord, **fields: object) -> logging.LogRecord:
    for key, value in fields.items():
        setattr(record, key, value)
    return record


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
