"""The JSON Lines history: exact line format, round trip, pairing and its errors."""

from __future__ import annotations

import io
import json
import math
import pathlib

import pytest

from univrs.chaos.history import (
    Event,
    EventType,
    Fn,
    HistoryError,
    count,
    dumps,
    pair,
    read_jsonl,
    write_jsonl,
)


def ev(process: int, type_: str, f: str, key: str, value: object, t: float) -> Event:
    return Event(process=process, type=EventType(type_), f=Fn(f), key=key, value=value, time=t)


def test_line_has_exactly_the_issue_fields() -> None:
    line = dumps(ev(3, "invoke", "cas", "k1", ["a", "b"], 1.5))
    assert json.loads(line) == {
        "process": 3,
        "type": "invoke",
        "f": "cas",
        "key": "k1",
        "value": ["a", "b"],
        "time": 1.5,
    }
    assert "\n" not in line
    mismatch = Event(
        process=1, type=EventType.FAIL, f=Fn.CAS, key="k", value=["a", "b"], time=2.0, mismatch=True
    )
    assert json.loads(dumps(mismatch))["mismatch"] is True


def test_round_trip(tmp_path: pathlib.Path) -> None:
    events = [
        ev(0, "invoke", "write", "x", "v1", 0.0),
        ev(0, "ok", "write", "x", "v1", 0.5),
        ev(1, "invoke", "read", "x", None, 0.6),
        ev(1, "ok", "read", "x", "v1", 0.7),
    ]
    buf = io.StringIO()
    write_jsonl(events, buf)
    path = tmp_path / "h.jsonl"
    path.write_text(buf.getvalue())
    assert read_jsonl(path) == events


@pytest.mark.parametrize(
    "line, why",
    [
        ("[1]", "JSON object"),
        ('{"process": 1}', "lacks"),
        (
            '{"process": "1", "type": "ok", "f": "read", "key": "x", "value": null, "time": 1}',
            "process",
        ),
        (
            '{"process": 1, "type": "done", "f": "read", "key": "x", "value": null, "time": 1}',
            "done",
        ),
        ('{"process": 1, "type": "ok", "f": "read", "key": 5, "value": null, "time": 1}', "key"),
    ],
)
def test_bad_lines_name_the_line(tmp_path: pathlib.Path, line: str, why: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(dumps(ev(0, "invoke", "read", "x", None, 0)) + "\n" + line + "\n")
    with pytest.raises(HistoryError, match=why) as info:
        read_jsonl(path)
    assert ":2:" in str(info.value)


def test_pairing() -> None:
    ops = pair(
        [
            ev(0, "invoke", "write", "x", "a", 0),
            ev(1, "invoke", "read", "x", None, 1),
            ev(0, "info", "write", "x", "a", 2),
            ev(1, "ok", "read", "x", "a", 3),
            ev(2, "invoke", "delete", "x", None, 4),
        ]
    )
    w, r, d = ops
    assert (w.status, w.ret, w.input) == (EventType.INFO, math.inf, "a")
    assert (r.status, r.call, r.ret, r.output) == (EventType.OK, 1, 3, "a")
    assert (d.status, d.ret) == (EventType.INFO, math.inf)  # never completed
    c = count(ops)
    assert (c.ok, c.fail, c.info, c.total) == (1, 0, 2, 3)


def test_pairing_errors() -> None:
    with pytest.raises(HistoryError, match="without an invoke"):
        pair([ev(0, "ok", "read", "x", None, 0)])
    with pytest.raises(HistoryError, match="does not match"):
        pair([ev(0, "invoke", "read", "x", None, 0), ev(0, "ok", "read", "y", None, 1)])
    with pytest.raises(HistoryError, match=r"\[old, new\]"):
        pair([ev(0, "invoke", "cas", "x", "a", 0)])
