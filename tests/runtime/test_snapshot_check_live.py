"""A follower keeps stepping its core while the leader's snapshot is checked (s12-gate,
univrs/runtime/checking.py): heartbeats, appends and votes are answered during the check;
only the snapshot's last chunk waits for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import trio

from tests.runtime.memcluster import MemCluster, create, start_cluster, wait_until
from tests.sm.test_sm_snapshot import populated
from univrs.raft.messages import (
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    Message,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
)
from univrs.raft.ready import Role
from univrs.runtime import snapshots as snapshots_module
from univrs.runtime.checking import MAX_WAITING, SnapshotChecks
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.snapshots import SnapshotChecker, capture, restore
from univrs.sm import ClusterStateMachine, state_digest
from univrs.sm.snapshot_format import CheckStopped, check_stop


class _HeldCheck:
    """Holds the checker's restore (in its worker thread) until ``release``."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.released = threading.Event()
        self.calls = 0

    def __call__(self, data: bytes, into: Any = None) -> ClusterStateMachine:
        self.calls += 1
        self.started.set()
        # Real seconds: only a broken test waits that long (the finally below releases it).
        assert self.released.wait(timeout=10), "the test never released the check"
        return restore(data, into)


@pytest.fixture
def held_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[_HeldCheck]:
    held = _HeldCheck()
    monkeypatch.setattr(snapshots_module, "restore", held)  # what the checker calls
    try:
        yield held
    finally:
        held.released.set()  # never leave a worker thread blocked


async def _behind(
    nursery: trio.Nursery,
) -> tuple[MemCluster, RaftRuntime, RaftRuntime, SnapshotMeta]:
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"], check_snapshots=True)
    behind = next(r for r in cluster.runtimes.values() if r is not leader)
    cluster.cut.add(behind.node_id)
    for k in range(5):
        await leader.propose(create(f"w{k}"))
    meta = await leader.take_snapshot()
    assert meta is not None and leader.status().first_index > meta.index
    return cluster, leader, behind, meta


async def test_a_follower_answers_heartbeats_and_votes_while_the_snapshot_is_checked(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, held_check: _HeldCheck
) -> None:
    """While the check of the leader's snapshot is held in its thread, the follower answers
    the leader's heartbeats and a vote request, starts no election and keeps its term; once the
    check is released the snapshot is installed (checked once) and the follower's state is
    the leader's. Fails on the code before s12-gate: the driver awaited the check before
    stepping anything else, so no heartbeat was answered (time out below)."""
    cluster, leader, behind, meta = await _behind(nursery)
    term = leader.status().term
    during: list[Message] = []

    def watch(msg: Message) -> None:
        if msg.src == behind.node_id and held_check.started.is_set():
            during.append(msg)

    cluster.watchers.append(watch)
    cluster.cut.clear()
    await wait_until(held_check.started.is_set, "the check to start")

    def heartbeat_answers() -> int:
        return sum(isinstance(m, HeartbeatResponse) and m.dst == leader.node_id for m in during)

    await wait_until(lambda: heartbeat_answers() >= 5, "heartbeats answered during the check")
    # A vote request of the current term from the third member: answered (refused: the
    # follower voted for its leader in this term).
    third = next(i for i in cluster.ids if i not in (leader.node_id, behind.node_id))
    cluster.deliver(
        RequestVote(
            term=term,
            src=third,
            dst=behind.node_id,
            last_log_index=1,
            last_log_term=1,
        )
    )
    await wait_until(
        lambda: any(isinstance(m, RequestVoteResponse) and m.dst == third for m in during),
        "the vote request answered during the check",
    )
    vote = next(m for m in during if isinstance(m, RequestVoteResponse))
    assert not vote.granted
    # The leader goes on committing meanwhile; the follower is not installed yet.
    await leader.propose(create("during"))
    assert behind.applied_index < meta.index
    assert held_check.started.is_set() and held_check.calls == 1
    status = behind.status()
    assert status.term == term and status.role is Role.FOLLOWER
    assert leader.status().role is Role.LEADER and leader.status().term == term

    held_check.released.set()
    await wait_until(lambda: behind.applied_index >= meta.index, "the snapshot to be installed")
    await wait_until(
        lambda: behind.applied_index == leader.applied_index, "the follower to catch up"
    )
    assert held_check.calls == 1  # checked once: the core took the thread's answer
    assert behind.sm.get_workload("during") is not None
    assert state_digest(behind.sm) == state_digest(leader.sm)
    assert leader.status().term == term  # nobody was disrupted


async def test_a_resent_last_chunk_during_the_check_waits_and_installs_nothing_twice(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, held_check: _HeldCheck
) -> None:
    """The leader resends its last chunk while the check runs (it waited for an answer):
    the copy waits behind the check in flight (no second check), and after the install it
    is answered as complete."""
    cluster, leader, behind, meta = await _behind(nursery)
    last: list[InstallSnapshot] = []
    answers: list[InstallSnapshotResponse] = []

    def hold(msg: Message) -> bool:
        if isinstance(msg, InstallSnapshotResponse) and msg.src == behind.node_id:
            answers.append(msg)
        elif isinstance(msg, InstallSnapshot) and msg.done and msg.dst == behind.node_id:
            last.append(msg)
            return True  # the test delivers it
        return False

    heartbeats: list[HeartbeatResponse] = []

    def watch(msg: Message) -> None:
        if isinstance(msg, HeartbeatResponse) and msg.src == behind.node_id:
            heartbeats.append(msg)

    cluster.hold = hold
    cluster.watchers.append(watch)
    cluster.cut.clear()
    await wait_until(lambda: last, "the last chunk")
    cluster.deliver(last[0])
    await wait_until(held_check.started.is_set, "the check to start")
    for _ in range(3):
        cluster.deliver(last[0])  # resends while checking
    # The inbox is in order: a heartbeat answered after the resends means they were taken.
    seen = len(heartbeats)
    await wait_until(lambda: len(heartbeats) > seen + 1, "heartbeats after the resends")
    assert not any(a.offset >= last[0].total_size for a in answers)  # nothing acked yet
    assert behind.applied_index < meta.index
    held_check.released.set()
    await wait_until(lambda: behind.applied_index >= meta.index, "the snapshot to be installed")
    await wait_until(
        lambda: any(a.success and a.offset >= last[0].total_size for a in answers),
        "the install answered",
    )
    assert held_check.calls == 1  # the resends were not checked again
    await wait_until(
        lambda: behind.applied_index == leader.applied_index, "the follower to catch up"
    )
    assert state_digest(behind.sm) == state_digest(leader.sm)


async def test_a_snapshot_superseded_during_its_check_is_not_installed(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, held_check: _HeldCheck
) -> None:
    """The leader is cut off while its snapshot is checked on the follower: the follower
    (stepping on) times out, and the third member is elected with its vote. The chunk that
    waited for the check is stepped only after that, in a term the follower no longer
    follows its sender in: the core does not install it (nothing stored, the check's result
    discarded), and the new leader catches the follower up by its log."""
    cluster, leader, behind, meta = await _behind(nursery)
    term = leader.status().term
    cluster.cut.clear()
    await wait_until(held_check.started.is_set, "the check to start")
    cluster.cut.add(leader.node_id)
    third = next(r for r in cluster.runtimes.values() if r not in (leader, behind))
    await wait_until(
        lambda: third.status().role is Role.LEADER and behind.status().term > term,
        "the third member elected while the check is held",
    )
    # The new leader's log (not compacted) may bring the follower past the snapshot's index
    # while the check is still held: the snapshot is then superseded twice over.
    held_check.released.set()
    await third.propose(create("after"))
    await wait_until(
        lambda: behind.applied_index == third.applied_index, "the follower to catch up"
    )
    # The follower may catch up by the log before its check's thread is even done: wait for
    # the waiting chunk to be stepped.
    await wait_until(lambda: behind._checks.checking is None, "the checked chunk stepped")
    assert held_check.calls == 1
    assert cluster.stores[behind.node_id].snapshot is None  # the old leader's: never stored
    assert state_digest(behind.sm) == state_digest(third.sm)
    check = behind.core.snapshot_check
    assert isinstance(check, SnapshotChecker)
    assert check.found(meta, b"") is None and check._ahead is None  # discarded


def test_discard_drops_the_file_of_a_check_the_core_did_not_take() -> None:
    """``SnapshotChecker.discard`` (the driver calls it after stepping the chunk a check was
    for): the file begun ahead for an unused check is dropped; one the core took is not."""
    sm = populated().sm
    data = capture(sm)()
    meta = SnapshotMeta(
        index=sm.last_applied_index, term=1, membership=Membership(voters=frozenset({"a"}))
    )
    dropped: list[SnapshotMeta] = []

    def prewrite(m: SnapshotMeta, _data: bytes) -> Callable[[], None]:
        return lambda: dropped.append(m)

    check = SnapshotChecker(prewrite=prewrite)
    check.precheck(meta, data)
    check.discard(attrs.evolve(meta, term=2))  # another snapshot's: kept
    assert dropped == []
    check.discard(meta)
    assert dropped == [meta]
    check.discard(meta)  # once
    assert dropped == [meta]
    check.precheck(meta, data)
    assert check(meta, data) is None  # the core took it: its file is the install's
    check.discard(meta)
    assert dropped == [meta]


class _StoppableHeld(_HeldCheck):
    """A held check that, like the LMDB staging, polls the check's stop while it is held
    (``snapshot_format.check_stop``) and ends with ``CheckStopped`` once it says so."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = threading.Event()

    def __call__(self, data: bytes, into: Any = None) -> ClusterStateMachine:
        self.calls += 1
        self.started.set()
        stop = check_stop.get()
        deadline = time.monotonic() + 10  # real seconds: only a broken test waits so long
        while not self.released.wait(timeout=0.002):
            if stop is not None and stop():
                self.stopped.set()
                raise CheckStopped
            assert time.monotonic() < deadline, "the check was neither released nor stopped"
        return restore(data, into)


async def test_a_check_whose_snapshot_can_no_longer_be_installed_is_stopped(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s13-scale: the leader is cut off while its snapshot is checked on the follower, and
    the third member is elected: the held chunk is of a term the follower will never follow
    again (``snapshot_check_moot``), so the driver stops the check without waiting for its
    end (at 1M, tens of seconds), drops the chunk and discards the check (its file); the
    follower catches up from the new leader. Fails on the code before: the check was never
    told to stop (it ran to its end, here until released)."""
    held = _StoppableHeld()
    monkeypatch.setattr(snapshots_module, "restore", held)
    try:
        cluster, leader, behind, _meta = await _behind(nursery)
        term = leader.status().term
        cluster.cut.clear()
        await wait_until(held.started.is_set, "the check to start")
        cluster.cut.add(leader.node_id)
        third = next(r for r in cluster.runtimes.values() if r not in (leader, behind))
        await wait_until(
            lambda: third.status().role is Role.LEADER and behind.status().term > term,
            "the third member elected while the check is held",
        )
        # Real time: the check's thread notices the stop at its next poll.
        assert await trio.to_thread.run_sync(held.stopped.wait, 10.0), "the check not stopped"
        await wait_until(lambda: behind._checks.checking is None, "the stopped check's end")
        assert not held.released.is_set() and held.calls == 1
        check = behind.core.snapshot_check
        assert isinstance(check, SnapshotChecker)
        assert check._ahead is None  # discarded
        await third.propose(create("after"))
        await wait_until(
            lambda: behind.applied_index == third.applied_index, "the follower to catch up"
        )
        assert cluster.stores[behind.node_id].snapshot is None  # the old leader's: never stored
        assert state_digest(behind.sm) == state_digest(third.sm)
        assert held.calls == 1  # the dropped chunk was not checked again
    finally:
        held.released.set()


def test_at_most_max_waiting_last_chunks_wait_behind_a_check() -> None:
    """s13-scale: distinct last chunks arriving during a check (a newer snapshot each) are
    kept up to ``MAX_WAITING``; past it the oldest is dropped (and counted), a copy of one
    kept is not kept twice. Fails on the code before: the queue grew without a bound."""
    send, _ = trio.open_memory_channel[object](1)
    checks = SnapshotChecks(sender=send)
    first = InstallSnapshot(
        term=2,
        src="a",
        dst="b",
        meta=SnapshotMeta(index=10, term=2, membership=Membership(voters=frozenset({"a"}))),
        offset=0,
        data=b"x",
        done=True,
        total_size=1,
        checksum=0,
    )
    assert not checks.wait_behind(first)  # no check in flight: stepped at once
    checks.checking = first
    later = [
        attrs.evolve(first, meta=attrs.evolve(first.meta, index=11 + k))
        for k in range(MAX_WAITING + 2)
    ]
    for msg in later:
        assert checks.wait_behind(msg)
    assert checks.wait_behind(later[-1])  # the leader's resend of one kept
    assert list(checks.waiting) == later[2:] and checks.dropped == 2
    assert checks.next_waiting() is None  # not while the check is in flight
    checks.checked()
    assert checks.next_waiting() is later[2]
