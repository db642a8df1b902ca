"""Small commits apply on the driver's step (issue 14, round 7; step.py ``apply_committed``).

When the apply loop waits with nothing queued, no proposals wait in the open batch and the
committed entries are small (``APPLY_ON_STEP_BYTES``), the driver applies them itself and
tells the core at once: no hand-off to the apply loop's task and no ``Applied`` event back.
Anything else goes through the loop as before. The first test fails on the old driver, which
queued every commit.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import trio
import trio.testing

from tests.runtime.memcluster import MemCluster, create, start_cluster, wait_until
from univrs.raft.messages import Entry, EntryKind
from univrs.raft.ready import Role
from univrs.runtime.applier import Applier
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

    def hold(self, entries: tuple[Entry, ...]) -> None:
        self.ways.append("held")


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
        _writer=SimpleNamespace(idle=False, reports_soon=False),
        _reads={},
        core=SimpleNamespace(role=lambda: Role.FOLLOWER),
        _applier=applier,
        _applied_on_step=0,
        _persisted=collections.deque(),
        inbox=SimpleNamespace(sender=send, receiver=receive),
    )
    runtime._more_waiting = lambda: StepLoop._more_waiting(cast(Any, runtime))
    runtime._may_hold_apply = lambda: StepLoop._may_hold_apply(cast(Any, runtime))
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


def test_a_follower_holds_its_commit_while_the_write_its_step_started_is_in_flight() -> None:
    # Issue 14, s20-one: the follower's write of append N+1 goes to the writer's thread on
    # the step that also commits N; applying N there kept the GIL from the thread (it started
    # staging only after the step: the ack 0.3 ms later). With that write in flight (its
    # completion will come: ``reports_soon``) and nothing else waiting, the commit is held for
    # the completion. Not with events waiting (under load the apply loop batches), not with
    # a ReadIndex read waiting on the applied index, not on a leader. Fails without the hold.
    entries = (Entry(index=7, term=1, kind=EntryKind.NORMAL, data=b"x"),)
    ways = []
    for waiting, reads, role in (
        (0, {}, Role.FOLLOWER),
        (1, {}, Role.FOLLOWER),
        (0, {3: object()}, Role.FOLLOWER),
        (0, {}, Role.LEADER),
    ):
        runtime, applier = _busy_follower(waiting)
        runtime._writer.reports_soon = True
        runtime._reads = reads
        runtime.core = SimpleNamespace(role=lambda role=role: role)
        StepLoop.apply_committed(runtime, entries)
        ways.append(applier.ways)
        assert runtime._applied_on_step == (7 if applier.ways == ["step"] else 0)
    assert ways == [["held"], ["loop"], ["step"], ["loop"]]


def _bare_applier(idle: bool) -> tuple[Any, list[object]]:
    """An ``Applier``'s queueing parts, its applies on the caller recorded."""
    here: list[object] = []
    applier = SimpleNamespace(
        _idle=idle,
        _queue=collections.deque(),
        _held=[],
        _wakeup=trio.Event(),
        applied_index=0,
    )

    def apply_here(entries: tuple[Entry, ...]) -> None:
        here.extend(e.index for e in entries)
        applier.applied_index = entries[-1].index

    applier._apply_here = apply_here
    applier._queue_held = lambda: Applier._queue_held(cast(Any, applier))
    return applier, here


def test_held_commits_apply_before_anything_handed_in_after_them() -> None:
    # The order of applies is the order of commits: while a commit is held (``hold``), a
    # later one may not apply on the step (``apply_now`` refuses), and a later one queued
    # for the loop, or a snapshot to restore, queues the held ones first. Fails if
    # ``apply_now`` or ``enqueue``/``enqueue_install`` ignored the held commits.
    def entry(i: int) -> tuple[Entry, ...]:
        return (Entry(index=i, term=1, kind=EntryKind.NORMAL, data=b"x"),)

    applier, here = _bare_applier(idle=True)
    Applier.hold(cast(Any, applier), entry(5))
    assert not Applier.apply_now(cast(Any, applier), entry(6))
    Applier.enqueue(cast(Any, applier), entry(6))
    assert [batch[0].index for batch in applier._queue] == [5, 6] and not here
    assert Applier.apply_held(cast(Any, applier)) is None  # nothing held any more

    applier, here = _bare_applier(idle=True)
    Applier.hold(cast(Any, applier), entry(5))
    install = object()
    Applier.enqueue_install(cast(Any, applier), cast(Any, install))
    assert list(applier._queue) == [entry(5), install]

    # The completion: applied on its callback when the loop waits with nothing queued ...
    applier, here = _bare_applier(idle=True)
    Applier.hold(cast(Any, applier), entry(5))
    Applier.hold(cast(Any, applier), entry(6))
    assert Applier.apply_held(cast(Any, applier)) == 6 and here == [5, 6]
    assert Applier.apply_now(cast(Any, applier), entry(7)) and here == [5, 6, 7]
    # ... else queued behind the loop's work (older than them), for the loop to report.
    applier, here = _bare_applier(idle=False)
    Applier.hold(cast(Any, applier), entry(5))
    assert Applier.apply_held(cast(Any, applier)) is None
    assert list(applier._queue) == [entry(5)] and applier._wakeup.is_set() and not here


async def test_followers_apply_held_commits_from_their_writes_completions(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # The whole path: one write at a time, persistent states; each follower holds commits
    # (the append's step started the next write) and applies them from the completion,
    # never through the apply loop; every node ends with every write applied and its status
    # saying so.
    cluster, leader, queued = await counted_cluster(nursery)
    held: dict[str, int] = {}  # per node: writer completions that found commits held
    for node_id, runtime in cluster.runtimes.items():
        runtime.state_backend = _OnDisk()
        writer = runtime._writer
        held[node_id] = 0

        def counting(
            node_id: str = node_id, runtime: RaftRuntime = runtime, inner: Any = writer.after_write
        ) -> None:
            held[node_id] += runtime._applier.holding
            inner()

        writer.after_write = counting
    for i in range(10):
        response = await leader.propose(create(f"h{i}"))
        assert not isinstance(response, Failure), response
    await settled(cluster, leader)
    followers = [n for n in cluster.runtimes if n != leader.node_id]
    assert all(held[n] >= 5 for n in followers) and held[leader.node_id] == 0, held
    assert all(queued[n] == [] for n in followers), queued
    last = leader.status().last_index
    await wait_until(
        lambda: all(r.status().applied == last for r in cluster.runtimes.values()),
        "every node's status says it applied the leader's log",
    )
    for runtime in cluster.runtimes.values():
        assert all(runtime.sm.get_workload(f"h{i}") for i in range(10)), runtime.node_id
