"""Operator logs: one line per event, ``time level logger message key=value ...``.

Callers pass the event's fields with ``extra={...}``; the formatter prints every non-standard
record attribute as ``key=value`` (values with spaces are quoted), so a line reads as text and
parses as key-value pairs. ``--log-format json`` prints the same fields as one JSON object per
line instead (``ts``, ``level``, ``logger``, ``msg``, ``node``, the extras, ``error`` with the
traceback), for log shippers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: a value
# holding one is escaped, so that one event stays one line whatever a remote peer put in a
# string that is logged (a hello's node id with a newline forged a whole "critical" line).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def _value(v: object) -> str:
    s = str(v)
    if not s or any(c in s for c in ' ="') or _CONTROL.search(s):
        quoted = s.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + _CONTROL.sub(_escape, quoted) + '"'
    return s


class KeyValueFormatter(logging.Formatter):
    """Formats records as one key=value line (see the module docstring)."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ms = int(record.msecs)
        parts = [
            f"{ts}.{ms:03d}Z",
            record.levelname.lower(),
            record.name,
            _value(record.getMessage()),
        ]
        if self.node_id is not None:
            parts.append(f"node={_value(self.node_id)}")
        for key, v in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                parts.append(f"{key}={_value(v)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object per line (see the module docstring)."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict[str, object] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.node_id is not None:
            doc["node"] = self.node_id
        for key, v in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in doc:
                doc[key] = v if isinstance(v, bool | int | float | str | None) else str(v)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


def setup_logging(level: str = "info", node_id: str | None = None, fmt: str = "text") -> None:
    """Route univrs logs to stderr, as key=value lines (``fmt="text"``) or JSON lines
    (``"json"``); quiet chatty libraries. ``level`` is one of ``LEVELS``."""
    if level.lower() not in LEVELS or fmt not in FORMATS:
        raise ValueError(f"log level must be one of {LEVELS} and format one of {FORMATS}")
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter(node_id) if fmt == "json" else KeyValueFormatter(node_id)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("hypercorn.access", "trio-websocket", "hypercorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
