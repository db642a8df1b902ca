"""A linearizability checker for register histories (Wing & Gong 1993, Lowe 2017).

Theory of operation. A history is linearizable when every operation can be given one instant
between its invocation and its completion such that, taken in the order of those instants, the
operations are a legal sequential run of the model (Herlihy & Wing 1990). Registers are
independent, so each key is checked on its own (P-compositionality, Horn & Kroening 2015, as in
Porcupine and Knossos' ``independent`` checker).

The search for one key is Wing-Gong-Lowe, as in Porcupine's ``checkSingle``: call and return
entries sorted by time (calls before returns at equal times: touching operations count as
concurrent, which can only accept more) form a doubly linked list. Walking it, a call entry is
*tried*: if the model accepts the operation in the current state and the pair
(set of linearized operations, new state) was never seen, the operation is linearized: it and
its return entry are lifted out of the list and the walk restarts at the head. Reaching a return
entry means its operation should have been linearized by now, so the search backtracks: the most
recent linearization is undone and the walk goes on after it. The list becoming empty is a
witness; backtracking with nothing to undo proves the key non-linearizable. The memo (Lowe's
improvement) makes every (bitset, state) pair explored at most once.

Outcomes: ``fail`` operations certainly did not happen and are removed. ``info`` operations (or
invocations with no completion) may have happened at any time after their call: their return is
at infinity, and the model accepts them in any state (an unknown cas moves the register only if
it holds the expected value). Since such an operation can always be placed last, where nothing
observes it, one whose effect no completed operation observes is removed up front (exactly, not
a heuristic): info reads always, info writes and cas whose new value no kept operation depends
on (no ok read returned it, no ok cas and no kept unknown cas expected it).
This matters: a partition produces many timeouts, and every open operation widens the search.

The search is exponential in the worst case, so it runs under a deadline and answers
``unknown`` (never a hang) when the deadline passes.
"""

from __future__ import annotations

import enum
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from univrs.chaos.history import Event, EventType, Fn, Operation, by_key, pair

DEFAULT_TIMEOUT = 60.0  # seconds for the whole history
_CHECK_EVERY = 512  # search steps between two looks at the clock


class Verdict(enum.StrEnum):
    """The answer of the checker for a key or a whole history."""

    OK = "linearizable"
    FAIL = "not-linearizable"
    UNKNOWN = "unknown"  # the search ran out of time


def freeze(value: Any) -> Any:
    """A hashable canonical form of a JSON value (lists become tuples, objects sorted pairs)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return ("__object__", tuple(sorted((k, freeze(v)) for k, v in value.items())))
    return value


@attrs.frozen(kw_only=True)
class KeyResult:
    """The verdict for one key, with a diagnosis when it is not linearizable."""

    key: str
    verdict: Verdict
    operations: int  # operations searched (after removing fail and unobservable info ops)
    explanation: str = ""
    stuck: Operation | None = None  # the operation no linearization could place in time
    longest_prefix: tuple[int, ...] = ()  # ids of the longest linearized sequence found
    seconds: float = 0.0


@attrs.frozen(kw_only=True)
class CheckResult:
    """The verdict for a whole history: OK only if every key is, FAIL if any key fails."""

    verdict: Verdict
    keys: tuple[KeyResult, ...]
    seconds: float

    @property
    def failures(self) -> tuple[KeyResult, ...]:
        return tuple(k for k in self.keys if k.verdict is Verdict.FAIL)

    @property
    def unknown(self) -> tuple[KeyResult, ...]:
        return tuple(k for k in self.keys if k.verdict is Verdict.UNKNOWN)

    def summary(self) -> str:
        if self.verdict is Verdict.OK:
            return f"linearizable ({len(self.keys)} keys, {self.seconds:.2f}s)"
        if self.verdict is Verdict.FAIL:
            return "NOT linearizable: " + "; ".join(
                f"{k.key}: {k.explanation}" for k in self.failures
            )
        return "unknown (search timed out on " + ", ".join(k.key for k in self.unknown) + ")"


# ---------------------------------------------------------------------------- the model

# A step returns the new state, or _ILLEGAL when the model refuses the operation.
_ILLEGAL = object()


def register_step(state: Any, op: Operation) -> Any:
    """The sequential register: read/write/cas/delete; state None means absent.

    ``op.input`` and ``op.output`` are frozen values (see ``freeze``)."""
    known = op.status is EventType.OK
    if op.f is Fn.READ:
        if not known:
            return state
        return state if op.output == state else _ILLEGAL
    if op.f is Fn.WRITE:
        return op.input
    if op.f is Fn.DELETE:
        return None
    # cas [old, new]
    old, new = op.input
    if state == old:
        return new
    return _ILLEGAL if known else state


# ---------------------------------------------------------------------------- preparation


def _prepare(ops: Sequence[Operation]) -> list[Operation]:
    """Frozen values; fail ops removed; info ops nobody could observe removed (see above)."""
    kept = [
        attrs.evolve(op, input=freeze(op.input), output=freeze(op.output))
        for op in ops
        if op.status is not EventType.FAIL
    ]
    # Values some kept operation depends on: what ok reads returned, the expected value of
    # ok cas, and (to a fixpoint) the expected value of every info cas that is kept because
    # its own new value is depended on.
    observed: set[Any] = set()
    for op in kept:
        if op.status is EventType.OK:
            if op.f is Fn.READ:
                observed.add(op.output)
            elif op.f is Fn.CAS:
                observed.add(op.input[0])
    unknown_cas = [op for op in kept if op.status is EventType.INFO and op.f is Fn.CAS]
    grew = True
    while grew:
        grew = False
        for op in unknown_cas:
            old, new = op.input
            if new in observed and old not in observed:
                observed.add(old)
                grew = True

    def needed(op: Operation) -> bool:
        if op.status is not EventType.INFO:
            return True
        if op.f is Fn.READ:
            return False
        if op.f is Fn.WRITE:
            return op.input in observed
        if op.f is Fn.CAS:
            return op.input[1] in observed
        return True  # an unknown delete

    return [op for op in kept if needed(op)]


class _Timeout(Exception):
    pass


# ---------------------------------------------------------------------------- search


def check_operations(
    key: str,
    ops: Sequence[Operation],
    *,
    init: Any = None,
    step: Callable[[Any, Operation], Any] = register_step,
    deadline: float | None = None,
) -> KeyResult:
    """Check one key's operations (all of the same key) against the model from ``init``."""
    started = time.monotonic()
    prepared = _prepare(ops)
    try:
        result = _search(key, prepared, freeze(init), step, deadline)
    except _Timeout:
        result = KeyResult(
            key=key,
            verdict=Verdict.UNKNOWN,
            operations=len(prepared),
            explanation="the search ran out of time",
        )
    return attrs.evolve(result, seconds=time.monotonic() - started)


def _search(
    key: str,
    ops: list[Operation],
    init: Any,
    step: Callable[[Any, Operation], Any],
    deadline: float | None,
) -> KeyResult:
    n = len(ops)
    # Entries 1..2n: (time, 0 for call / 1 for return, op index). Node 0 is the head sentinel.
    entries = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, i) for i, op in enumerate(ops)]
    )
    size = 2 * n + 1
    nxt = [0] * size
    prv = [0] * size
    is_call = [False] * size
    op_of = [0] * size
    ret_node = [0] * n  # node of each operation's return entry
    for pos, (_t, kind, i) in enumerate(entries, 1):
        is_call[pos] = kind == 0
        op_of[pos] = i
        if kind == 1:
            ret_node[i] = pos
        prv[pos] = pos - 1
        nxt[pos - 1] = pos
    nxt[size - 1] = -1  # -1 ends the list
    if n == 0:
        nxt[0] = -1

    def lift(node: int) -> None:
        # Unlink the call node and its return node (dancing links: unlift restores both).
        nxt[prv[node]] = nxt[node]
        if nxt[node] != -1:
            prv[nxt[node]] = prv[node]
        r = ret_node[op_of[node]]
        nxt[prv[r]] = nxt[r]
        if nxt[r] != -1:
            prv[nxt[r]] = prv[r]

    def unlift(node: int) -> None:
        r = ret_node[op_of[node]]
        nxt[prv[r]] = r
        if nxt[r] != -1:
            prv[nxt[r]] = r
        nxt[prv[node]] = node
        if nxt[node] != -1:
            prv[nxt[node]] = node

    linearized = 0
    state = init
    stack: list[tuple[int, Any]] = []  # (call node, state before it)
    seen: set[tuple[int, Any]] = set()
    best_depth = -1
    best_prefix: tuple[int, ...] = ()
    stuck: int | None = None
    best_state: Any = init
    steps = 0
    node = nxt[0]
    while nxt[0] != -1:
        steps += 1
        if deadline is not None and steps % _CHECK_EVERY == 0 and time.monotonic() > deadline:
            raise _Timeout
        if is_call[node]:
            i = op_of[node]
            new_state = step(state, ops[i])
            if new_state is not _ILLEGAL:
                new_lin = linearized | (1 << i)
                memo = (new_lin, new_state)
                if memo not in seen:
                    seen.add(memo)
                    stack.append((node, state))
                    state, linearized = new_state, new_lin
                    lift(node)
                    node = nxt[0]
                    continue
            node = nxt[node]
        else:
            # A return entry: its operation had to be linearized before this point.
            if len(stack) > best_depth:
                best_depth = len(stack)
                best_prefix = tuple(ops[op_of[c]].id for c, _s in stack)
                stuck = op_of[node]
                best_state = state
            if not stack:
                break
            node, state = stack.pop()
            linearized &= ~(1 << op_of[node])
            unlift(node)
            node = nxt[node]
    else:
        return KeyResult(key=key, verdict=Verdict.OK, operations=n)
    assert stuck is not None
    bad = ops[stuck]
    return KeyResult(
        key=key,
        verdict=Verdict.FAIL,
        operations=n,
        stuck=bad,
        longest_prefix=best_prefix,
        explanation=(
            f"after {best_depth} operations linearized (register then "
            f"{_show(best_state)}), no order places {describe(bad)} before it returned"
        ),
    )


def _show(value: Any) -> str:
    if value is None:
        return "absent"
    return json.dumps(_thaw(value))


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        if len(value) == 2 and value[0] == "__object__":
            return {k: _thaw(v) for k, v in value[1]}
        return [_thaw(v) for v in value]
    return value


def describe(op: Operation) -> str:
    """A one-line human description of an operation."""
    ret = "?" if math.isinf(op.ret) else f"{op.ret:.3f}"
    what = f"{op.f.value}"
    if op.f is Fn.READ:
        what += f" -> {_show(op.output)}" if op.status is EventType.OK else " -> ?"
    elif op.f is Fn.WRITE:
        what += f" {_show(op.input)}"
    elif op.f is Fn.CAS:
        old, new = op.input
        what += f" {_show(old)} -> {_show(new)}"
    return f"[{what} by process {op.process}, {op.status.value}, {op.call:.3f}..{ret}]"


# ---------------------------------------------------------------------------- whole histories


def check_history(
    history: Iterable[Event] | Iterable[Operation],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    initial: dict[str, Any] | None = None,
) -> CheckResult:
    """Check a whole history (events or already paired operations), key by key.

    ``initial`` gives keys a starting value (absent otherwise). The deadline covers all keys;
    keys not reached before it are ``unknown``."""
    started = time.monotonic()
    deadline = started + timeout
    items = list(history)
    ops: list[Operation] = (
        pair(items)  # type: ignore[arg-type]
        if items and isinstance(items[0], Event)
        else items  # type: ignore[assignment]
    )
    results = []
    for key, key_ops in by_key(ops):
        init = (initial or {}).get(key)
        if time.monotonic() > deadline:
            results.append(
                KeyResult(
                    key=key,
                    verdict=Verdict.UNKNOWN,
                    operations=len(key_ops),
                    explanation="not searched: the deadline had passed",
                )
            )
            continue
        results.append(check_operations(key, key_ops, init=init, deadline=deadline))
    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts:
        verdict = Verdict.FAIL
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    return CheckResult(verdict=verdict, keys=tuple(results), seconds=time.monotonic() - started)
