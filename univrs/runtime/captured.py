"""Captured changes (``AppliedChanges``) as one ``bytes``: the watch history's stored form.

The runtime's watch history (univrs/runtime/watch.py) keeps the changes of the last thousands
of revisions for seconds. Kept as objects (the before and after ``StoredWorkload``, instance or
node, the item tuples, the counts: about 18 containers per write) they reached the
collector's oldest generation and every full collection walked them again, freeing nothing
(docs/performance.md, Round 10). A ``bytes`` object is not tracked by the collector, so each
revision's changes are kept as one, decoded only when a watcher reads that revision.

Format: ``marshal`` (its version 2: ``MARSHAL_VERSION``) of one flat list (marshal, not CBOR:
three times faster to write, and these bytes never leave the process, so its format changing
between Python versions does not matter), four values per item: the kind's number (its
position in ``ObjectKind``), the id, then the object before and the object after, each None
(absent) or the object's snapshot row (univrs/sm/snapshot.py: the same rows the snapshots and
the LMDB tables use). A workload's side is a pair: its five instance counts as captured
(pending, running, succeeded, failed, unknown) and its row's CBOR bytes, the very bytes the
state's LMDB table stores (``storage.sm_row_bytes.workload_bytes``: encoded once per stored
workload, a scale's spliced from its previous version's; round 18), so a scale's revision
costs a few references, not two rows copied. ``decode_changes(encode_changes(c), r)`` equals
``c`` (revision ``r``), so its events are the same (tests/runtime/test_watch_stored.py).
The common revision, one workload's change with both sides (a scale), is encoded by
``encode_workload_change``: the same bytes, its two rows read from ``workload_bytes``'s cache
in one look-up (session 30; ``WatchHub.applied_many`` writes that case out;
tests/runtime/test_watch_many.py checks both against the general ``_encode_items``).
"""

from __future__ import annotations

import marshal
from typing import Any

import cbor2

from univrs.sm.events import ObjectKind
from univrs.sm.objects import AppliedChanges
from univrs.sm.snapshot import (
    _instance_row,
    _instance_v1,
    _node_row,
    _node_v1,
    _Shared,
    _workload_v1,
)
from univrs.storage.sm_row_bytes import cached, workload_bytes

_KINDS = tuple(ObjectKind)
_KIND_NUMBER = {kind: number for number, kind in enumerate(_KINDS)}
_WORKLOAD, _INSTANCE = ObjectKind.WORKLOAD, ObjectKind.INSTANCE
WORKLOAD_NUMBER = _KIND_NUMBER[_WORKLOAD]

# marshal's version 2, not its default (4): versions 3 and up write an object met twice as a
# reference, for which every dump builds a table of the objects it writes. A revision's list
# is small and shares little (a scale's before and after counts: some 30 bytes), and that
# table cost more than it saved (``encode_changes`` of a scale 1.90 against 1.69 µs, session
# 29). ``marshal.loads`` reads every version, into equal values.
MARSHAL_VERSION = 2
_ROWS = cached()  # ``workload_bytes``'s cache (always the same dict), read only


def _workload_side(captured: Any) -> tuple[Any, bytes] | None:
    if captured is None:
        return None
    stored, counts = captured  # counts: ``objects.Counts`` (a tuple of five ints)
    return counts, workload_bytes(stored)


def encode_changes(changes: AppliedChanges) -> bytes:
    """``changes`` (not its revision) as one ``bytes`` (see the module docstring)."""
    items = changes.items
    if len(items) == 1:
        kind, ident, before, after = items[0]
        if kind is _WORKLOAD and before is not None and after is not None:
            return encode_workload_change(ident, before, after)
    return _encode_items(items)


def encode_workload_change(ident: str, before: Any, after: Any) -> bytes:
    """``encode_changes`` of the one change of workload ``ident`` from ``before`` to
    ``after`` (both there: a scale, most writes; session 30): the same bytes, its two rows in
    one look-up of ``workload_bytes``'s cache when they are its two newest objects of the id
    (the state's table put the after just before: what ``workload_bytes`` answers for each,
    the cache left as it is), else ``workload_bytes``'s, in ``_encode_items``'s order."""
    hit = _ROWS.get(ident)
    if hit is not None and hit[0] is after[0] and hit[3] is before[0]:
        before_row, after_row = hit[4], hit[1]
    else:
        before_row, after_row = workload_bytes(before[0]), workload_bytes(after[0])
    # (a side: the counts, then the row: ``_workload_side``)
    flat = [WORKLOAD_NUMBER, ident, (before[1], before_row), (after[1], after_row)]
    return marshal.dumps(flat, MARSHAL_VERSION)


def _encode_items(items: tuple[Any, ...]) -> bytes:
    """``encode_changes`` of these items, the general way (the reference of its fast path)."""
    flat: list[Any] = []
    append = flat.append
    for kind, ident, before, after in items:
        append(_KIND_NUMBER[kind])
        append(ident)
        if kind is _WORKLOAD:
            append(_workload_side(before))
            append(_workload_side(after))
        elif kind is _INSTANCE:
            append(None if before is None else _instance_row(before))
            append(None if after is None else _instance_row(after))
        else:
            append(None if before is None else _node_row(before))
            append(None if after is None else _node_row(after))
    return marshal.dumps(flat, MARSHAL_VERSION)


def _workload_back(side: tuple[Any, bytes] | None, shared: _Shared) -> Any:
    if side is None:
        return None
    counts, data = side
    return (_workload_v1(cbor2.loads(data), "watch history", shared), counts)


def decode_changes(data: bytes, revision: int) -> AppliedChanges:
    """The changes ``encode_changes`` made ``data`` of, at ``revision``."""
    flat = marshal.loads(data)
    shared = _Shared()  # what the objects of one revision have in common, read once
    items: list[tuple[ObjectKind, str, Any, Any]] = []
    for at in range(0, len(flat), 4):
        number, ident, before, after = flat[at : at + 4]
        kind = _KINDS[number]
        if kind is _WORKLOAD:
            items.append(
                (kind, ident, _workload_back(before, shared), _workload_back(after, shared))
            )
        elif kind is _INSTANCE:
            items.append(
                (
                    kind,
                    ident,
                    None if before is None else _instance_v1(before, "watch history"),
                    None if after is None else _instance_v1(after, "watch history"),
                )
            )
        else:
            items.append(
                (
                    kind,
                    ident,
                    None if before is None else _node_v1(before, "watch history"),
                    None if after is None else _node_v1(after, "watch history"),
                )
            )
    return AppliedChanges(revision, tuple(items))
