"""The operation history of a chaos run: JSON Lines events and their pairing into operations.

One event per line, exactly (issue 7, so other tools such as Jepsen's or Porcupine's readers can
consume it)::

    {"process": <int>, "type": "invoke"|"ok"|"fail"|"info", "f": "read"|"write"|"cas"|"delete",
     "key": <str>, "value": <json>, "time": <float seconds, one monotonic clock>}

On invoke ``value`` is the value to write, ``[old, new]`` for cas and null for read and delete;
on an ok read it is the value read (null when absent). ``fail`` means the operation certainly
did not take effect, ``info`` that its outcome is unknown (timeout, connection lost). A cas that
failed because the value differed may carry ``"mismatch": true``.

A process runs one operation at a time: its next event after an ``invoke`` completes that
invocation. After an ``info`` a process may go on (the unknown operation then stays open for
ever); the workload of this package switches to a fresh process id instead, as Jepsen does.
"""

from __future__ import annotations

import enum
import json
import math
import pathlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

import attrs

from univrs.errors import UnivrsError


class HistoryError(UnivrsError):
    """A history line is malformed or the events do not pair up (which line, and why)."""


class EventType(enum.StrEnum):
    """The ``type`` field of an event."""

    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


class Fn(enum.StrEnum):
    """The ``f`` field: the register operations the workload performs."""

    READ = "read"
    WRITE = "write"
    CAS = "cas"
    DELETE = "delete"


@attrs.frozen(kw_only=True)
class Event:
    """One line of the history."""

    process: int
    type: EventType
    f: Fn
    key: str
    value: Any
    time: float
    mismatch: bool = False

    def to_plain(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "process": self.process,
            "type": self.type.value,
            "f": self.f.value,
            "key": self.key,
            "value": self.value,
            "time": self.time,
        }
        if self.mismatch:
            out["mismatch"] = True
        return out

    @classmethod
    def from_plain(cls, doc: Any) -> Event:
        if not isinstance(doc, dict):
            raise HistoryError(f"an event must be a JSON object, not {type(doc).__name__}")
        try:
            process, time = doc["process"], doc["time"]
            type_, f, key, value = doc["type"], doc["f"], doc["key"], doc["value"]
        except KeyError as exc:
            raise HistoryError(f"event lacks the field {exc.args[0]!r}") from None
        if not isinstance(process, int) or isinstance(process, bool):
            raise HistoryError(f"process must be an integer, not {process!r}")
        if not isinstance(time, int | float) or isinstance(time, bool) or not math.isfinite(time):
            raise HistoryError(f"time must be a finite number, not {time!r}")
        if not isinstance(key, str):
            raise HistoryError(f"key must be a string, not {key!r}")
        try:
            etype, fn = EventType(type_), Fn(f)
        except ValueError as exc:
            raise HistoryError(str(exc)) from None
        return cls(
            process=process,
            type=etype,
            f=fn,
            key=key,
            value=value,
            time=float(time),
            mismatch=bool(doc.get("mismatch", False)),
        )


def dumps(event: Event) -> str:
    """One JSON line (no newline) for ``event``."""
    return json.dumps(event.to_plain(), separators=(",", ":"), sort_keys=False)


def write_jsonl(events: Iterable[Event], out: IO[str]) -> None:
    for e in events:
        out.write(dumps(e) + "\n")


def read_jsonl(path: pathlib.Path | str) -> list[Event]:
    """Read a history file; raises HistoryError naming the line of the first bad event."""
    events = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                events.append(Event.from_plain(json.loads(line)))
            except (ValueError, HistoryError) as exc:
                raise HistoryError(f"{path}:{lineno}: {exc}") from None
    return events


@attrs.frozen(kw_only=True)
class Operation:
    """An invocation paired with its completion.

    ``ret`` is ``math.inf`` for an operation whose outcome is unknown (``info``, or no
    completion at all): it may take effect at any time after ``call``. ``output`` is the value
    an ok read returned (for other operations it is not used).
    """

    id: int  # position of the invocation in the history
    process: int
    f: Fn
    key: str
    input: Any  # invoke value: written value, [old, new] for cas, None for read/delete
    output: Any
    call: float
    ret: float
    status: EventType  # OK, FAIL or INFO (INFO also for "never completed")
    mismatch: bool = False


def pair(events: Iterable[Event]) -> list[Operation]:
    """Pair every invocation with its process's next event; unpaired invocations become
    ``info``. Raises HistoryError for a completion without an invocation, or one whose f/key
    differ from the invocation's."""
    open_: dict[int, tuple[int, Event]] = {}
    done: list[Operation] = []
    for i, e in enumerate(events):
        if e.type is EventType.INVOKE:
            if e.f is Fn.CAS and not (isinstance(e.value, list | tuple) and len(e.value) == 2):
                raise HistoryError(f"event {i}: a cas invoke carries [old, new], not {e.value!r}")
            if e.process in open_:
                # A process reused after an info: the earlier operation stays unknown.
                j, inv = open_.pop(e.process)
                done.append(_op(j, inv, None))
            open_[e.process] = (i, e)
            continue
        if e.process not in open_:
            raise HistoryError(f"event {i}: {e.type} of process {e.process} without an invoke")
        j, inv = open_.pop(e.process)
        if (inv.f, inv.key) != (e.f, e.key):
            raise HistoryError(
                f"event {i}: completion {e.f} {e.key!r} does not match the invocation "
                f"{inv.f} {inv.key!r} of process {e.process}"
            )
        if e.time < inv.time:
            raise HistoryError(f"event {i}: completes before its invocation")
        done.append(_op(j, inv, e))
    for j, inv in open_.values():
        done.append(_op(j, inv, None))
    done.sort(key=lambda op: op.id)
    return done


def _op(index: int, inv: Event, end: Event | None) -> Operation:
    status = EventType.INFO if end is None else end.type
    known = status is not EventType.INFO
    return Operation(
        id=index,
        process=inv.process,
        f=inv.f,
        key=inv.key,
        input=inv.value,
        output=end.value if (end is not None and known) else None,
        call=inv.time,
        ret=end.time if (end is not None and known) else math.inf,
        status=status,
        mismatch=bool(end.mismatch) if end is not None else False,
    )


def by_key(ops: Iterable[Operation]) -> Iterator[tuple[str, list[Operation]]]:
    """Operations grouped by key, keys in sorted order, each group in invocation order."""
    groups: dict[str, list[Operation]] = {}
    for op in ops:
        groups.setdefault(op.key, []).append(op)
    for key in sorted(groups):
        yield key, groups[key]


@attrs.frozen(kw_only=True)
class Counts:
    """Operations by outcome (for the report)."""

    ok: int = 0
    fail: int = 0
    info: int = 0

    @property
    def total(self) -> int:
        return self.ok + self.fail + self.info


def count(ops: Iterable[Operation]) -> Counts:
    c = {EventType.OK: 0, EventType.FAIL: 0, EventType.INFO: 0}
    for op in ops:
        c[op.status] += 1
    return Counts(ok=c[EventType.OK], fail=c[EventType.FAIL], info=c[EventType.INFO])
