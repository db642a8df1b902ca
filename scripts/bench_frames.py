"""In-process CPU per websocket frame: wsproto's own path against univrs/net/wsfast.py's
(docs/performance.md, "Round 23").

Each frame kind is one of ours, at its typical size on the write path: a one-client
AppendEntries (~120 bytes), an ack (~20), a 64-client batch's AppendEntries (~13 KB), a client
frame of ~8 requests (~1 KB) and its answer frame (~600). Reading: the receiving side's
``receive_data`` and ``events`` (a server reads masked frames, a client unmasked ones), as
trio-websocket's reader calls them; writing: the sending side's frame bytes (wsproto's
``send`` against ``wsfast.binary_frame``). Timed with ``time.process_time`` over
``--frames`` frames, the two paths alternating ``--repeats`` times; prints the median µs per
frame of each and the saving, and one JSON line.

    .venv/bin/python scripts/bench_frames.py [--repeats 7] [--frames 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from wsproto import WSConnection
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage

from univrs.net import wsfast

# (name, payload bytes, the sender's side: CLIENT frames are masked)
KINDS = (
    ("append, 1 client", 120, ConnectionType.CLIENT),
    ("ack", 20, ConnectionType.CLIENT),
    ("append, 64 clients", 13_000, ConnectionType.CLIENT),
    ("client frame", 1_000, ConnectionType.CLIENT),
    ("answer frame", 600, ConnectionType.SERVER),
)


def _other(side: ConnectionType) -> ConnectionType:
    return ConnectionType.SERVER if side is ConnectionType.CLIENT else ConnectionType.CLIENT


def _read(frame: bytes, side: ConnectionType, fast: bool, n: int) -> float:
    conn: Any = Connection(side)
    events: Callable[[], Any] = (
        (lambda: wsfast._events(conn, wsfast.FAST_MAX)) if fast else conn.events
    )
    t = time.process_time()
    for _ in range(n):
        conn.receive_data(frame)
        for _event in events():
            pass
    return (time.process_time() - t) / n * 1e6


def _write(payload: bytes, side: ConnectionType, fast: bool, n: int) -> float:
    wsc = WSConnection(side)
    wsc.connection = Connection(side)
    t = time.process_time()
    if fast:
        for _ in range(n):
            wsfast.binary_frame(wsc, payload)
    else:
        for _ in range(n):
            wsc.send(BytesMessage(data=payload))
    return (time.process_time() - t) / n * 1e6


def _check(payload: bytes, frame: bytes, side: ConnectionType) -> None:
    """Both paths read ``frame`` as ``payload``, and the fast frame reads back as it: a bench
    of a path that gives something else would time nothing worth comparing."""
    for fast in (False, True):
        conn: Any = Connection(_other(side))
        conn.receive_data(frame)
        got = list(wsfast._events(conn, wsfast.FAST_MAX) if fast else conn.events())
        if [e.data for e in got] != [payload]:
            raise SystemExit(f"the {'fast' if fast else 'wsproto'} read differs")
    wsc = WSConnection(side)
    wsc.connection = Connection(side)
    reader: Any = Connection(_other(side))
    reader.receive_data(wsfast.binary_frame(wsc, payload))
    if [e.data for e in reader.events()] != [payload]:
        raise SystemExit("the fast frame reads back differently")


def main() -> None:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--frames", type=int, default=20_000)
    args = parser.parse_args()
    out: dict[str, dict[str, float]] = {}
    for name, size, side in KINDS:
        payload = os.urandom(size)
        frame = Connection(side).send(BytesMessage(data=payload))
        _check(payload, frame, side)
        n = max(1, args.frames * 1000 // max(size, 1000))
        runs: dict[str, list[float]] = {"read": [], "read_fast": [], "write": [], "write_fast": []}
        for _ in range(args.repeats):
            runs["read"].append(_read(frame, _other(side), False, n))
            runs["read_fast"].append(_read(frame, _other(side), True, n))
            runs["write"].append(_write(payload, side, False, n))
            runs["write_fast"].append(_write(payload, side, True, n))
        med = {k: round(statistics.median(v), 2) for k, v in runs.items()}
        out[name] = med
        print(
            f"{name:20s} ({size:6d} B, {'masked' if side is ConnectionType.CLIENT else 'plain'}):"
            f" read {med['read']:6.2f} -> {med['read_fast']:6.2f} µs,"
            f" write {med['write']:6.2f} -> {med['write_fast']:6.2f} µs"
        )
    print(json.dumps({"repeats": args.repeats, "frames": args.frames, "median_us": out}))


if __name__ == "__main__":
    main()
