"""The simulator checks, at every durable write that cuts a log, that the entry the node's state
machine applied last is still on its disk (univrs/sim/storage.py ``_check_applied_on_disk``).

Session 26's durability audit found a write queue that reported a write's entries durable
while a queued write was about to cut them (an entry replaced by one leader and put back by a
later one: tests/raft/test_raft_persist_aba.py); the node then applied entries its disk lost
a moment later. Until then the simulator would have noticed only through a crash at that very
moment and the LMDB backend's start check. The check fires at the write itself, with either
backend.
"""

from __future__ import annotations

import pytest

from univrs.raft.interpreter import MergedWrite
from univrs.raft.messages import Entry
from univrs.sim.disk import SimDisk
from univrs.sim.invariants import STATE_DURABLE, InvariantViolation
from univrs.sim.node import SimNode
from univrs.sim.storage import _check_applied_on_disk


def write(truncate_from: int | None, entries: tuple[Entry, ...]) -> MergedWrite:
    return MergedWrite(
        hard_state=None, truncate_from=truncate_from, entries=entries, after_persist=()
    )


def node(applied: int, term: int, log_terms: list[int]) -> SimNode:
    sn = SimNode(id="n3", disk=SimDisk())
    sn.disk.store(
        write(None, tuple(Entry(index=i + 1, term=t, data=b"") for i, t in enumerate(log_terms)))
    )
    sn.kv.applied, sn.kv.applied_term = applied, term
    return sn


def test_a_cut_below_the_applied_entry_is_a_violation() -> None:
    sn = node(3, 2, [1, 2, 2])
    _check_applied_on_disk(sn)  # the disk holds (3, 2)
    sn.disk.store(write(2, (Entry(index=2, term=3, data=b""),)))
    with pytest.raises(InvariantViolation) as info:
        _check_applied_on_disk(sn)
    assert info.value.invariant == STATE_DURABLE
    assert "applied (3, term 2)" in info.value.detail


def test_the_same_index_of_another_term_is_a_violation_too() -> None:
    sn = node(2, 2, [1, 2])
    sn.disk.store(write(2, (Entry(index=2, term=3, data=b""),)))
    with pytest.raises(InvariantViolation):
        _check_applied_on_disk(sn)


def test_a_snapshot_the_state_took_ahead_of_its_install_or_a_compaction_is_no_violation() -> None:
    sn = node(62, 34, [1] * 57)
    sn.installing = 62  # the contract's step 0: the state takes the snapshot first
    _check_applied_on_disk(sn)
    sn.installing = 0
    with pytest.raises(InvariantViolation):
        _check_applied_on_disk(sn)
    sn.disk.compact(57)
    sn.kv.applied, sn.kv.applied_term = 50, 1  # covered by what the log was compacted to
    _check_applied_on_disk(sn)
