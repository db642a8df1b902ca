"""Helpers of the simulator's checker tests (tests/test_sim.py, tests/test_sim_runs.py): entries,
writes, and observing them durable and applied on a Checker."""

from __future__ import annotations

import pytest

from univrs.raft.messages import Entry, EntryKind, Membership, encode_membership
from univrs.sim.checker import Checker, InvariantViolation
from univrs.sim.kv import KvWrite, decode_write, encode_write

NODES = ["a", "b", "c"]


def entry(index: int, term: int, data: bytes = b"") -> Entry:
    kind = EntryKind.NORMAL if data else EntryKind.NOOP
    return Entry(index=index, term=term, kind=kind, data=data)


def config(index: int, term: int, voters: str) -> Entry:
    """A CONFIG entry whose voters are the letters of ``voters``."""
    data = encode_membership(Membership(voters=frozenset(voters)))
    return Entry(index=index, term=term, kind=EntryKind.CONFIG, data=data)


def write(index: int, term: int, key: str, value: str) -> Entry:
    w = KvWrite(client=0, op=index, key=key, value=value)
    return entry(index, term, encode_write(w))


def durable_everywhere(c: Checker, entries: list[Entry], nodes: list[str] = NODES) -> None:
    for n in nodes:
        c.observe_issued(n, None, entries)
        c.observe_durable(n, None, entries)


def apply_all(c: Checker, node: str, entries: list[Entry]) -> None:
    for e in entries:
        if e.kind is EntryKind.NORMAL:
            w = decode_write(e.data)
            c.observe_apply(node, e, w, effect=True)
        else:
            c.observe_apply(node, e)


def expect(invariant: str) -> pytest.RaisesExc[InvariantViolation]:
    return pytest.raises(InvariantViolation, match=f"^{invariant}:")
