"""Captured changes (``AppliedChanges``) as one flat tuple of plain values: the watch history's
stored form.

The runtime's watch history (univrs/runtime/watch.py) keeps the changes of the last thousands
of revisions for seconds. Kept as objects (the before and after ``StoredWorkload``, instance or
node, the item tuples, the counts: about 18 containers per write) they reached the
collector's oldest generation and every full collection walked them again, freeing nothing
(docs/performance.md, Round 10). So each revision's changes are kept as one value the full
collections do not walk: until round 17 a ``marshal``-ed ``bytes`` (never tracked), now one
flat tuple of ints, strings and None, which CPython stops tracking at the first young
collection that sees it (a tuple holding only untracked values; flat, because a tuple inside
a tuple is untracked one collection later, as the collector orders them). Built from the
rows with no copy of a row and no encoding, it costs about half of the ``marshal`` form
(round 17, s17-cpu). These values never leave the process.

Form: four parts per item: the kind's number (its position in ``ObjectKind``), the id, then
the object before and the object after, each as -1 (absent) or ``n`` followed by its ``n``
values: the object's snapshot row (univrs/sm/snapshot.py: the same rows the snapshots and the
LMDB tables use), a workload's row preceded by its five instance counts as captured (pending,
running, succeeded, failed, unknown). ``decode_changes(encode_changes(c), r)`` equals ``c``
(revision ``r``), so its events are the same (tests/runtime/test_watch_stored.py).
"""

from __future__ import annotations

from typing import Any

from univrs.sm.events import ObjectKind
from univrs.sm.objects import AppliedChanges
from univrs.sm.snapshot import (
    _instance_row,
    _instance_v1,
    _node_row,
    _node_v1,
    _Shared,
    _workload_v1,
    workload_row,
)

_KINDS = tuple(ObjectKind)
_KIND_NUMBER = {kind: number for number, kind in enumerate(_KINDS)}
_WORKLOAD, _INSTANCE = ObjectKind.WORKLOAD, ObjectKind.INSTANCE


def encode_changes(changes: AppliedChanges) -> tuple[Any, ...]:
    """``changes`` (not its revision) as one flat tuple of plain values (see the module
    docstring)."""
    flat: list[Any] = []
    append, extend = flat.append, flat.extend
    for kind, ident, before, after in changes.items:
        append(_KIND_NUMBER[kind])
        append(ident)
        for side in (before, after):
            if side is None:
                append(-1)
            elif kind is _WORKLOAD:
                stored, counts = side  # counts: ``objects.Counts``, five ints, in this order
                row = workload_row(stored)  # shared: read, never changed
                append(5 + len(row))
                extend(counts)
                extend(row)
            else:
                row = _instance_row(side) if kind is _INSTANCE else _node_row(side)
                append(len(row))
                extend(row)
    return tuple(flat)


def decode_changes(flat: tuple[Any, ...], revision: int) -> AppliedChanges:
    """The changes ``encode_changes`` made ``flat`` of, at ``revision``."""
    shared = _Shared()  # what the objects of one revision have in common, read once
    items: list[tuple[ObjectKind, str, Any, Any]] = []
    at, end = 0, len(flat)
    while at < end:
        kind, ident = _KINDS[flat[at]], flat[at + 1]
        at += 2
        sides: list[Any] = []
        for _ in range(2):
            n = flat[at]
            at += 1
            if n < 0:
                sides.append(None)
                continue
            values = list(flat[at : at + n])
            at += n
            if kind is _WORKLOAD:
                stored = _workload_v1(values[5:], "watch history", shared)
                sides.append((stored, tuple(values[:5])))
            elif kind is _INSTANCE:
                sides.append(_instance_v1(values, "watch history"))
            else:
                sides.append(_node_v1(values, "watch history"))
        items.append((kind, ident, sides[0], sides[1]))
    return AppliedChanges(revision, tuple(items))
