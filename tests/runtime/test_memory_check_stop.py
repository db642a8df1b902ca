"""s14-small: a check of a leader's snapshot restored in memory (the memory state backend)
stops when told (``SnapshotChecker.precheck``'s ``stop``, which the runtime sets once the
snapshot can no longer be installed: univrs/runtime/checking.py), as the LMDB staging does:
after the data's decode, then between blocks of ``STOP_EVERY`` rows. Before, only the LMDB
staging polled it: a restore in memory ran to its end (tens of seconds at 1,000,000 +
1,000,000 objects) for a result nobody would use."""

from __future__ import annotations

import pytest

from univrs.bench.scale_state import build
from univrs.raft.messages import Membership, SnapshotMeta
from univrs.runtime.snapshots import STOPPED, SnapshotChecker, capture
from univrs.sm import snapshot_read


def _meta(index: int) -> SnapshotMeta:
    return SnapshotMeta(index=index, term=1, membership=Membership(voters=frozenset({"n1"})))


def _count_workload_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item appended per workload row the restore reads."""
    built: list[int] = []
    real = snapshot_read._workload_v1

    def counted(*args: object, **kwargs: object) -> object:
        built.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(snapshot_read, "_workload_v1", counted)
    return built


def test_a_restore_in_memory_stops_between_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    sm = build(300)
    data = capture(sm)()
    meta = _meta(sm.last_applied_index)
    monkeypatch.setattr(snapshot_read, "STOP_EVERY", 50)
    polls: list[int] = []
    built = _count_workload_rows(monkeypatch)

    def stop_at_third_poll() -> bool:
        polls.append(1)
        return len(polls) >= 3

    checker = SnapshotChecker()
    checker.precheck(meta, data, stop_at_third_poll)
    assert checker.found(meta, data) == STOPPED
    assert len(polls) == 3  # after the decode, before the first block, before the second
    assert len(built) == 50  # not the 300 workloads: stopped after the first block
    assert checker(meta, data) == STOPPED  # the core's check answered from it
    assert checker.take(meta, data) is None  # nothing kept for an install


def test_a_stop_told_during_the_decode_ends_the_check_before_any_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sm = build(100)
    data = capture(sm)()
    meta = _meta(sm.last_applied_index)
    built = _count_workload_rows(monkeypatch)
    checker = SnapshotChecker()
    checker.precheck(meta, data, lambda: True)
    assert checker.found(meta, data) == STOPPED and built == []


def test_an_unstopped_restore_in_memory_passes() -> None:
    sm = build(300)
    data = capture(sm)()
    meta = _meta(sm.last_applied_index)
    checker = SnapshotChecker()
    checker.precheck(meta, data, lambda: False)
    assert checker.found(meta, data) is None and checker(meta, data) is None
    restored = checker.take(meta, data)
    assert restored is not None and restored.last_applied_index == sm.last_applied_index
