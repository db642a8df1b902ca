"""The runtime's snapshot capture/encode and restore (univrs/runtime/snapshots.py)."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from typing import Any

import attrs
import pytest
import trio

from tests.runtime.memcluster import MemCluster, create, start_cluster, wait_until
from tests.sm.helpers import spec
from tests.sm.test_sm_snapshot import populated
from univrs import codec
from univrs.errors import StorageError
from univrs.raft.messages import (
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    Message,
    SnapshotMeta,
)
from univrs.raft.snapshot import SnapshotReceiver
from univrs.runtime import applier as applier_module
from univrs.runtime import snapshots as snapshots_module
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.snapshots import SnapshotChecker, capture, restore
from univrs.sm import (
    BootstrapToken,
    ClusterStateMachine,
    CreateWorkload,
    snapshot_plain,
    state_digest,
)


async def _snapshot_behind_a_cut_follower(
    nursery: trio.Nursery,
) -> tuple[MemCluster, RaftRuntime, RaftRuntime, SnapshotMeta]:
    """A 3-node cluster checking snapshots; a follower cut off while five workloads are
    created and the leader takes a snapshot (the follower still cut: the caller heals it)."""
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"], check_snapshots=True)
    behind = next(r for r in cluster.runtimes.values() if r is not leader)
    cluster.cut.add(behind.node_id)
    for k in range(5):
        await leader.propose(create(f"w{k}"))
    meta = await leader.take_snapshot()
    assert meta is not None
    return cluster, leader, behind, meta


def test_capture_encodes_the_state_at_capture_time_and_restore_reads_it() -> None:
    log = populated()
    log(BootstrapToken(id="t0", name="root", secret_hash="cd" * 32))  # tokens are captured too
    expected = snapshot_plain(log.sm)
    digest = state_digest(log.sm)
    encode = capture(log.sm)
    log(CreateWorkload(id="later", spec=spec("later")))  # applied after the capture
    data = encode()
    assert codec.decode_plain(data, max_size=1 << 30, max_depth=64) == expected
    restored = restore(data)
    assert state_digest(restored) == digest
    assert restored.problems() == []
    assert [t.id for t in restored.stored_tokens()] == ["t0"]
    assert restored.tokens_bootstrapped


def test_a_restored_state_leaves_the_collectors_generations_and_is_freed_when_replaced() -> None:
    """Fails without the ``gc.freeze`` in ``restore``: the restored objects stay in the
    oldest generation, and every full collection walks them."""
    data = capture(populated().sm)()
    gc.unfreeze()
    restored = restore(data)
    # Frozen: the next full collection does not walk the restored state.
    assert gc.get_freeze_count() > 0
    assert not any(g is restored for g in gc.get_objects(generation=2))
    # Still freed by reference counting once replaced (the state holds no cycle), with the
    # collector off so that only reference counting can free it.
    ref = weakref.ref(restored)
    gc.disable()
    try:
        del restored
        assert ref() is None
    finally:
        gc.enable()
        gc.unfreeze()


class _Cycle:
    """An object in a reference cycle: only the cyclic GC frees it."""

    def __init__(self) -> None:
        self.me = self


def test_restore_collects_cyclic_garbage_before_it_freezes_the_heap() -> None:
    """Fails without the collection before the freeze: garbage in a cycle at that moment
    moves to the permanent generation and is never freed."""
    data = capture(populated().sm)()
    gc.disable()  # so that only restore's own collection can free the cycle
    try:
        garbage = _Cycle()
        ref = weakref.ref(garbage)
        del garbage
        restore(data)
        gc.collect()
        assert ref() is None
    finally:
        gc.enable()
        gc.unfreeze()


def test_restore_refuses_a_corrupt_snapshot_as_a_storage_error() -> None:
    data = bytearray(capture(populated().sm)())
    with pytest.raises(StorageError):
        restore(bytes(data[:-3]))


def _meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index=index, term=term, membership=Membership(voters=frozenset({"a"})))


def test_the_checker_hands_what_it_restored_to_the_install_of_those_bytes_once() -> None:
    sm = populated().sm
    data, meta = capture(sm)(), _meta(sm.last_applied_index)
    checker = SnapshotChecker()
    assert checker(meta, data) is None
    assert checker.take(meta, bytes(bytearray(data))) is None  # equal bytes, other object
    assert checker(meta, data) is None
    assert checker.take(_meta(meta.index, term=9), data) is None  # another meta
    assert checker(meta, data) is None
    taken = checker.take(meta, data)
    assert taken is not None and state_digest(taken) == state_digest(sm)
    assert checker.take(meta, data) is None  # once: nobody else gets the same object


def test_the_checker_keeps_nothing_from_a_refused_snapshot() -> None:
    sm = populated().sm
    data = capture(sm)()
    checker = SnapshotChecker()
    wrong = _meta(sm.last_applied_index + 1)
    assert checker(wrong, data) is not None
    assert checker.take(wrong, data) is None
    assert checker(_meta(1), data[:-3]) is not None


async def test_an_installed_snapshot_is_restored_once_not_twice(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower cut off while the leader compacts past it catches up by a snapshot: the
    core's check restores it, the install takes that state machine instead of decoding the
    bytes again (the applier's own ``restore`` is not called; on the code before the checker
    it was, once per install)."""
    installs: list[int] = []

    def counting(data: bytes) -> ClusterStateMachine:
        installs.append(len(data))
        return restore(data)

    monkeypatch.setattr(applier_module, "restore", counting)  # what the applier calls
    cluster, leader, behind, meta = await _snapshot_behind_a_cut_follower(nursery)
    assert leader.status().first_index > meta.index
    cluster.cut.clear()
    await wait_until(lambda: behind.applied_index >= meta.index, "the snapshot to be installed")
    assert behind.sm.get_workload("w4") is not None
    assert behind.sm.problems() == []
    assert installs == []


async def test_the_check_of_a_streamed_snapshot_runs_off_the_event_loop(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core's check of a complete snapshot restores it; the driver runs that restore in
    a worker thread before stepping the last chunk (``precheck``), so the node's event loop
    keeps running. Fails on the code before: the check restored on the event loop's thread,
    inside the core's step."""
    threads: list[bool] = []

    def recording(data: bytes, into: Any = None) -> ClusterStateMachine:
        threads.append(threading.current_thread() is threading.main_thread())
        return restore(data, into)

    monkeypatch.setattr(snapshots_module, "restore", recording)  # what the checker calls
    cluster, _leader, behind, meta = await _snapshot_behind_a_cut_follower(nursery)
    cluster.cut.clear()
    await wait_until(lambda: behind.applied_index >= meta.index, "the snapshot to be installed")
    assert behind.sm.get_workload("w4") is not None and behind.sm.problems() == []
    assert threads and not any(threads), threads  # every check's restore in a worker thread


async def test_the_chunks_of_a_streamed_snapshot_are_joined_and_verified_off_the_event_loop(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Joining the received chunks and checking their crc32 copies and hashes the whole
    snapshot (212 MB at 1,000,000 + 1,000,000 objects: over a second under load, when the
    members dropped their links to the joining node for want of a pong). Fails on the code
    before: ``snapshot_to_check`` joined them on the event loop's thread."""
    threads: list[bool] = []
    original = SnapshotReceiver.completed_by

    def recording(self: SnapshotReceiver, msg: InstallSnapshot) -> bytes | None:
        threads.append(threading.current_thread() is threading.main_thread())
        return original(self, msg)

    monkeypatch.setattr(SnapshotReceiver, "completed_by", recording)
    cluster, _leader, behind, meta = await _snapshot_behind_a_cut_follower(nursery)
    cluster.cut.clear()
    await wait_until(lambda: behind.applied_index >= meta.index, "the snapshot to be installed")
    assert behind.sm.get_workload("w4") is not None and behind.sm.problems() == []
    assert threads and not any(threads), threads


async def test_a_resent_last_chunk_is_not_checked_or_logged_again(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A leader resends its last chunks when the check takes long (seconds at 1M). Once the
    snapshot is installed, such a chunk completes nothing the core would check: it goes to
    no worker thread and logs no second "snapshot received". Fails on the code that handed
    every last chunk to the thread (70 lines at 1M, one per resend)."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    cluster, _leader, behind, meta = await _snapshot_behind_a_cut_follower(nursery)
    last: list[InstallSnapshot] = []
    answers: list[InstallSnapshotResponse] = []

    def hold(msg: Message) -> bool:
        if isinstance(msg, InstallSnapshotResponse) and msg.src == behind.node_id:
            answers.append(msg)  # seen, not held
        elif isinstance(msg, InstallSnapshot) and msg.done and msg.dst == behind.node_id:
            last.append(msg)
            return not answers or len(last) == 1  # held: the test delivers it, twice
        return False

    cluster.hold = hold
    cluster.cut.clear()
    await wait_until(lambda: last, "the last chunk")
    cluster.deliver(last[0])
    await wait_until(lambda: behind.applied_index >= meta.index, "the snapshot to be installed")
    done = len([a for a in answers if a.offset >= last[0].total_size])
    cluster.deliver(last[0])  # the leader's resend
    await wait_until(
        lambda: len([a for a in answers if a.offset >= last[0].total_size]) > done,
        "the resend to be answered",
    )
    received = [r for r in caplog.records if r.getMessage() == "snapshot received"]
    assert len(received) == 1, received


async def test_a_stale_terms_last_chunk_is_not_checked_off_the_loop(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A last chunk of an older term than the follower's (a deposed leader's, late) is only
    answered with the current term by the core: the driver restores nothing for it in a
    worker thread and logs no "snapshot received" (nothing of it is held until the next
    check). Fails on the code before: ``snapshot_check_due`` ignored the term and the
    sender, so the stale chunk was restored ahead, then the real one again."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    restores: list[int] = []

    def counting(data: bytes, into: Any = None) -> ClusterStateMachine:
        restores.append(len(data))
        return restore(data, into)

    monkeypatch.setattr(snapshots_module, "restore", counting)  # what the checker calls
    cluster, _leader, behind, meta = await _snapshot_behind_a_cut_follower(nursery)
    last: list[InstallSnapshot] = []
    stale_answers: list[Message] = []

    def hold(msg: Message) -> bool:
        if isinstance(msg, InstallSnapshot) and msg.done and msg.dst == behind.node_id:
            last.append(msg)
            return True  # the test delivers it
        return False

    def watch(msg: Message) -> None:
        # The core's answer to a stale message (election.py ``_answer_stale``).
        if (
            isinstance(msg, AppendEntriesResponse)
            and msg.src == behind.node_id
            and not msg.success
            and msg.index == 0
        ):
            stale_answers.append(msg)

    cluster.hold = hold
    cluster.watchers.append(watch)
    cluster.cut.clear()
    await wait_until(lambda: last, "the last chunk")
    assert last[0].term >= 2
    stale = last[0].term - 1
    # The same chunk, stale (its snapshot no newer than its term: the gate refuses a message
    # carrying data of a later term than its own, s13-audit).
    meta_then = attrs.evolve(last[0].meta, term=min(last[0].meta.term, stale))
    cluster.deliver(attrs.evolve(last[0], term=stale, meta=meta_then))
    await wait_until(lambda: stale_answers, "the stale chunk to be answered with the term")
    assert restores == []
    assert [r for r in caplog.records if r.getMessage() == "snapshot received"] == []
    cluster.hold = None
    cluster.deliver(last[0])
    await wait_until(lambda: behind.applied_index >= meta.index, "the snapshot to be installed")
    assert len(restores) == 1  # the real last chunk's check (the install takes what it found)
    received = [r for r in caplog.records if r.getMessage() == "snapshot received"]
    assert len(received) == 1, received
