"""Unit tests of the in-memory log (univrs/raft/log.py)."""

from __future__ import annotations

import pytest
from harness import entries_with_terms

from univrs.raft.log import RaftLog
from univrs.raft.messages import Entry


def log_of(terms: list[int], **kw: int) -> RaftLog:
    return RaftLog(entries=entries_with_terms(terms), **kw)


def test_empty_log_positions() -> None:
    log = RaftLog()
    assert (log.first_index, log.last_index, log.last_term) == (1, 0, 0)
    assert log.term_at(0) == 0
    assert log.term_at(1) is None
    assert not log.has_unstable()


def test_term_lookup_and_bounds() -> None:
    log = log_of([1, 1, 2, 3])
    assert [log.term_at(i) for i in range(0, 6)] == [0, 1, 1, 2, 3, None]
    assert log.entry(3) == Entry(term=2, index=3, data=b"t2i3")
    assert log.entries(2, 3) == (log.entry(2), log.entry(3))
    assert log.entries(3, 2) == ()


def test_snapshot_offset() -> None:
    log = RaftLog(
        entries=(Entry(term=3, index=11), Entry(term=4, index=12)),
        snapshot_index=10,
        snapshot_term=3,
    )
    assert (log.first_index, log.last_index, log.last_term) == (11, 12, 4)
    assert log.term_at(10) == 3
    assert log.term_at(9) is None
    assert log.first_index_of_term_at(11) == 11


def test_append_must_be_contiguous_and_terms_monotonic() -> None:
    log = log_of([1, 2])
    with pytest.raises(AssertionError):
        log.append([Entry(term=2, index=4)])
    with pytest.raises(AssertionError):
        log.append([Entry(term=1, index=3)])
    log.append([Entry(term=2, index=3), Entry(term=5, index=4)])
    assert log.last_index == 4


def test_unstable_tracking_and_truncation() -> None:
    log = log_of([1, 1, 1])
    assert not log.has_unstable()  # start-up entries come from storage
    log.append(entries_with_terms([1, 1, 1, 2, 2])[3:])
    assert log.take_unstable() == (None, entries_with_terms([1, 1, 1, 2, 2])[3:])
    assert log.stable_limit == 5
    # A conflict replaces already-handed-out entries: storage must delete from 4.
    log.truncate_from(4)
    log.append([Entry(term=3, index=4)])
    trunc, ents = log.take_unstable()
    assert trunc == 4 and [e.index for e in ents] == [4]
    # Truncating entries never handed out needs no storage truncation.
    log.append([Entry(term=3, index=5)])
    log.truncate_from(5)
    log.append([Entry(term=4, index=5)])
    assert log.take_unstable() == (None, (Entry(term=4, index=5),))


def test_truncation_keeps_lowest_pending_point() -> None:
    log = log_of([1, 1, 1, 1])
    log.truncate_from(4)
    log.truncate_from(2)
    log.append([Entry(term=2, index=2)])
    assert log.take_unstable()[0] == 2


def test_slice_bounds_count_and_bytes_but_sends_at_least_one() -> None:
    ents = tuple(Entry(term=1, index=i, data=b"x" * 10) for i in range(1, 11))
    log = RaftLog(entries=ents)
    assert len(log.slice(1, 3, 1000)) == 3
    assert len(log.slice(1, 100, 25)) == 2
    assert len(log.slice(1, 100, 5)) == 1  # oversized entry still goes alone
    assert log.slice(11, 100, 1000) == ()
    assert [e.index for e in log.slice(9, 100, 1000)] == [9, 10]


def test_term_searches() -> None:
    log = log_of([1, 1, 2, 2, 2, 5, 5])
    assert log.first_index_of_term_at(5) == 3
    assert log.first_index_of_term_at(7) == 6
    assert log.first_index_of_term_at(1) == 1
    assert log.last_index_with_term_at_most(2, 7) == 5
    assert log.last_index_with_term_at_most(4, 7) == 5
    assert log.last_index_with_term_at_most(5, 6) == 6
    assert log.last_index_with_term_at_most(0, 7) == 0
    assert log.last_index_with_term_at_most(9, 100) == 7


def test_up_to_date_and_conflicts() -> None:
    log = log_of([1, 2, 2])
    assert log.is_up_to_date(3, 2)
    assert log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(9, 1)
    assert log.find_conflict(entries_with_terms([1, 2, 2])) == 0
    assert log.find_conflict(entries_with_terms([1, 2, 3])) == 3
    assert log.find_conflict(entries_with_terms([1, 2, 2, 2])) == 4


def test_large_log_operations_do_not_copy_whole_log() -> None:
    # 100k appends then truncate/append cycles: amortized O(1) keeps this fast.
    log = RaftLog()
    for i in range(1, 100_001):
        log.append([Entry(term=1 + i // 50_000, index=i)])
    for k in range(1000):
        log.truncate_from(log.last_index)
        log.append([Entry(term=3 + k, index=log.last_index + 1)])
    assert log.last_index == 100_000
    assert log.first_index_of_term_at(80_000) == 50_000
