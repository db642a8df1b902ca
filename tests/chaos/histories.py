"""Helpers to write small histories by hand, and a brute-force linearizability oracle."""

from __future__ import annotations

import itertools
import math
from typing import Any

from univrs.chaos.history import Event, EventType, Fn, Operation, pair


class H:
    """A history under construction: ``h.op(p, "write", "x", "a", 0, 1)`` adds an invoke at
    time 0 and an ok at time 1; ``status`` "fail"/"info" (info with ``end=None`` means no
    completion at all)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def op(
        self,
        process: int,
        f: str,
        key: str,
        value: Any,
        start: float,
        end: float | None,
        status: str = "ok",
        out: Any = None,
        mismatch: bool = False,
    ) -> H:
        fn = Fn(f)
        self.events.append(
            Event(process=process, type=EventType.INVOKE, f=fn, key=key, value=value, time=start)
        )
        if end is not None:
            self.events.append(
                Event(
                    process=process,
                    type=EventType(status),
                    f=fn,
                    key=key,
                    value=out if fn is Fn.READ else value,
                    time=end,
                    mismatch=mismatch,
                )
            )
        return self

    def sorted_events(self) -> list[Event]:
        """Events in time order (invocations before completions at equal times)."""
        return sorted(self.events, key=lambda e: (e.time, e.type is not EventType.INVOKE))


def brute_force(ops: list[Operation], init: Any = None) -> bool:
    """Linearizable per key by trying every order (and, for unknown operations, whether they
    happened at all); only for a handful of operations."""
    keys = {op.key for op in ops}
    return all(_brute_key([op for op in ops if op.key == k], init) for k in keys)


def _brute_key(ops: list[Operation], init: Any) -> bool:
    ops = [op for op in ops if op.status is not EventType.FAIL]
    unknown = [op for op in ops if op.status is EventType.INFO]
    known = [op for op in ops if op.status is not EventType.INFO]
    for r in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, r):
            subset = known + list(chosen)
            for order in itertools.permutations(subset):
                if _respects_time(order) and _legal(order, init):
                    return True
    return False


def _respects_time(order: tuple[Operation, ...]) -> bool:
    # a before b in real time (a returned before b was called) must keep that order
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            if not math.isinf(b.ret) and b.ret < a.call:
                return False
    return True


def _legal(order: tuple[Operation, ...], init: Any) -> bool:
    state = init
    for op in order:
        if op.f is Fn.READ:
            if op.status is EventType.OK and op.output != state:
                return False
        elif op.f is Fn.WRITE:
            state = op.input
        elif op.f is Fn.DELETE:
            state = None
        else:
            old, new = op.input
            if state == old:
                state = new
            elif op.status is EventType.OK:
                return False
            else:
                return False  # an unknown cas that happened must have seen old
    return True


def ops_of(h: H) -> list[Operation]:
    return pair(h.sorted_events())
