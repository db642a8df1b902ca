"""Small commits apply on the driver's step (issue 14, round 7; effects.py ``apply_committed``).

When the apply loop waits with nothing queued, no proposals wait in the open batch and the
committed entries are small (``APPLY_ON_STEP_BYTES``), the driver applies them itself and
tells the core at once: no hand-off to the apply loop's task and no ``Applied`` event back.
Anything else goes through the loop as before. The first test fails on the old driver, which
queued every commit.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import trio
import trio.testing

from tests.runtime.memcluster import MemCluster, create, start_cluster, wait_until
from univrs.raft.messages import Entry, EntryKind
from univrs.raft.ready import Role
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.events import TICK, Applied
from univrs.runtime.step import APPLY_ON_STEP_BYTES, StepLoop
from univrs.sm.commands import CreateWorkload, Envelope
from univrs.sm.model import WorkloadSpec
from univrs.sm.responses import Failure
from univrs.sm.state import ClusterStateMachine


class _CountingEvents:
    """Stands in for the apply loop's channel to the driver: counts its ``Applied`` reports
    (one per commit the loop applied) and passes them on."""

    def __init__(self, inner: trio.MemorySendChannel[object], reports: list[int]) -> None:
        self.inner, self.reports = inner, reports

    async def send(self, ev: object) -> None:
        if isinstance(ev, Applied):
            self.reports.append(ev.index)
        await self.inner.send(ev)

    def send_nowait(self, ev: object) -> None:
        self.inner.send_nowait(ev)  # may raise WouldBlock: the loop then awaits ``send``
        if isinstance(ev, Applied):
            self.reports.append(ev.index)


def _counting_later(inner: Callable[[int], bool], reports: list[int]) -> Callable[[int], bool]:
    """Counts a report the driver takes in at its next step (no event) as one too."""

    def later(index: int) -> bool:
        taken = inner(index)
        if taken:
            reports.append(index)
        return taken

    return later


def count_queued(cluster: MemCluster) -> dict[str, list[int]]:
    """Per node, the indexes the apply loop reported applied from now on (the commits that
    went through it rather than applying on the driver's step)."""
    queued: dict[str, list[int]] = {}
    for node_id, runtime in cluster.runtimes.items():
        applier = runtime._applier
        queued[node_id] = []
        applier.events = _CountingEvents(applier.events, queued[node_id])  # type: ignore[assignment]
        applier.applied_later = _counting_later(applier.applied_later, queued[node_id])
    return queued


async def settled(cluster: MemCluster, leader: RaftRuntime) -> None:
    last = leader.status().last_index
    await wait_until(
        lambda: all(r.applied_index == last for r in cluster.runtimes.values()),
        "every node applied the leader's log",
    )


async def counted_cluster(
    nursery: trio.Nursery,
) -> tuple[MemCluster, RaftRuntime, dict[str, list[int]]]:
    """Three nodes, settled (every node applied the leader's log), then counted from there on
    (``count_queued``): (the cluster, its leader, the counts)."""
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    await settled(cluster, leader)
    return cluster, leader, count_queued(cluster)


def too_big(ident: str) -> Envelope:
    """A workload creation larger than the driver applies on its step."""
    spec = WorkloadSpec(name=ident, image="i" * (APPLY_ON_STEP_BYTES + 1))
    return Envelope(command=CreateWorkload(id=ident, spec=spec))


async def test_small_writes_one_at_a_time_apply_on_the_step_everywhere(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cluster, leader, queued = await counted_cluster(nursery)
    for i in range(10):
        response = await leader.propose(create(f"w{i}"))
        assert not isinstance(response, Failure), response
    await settled(cluster, leader)
    assert queued == {"a": [], "b": [], "c": []}
    for runtime in cluster.runtimes.values():
        assert all(runtime.sm.get_workload(f"w{i}") for i in range(10)), runtime.node_id


async def test_large_or_concurrent_commits_go_through_the_apply_loop(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cluster, leader, queued = await counted_cluster(nursery)
    await leader.propose(too_big("big"))
    await settled(cluster, leader)
    big_index = leader.status().last_index
    assert all(queued[n] == [big_index] for n in queued), queued  # the loop applied it
    # Writes that arrive while others are in flight wait in the open batch: those commits
    # are queued (the driver must flush the open batch, not apply).
    for sizes in queued.values():
        sizes.clear()
    async with trio.open_nursery() as writers:
        for i in range(40):
            writers.start_soon(leader.propose, create(f"c{i}"))
    await settled(cluster, leader)
    assert queued[leader.node_id], "no commit of the concurrent writes was queued"
    for runtime in cluster.runtimes.values():
        assert all(runtime.sm.get_workload(f"c{i}") for i in range(40)), runtime.node_id


class _ApplierSteps(trio.abc.Instrument):
    """Counts the scheduling rounds (task steps) of the apply loops' tasks."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("Applier.run"):
            self.steps += 1


async def test_the_apply_loop_takes_one_scheduling_round_per_commit_it_applies(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Issue 14, round 16: the loop reports its last chunk without a checkpoint of its own (its
    # wait for more work right after ends the step), so a commit it applies costs it one
    # step, not two. Fails on the loop that awaited ``send`` for every report.
    cluster, leader, queued = await counted_cluster(nursery)
    steps = _ApplierSteps()
    trio.lowlevel.add_instrument(steps)
    try:
        for i in range(8):  # one at a time, each too large to apply on the driver's step
            # Refused by the state machine (the image is too long), as the test above:
            # applied all the same.
            await leader.propose(too_big(f"big{i}"))
            await settled(cluster, leader)
    finally:
        trio.lowlevel.remove_instrument(steps)
    reports = sum(len(indexes) for indexes in queued.values())
    assert reports >= 8 * 3, queued  # every node applied every write through its loop
    assert steps.steps == reports, (steps.steps, reports)


class _OnDisk:
    """A state backend that is not ``MEMORY_STATE`` (as the LMDB state is), so that the
    driver's rules for a persistent state apply; it keeps the state in memory all the same."""

    def adopt(self, sm: ClusterStateMachine) -> ClusterStateMachine:
        return sm

    def durable(self) -> None:
        pass


async def test_a_follower_applies_on_its_step_while_its_next_write_is_in_flight(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Issue 14, session 18 (s18-fixed): at one client a follower learns that write N
    # committed with the append of write N+1, whose write that same step hands to the storage
    # writer. With a persistent state it then queued N for the apply loop (a task step and a
    # scheduling round per write on every follower) because its writer was busy; a follower
    # now applies it on the step (the state's transaction never waits for the log's flush).
    # Fails on the driver that asked for an idle writer on a follower too.
    cluster, leader, queued = await counted_cluster(nursery)
    for runtime in cluster.runtimes.values():
        runtime.state_backend = _OnDisk()
    for i in range(10):
        response = await leader.propose(create(f"d{i}"))
        assert not isinstance(response, Failure), response
    await settled(cluster, leader)
    followers = [n for n in cluster.runtimes if n != leader.node_id]
    assert all(queued[n] == [] for n in followers), queued
    for runtime in cluster.runtimes.values():
        assert all(runtime.sm.get_workload(f"d{i}") for i in range(10)), runtime.node_id


class _Applier:
    """Records which way ``apply_committed`` sent a commit."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.ways: list[str] = []

    def apply_now(self, entries: tuple[Entry, ...]) -> bool:
        self.ways.append("step")
        self.applied_index = entries[-1].index
        return True

    def enqueue(self, entries: tuple[Entry, ...]) -> None:
        self.ways.append("loop")


def _busy_follower(waiting: int) -> tuple[Any, _Applier]:
    """The parts of a follower's runtime ``apply_committed`` reads: a persistent state, a
    busy storage writer, ``waiting`` events in the inbox."""
    send, receive = trio.open_memory_channel[object](8)
    for _ in range(waiting):
        send.send_nowait(TICK)
    applier = _Applier()
    runtime = SimpleNamespace(
        state_backend=_OnDisk(),
        _batches=SimpleNamespace(open=[]),
        _writer=SimpleNamespace(idle=False),
        core=SimpleNamespace(role=lambda: Role.FOLLOWER),
        _applier=applier,
        _applied_on_step=0,
        _persisted=collections.deque(),
        inbox=SimpleNamespace(sender=send, receiver=receive),
    )
    runtime._more_waiting = lambda: StepLoop._more_waiting(cast(Any, runtime))
    return runtime, applier


def test_a_busy_follower_leaves_its_commit_to_the_apply_loop_under_load() -> None:
    # Under load (events waiting for the driver) a follower whose writer is busy queues its
    # commit for the apply loop, which applies what several steps committed in one state
    # transaction, as before s18-fixed; with nothing waiting it applies on the step (the test
    # above). Fails if the follower applied on the step whatever waited.
    entries = (Entry(index=7, term=1, kind=EntryKind.NORMAL, data=b"x"),)
    idle, idle_applier = _busy_follower(waiting=0)
    StepLoop.apply_committed(idle, entries)
    busy, busy_applier = _busy_follower(waiting=1)
    StepLoop.apply_committed(busy, entries)
    assert (idle_applier.ways, busy_applier.ways) == (["step"], ["loop"])
    assert idle._applied_on_step == 7 and busy._applied_on_step == 0


async def test_an_answer_on_the_step_goes_before_the_state_commits(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A proposer's callback at the end of an apply on the step (``at_apply_end``: the fast
    protocol writing its answer) runs inside the state's batch, before it commits (session
    27: a one-client write's answer does not wait for the state's page writes). Fails on the
    applier that answered after the commit."""
    cluster, leader, _queued = await counted_cluster(nursery)
    order: list[str] = []
    objects = leader._applier.sm._objects  # what ``ClusterStateMachine.batch`` opens
    batch = objects.batch

    depth = [0]

    @contextlib.contextmanager
    def recorded_batch() -> Iterator[object]:  # the outermost batch's end is its commit
        depth[0] += 1
        try:
            with batch() as inner:
                yield inner
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            order.append("state commits")

    objects.batch = recorded_batch
    waiters, unsent = leader.propose_together_nowait([create("early")])
    assert unsent is None

    def filled() -> None:  # the waiter is filled in the apply: answer at its end
        assert leader.at_apply_end(lambda: order.append("answer"))

    waiters[0].notify(filled)
    response = await waiters[0].wait()
    assert not isinstance(response, Failure), response
    assert order == ["answer", "state commits"]
    await settled(cluster, leader)
