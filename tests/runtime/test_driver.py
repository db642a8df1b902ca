"""The Trio runtime with an in-memory network and storage, on trio's autojump clock."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence

import attrs
import pytest
import trio
import trio.testing

from tests.runtime.memcluster import MemoryStore
from univrs.errors import NotLeader, Unavailable
from univrs.raft import Membership, RaftNode, bootstrap_state
from univrs.raft.messages import Entry, HardState, Message
from univrs.raft.ready import RaftConfig, Role
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.writer import PersistJob, merge_jobs
from univrs.sm.commands import CreateWorkload, Envelope
from univrs.sm.model import WorkloadSpec
from univrs.sm.responses import Created
from univrs.sm.state import ClusterStateMachine

TICK = 0.05
CONFIG = RaftConfig(heartbeat_ticks=3, election_ticks_min=6, election_ticks_max=10)


@attrs.define(eq=False)
class MemoryNet:
    """Delivers messages between runtimes; ``cut`` holds node ids whose links are down."""

    runtimes: dict[str, RaftRuntime] = attrs.field(factory=dict)
    cut: set[str] = attrs.field(factory=set)

    def send_now(self, msgs: Sequence[Message]) -> None:
        for msg in msgs:
            self.send(msg)

    def send(self, msg: Message) -> None:
        if msg.src in self.cut or msg.dst in self.cut:
            return
        target = self.runtimes.get(msg.dst)
        if target is not None:
            with contextlib.suppress(trio.WouldBlock):  # a full inbox drops, as networks may
                target.inbox.sender.send_nowait(msg)


def make_cluster(ids: Sequence[str], seed: int = 1) -> tuple[MemoryNet, dict[str, MemoryStore]]:
    net = MemoryNet()
    logs: dict[str, MemoryStore] = {}
    membership = Membership(voters=frozenset(ids))
    for i, nid in enumerate(ids):
        logs[nid] = MemoryStore()
        core = RaftNode(
            nid,
            rng=random.Random(seed * 100 + i),
            config=CONFIG,
            initial=bootstrap_state(membership),
        )
        net.runtimes[nid] = RaftRuntime(
            core=core,
            sm=ClusterStateMachine(),
            storage=logs[nid],
            transport=net,
            tick_seconds=TICK,
            write_in_thread=False,
        )
    return net, logs


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` every tick of simulated time, failing after ``timeout``."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(TICK)
    assert predicate(), what


def leader_of(net: MemoryNet) -> RaftRuntime | None:
    leaders = [r for r in net.runtimes.values() if r.status().role is Role.LEADER]
    live = [r for r in leaders if r.node_id not in net.cut]
    return live[0] if len(live) == 1 else None


async def start_all(nursery: trio.Nursery, net: MemoryNet) -> None:
    """Run every runtime of ``net`` in ``nursery``."""
    for r in net.runtimes.values():
        await nursery.start(r.run)


async def start_and_wait_leader(nursery: trio.Nursery, net: MemoryNet) -> RaftRuntime:
    """Run every runtime of ``net``; the leader once there is one."""
    await start_all(nursery, net)
    await wait_until(lambda: leader_of(net) is not None, "a leader")
    leader = leader_of(net)
    assert leader is not None
    return leader


def create(name: str) -> Envelope:
    return Envelope(command=CreateWorkload(id=name, spec=WorkloadSpec(name=name, image="img")))


async def test_elects_a_leader_after_an_election_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net, _ = make_cluster(["a", "b", "c"])
    await start_all(nursery, net)
    start = trio.current_time()
    await wait_until(lambda: leader_of(net) is not None, "a leader")
    elapsed = trio.current_time() - start
    # Nobody campaigns before the minimum election timeout (6 ticks of 50 ms).
    assert elapsed >= CONFIG.election_ticks_min * TICK
    assert elapsed < 5.0


async def test_proposals_commit_everywhere_and_followers_refuse(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net, _ = make_cluster(["a", "b", "c"])
    leader = await start_and_wait_leader(nursery, net)
    response = await leader.propose(create("w1"))
    assert isinstance(response, Created)
    follower = next(r for r in net.runtimes.values() if r is not leader)
    with pytest.raises(NotLeader) as info:
        await follower.propose(create("w2"))
    assert info.value.leader_hint == leader.node_id
    await wait_until(
        lambda: all(r.sm.get_workload("w1") is not None for r in net.runtimes.values()),
        "w1 applied on every node",
    )


async def test_concurrent_proposals_share_fsyncs(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net, logs = make_cluster(["a", "b", "c"])
    leader = await start_and_wait_leader(nursery, net)
    writes_before = logs[leader.node_id].writes
    results: list[object] = []

    async def one(i: int) -> None:
        results.append(await leader.propose(create(f"w{i}")))

    async with trio.open_nursery() as inner:
        for i in range(200):
            inner.start_soon(one, i)
    assert len(results) == 200 and all(isinstance(r, Created) for r in results)
    writes = logs[leader.node_id].writes - writes_before
    # Group commit: far fewer synced writes than entries.
    assert writes < 50, f"{writes} storage writes for 200 proposals"


async def test_linearizable_read_needs_a_quorum(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net, _ = make_cluster(["a", "b", "c"])
    leader = await start_and_wait_leader(nursery, net)
    await leader.propose(create("w1"))
    index = await leader.read_index()
    assert index >= leader.status().commit - 1 and leader.sm.get_workload("w1") is not None
    follower = next(r for r in net.runtimes.values() if r is not leader)
    assert await follower.read_index() >= index  # followers get a read index from the leader
    # Cut the leader off: its reads can no longer be confirmed and must not be served.
    others = [r for r in net.runtimes.values() if r is not leader]
    net.cut.add(leader.node_id)
    with pytest.raises((Unavailable, trio.TooSlowError)):
        with trio.fail_after(10):
            await leader.read_index()
    await wait_until(lambda: any(r.status().role is Role.LEADER for r in others), "a new leader")


def test_merge_jobs_keeps_the_meaning_of_the_sequence() -> None:
    def e(index: int, term: int) -> Entry:
        return Entry(index=index, term=term)

    hs1, hs2 = HardState(term=2, vote="a"), HardState(term=3, vote="b", commit=4)
    jobs = [
        PersistJob(
            hard_state=hs1,
            truncate_from=None,
            entries=(e(5, 2), e(6, 2), e(7, 2)),
            after_persist=(),
        ),
        PersistJob(hard_state=None, truncate_from=6, entries=(e(6, 3),), after_persist=()),
        PersistJob(hard_state=hs2, truncate_from=None, entries=(e(7, 3),), after_persist=()),
    ]
    merged = merge_jobs(jobs)
    assert merged.hard_state == hs2
    assert merged.truncate_from == 6
    assert merged.entries == (e(5, 2), e(6, 3), e(7, 3))
    # Applying the merged write to a log equals applying the jobs one by one.
    one_by_one, merged_log = (
        MemoryStore(entries=[e(i, 1) for i in range(1, 9)]),
        MemoryStore(entries=[e(i, 1) for i in range(1, 9)]),
    )
    for j in jobs:
        one_by_one.append(hard_state=j.hard_state, truncate_from=j.truncate_from, entries=j.entries)
    merged_log.append(
        hard_state=merged.hard_state, truncate_from=merged.truncate_from, entries=merged.entries
    )
    assert one_by_one.entries == merged_log.entries


async def test_a_commit_only_hard_state_change_needs_no_fsync_of_its_own() -> None:
    from univrs.runtime.writer import StorageWriter

    log = MemoryStore()
    persisted: list[tuple[int, int]] = []
    durable_terms: list[int] = []

    def on_persisted(index: int, term: int, hs: HardState | None) -> None:
        if index:
            persisted.append((index, term))
        if hs is not None:
            durable_terms.append(hs.term)

    writer = StorageWriter(
        write=log.append, send=lambda _m: None, on_persisted=on_persisted, in_thread=False
    )

    def job(hs: HardState | None, *entries: Entry) -> PersistJob:
        return PersistJob(hard_state=hs, truncate_from=None, entries=entries, after_persist=())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit(job(HardState(term=2, vote="a", commit=1), Entry(index=1, term=2)))
        await wait_until(lambda: log.writes == 1, "the first write")
        writer.submit(job(HardState(term=2, vote="a", commit=2)))  # commit only: deferred
        writer.submit(job(None))
        await wait_until(lambda: writer.jobs_written == 3, "the jobs to be handled")
        assert log.writes == 1 and log.hard_state.commit == 1
        writer.submit(job(None, Entry(index=2, term=2)))  # the next real write carries it
        await wait_until(lambda: log.writes == 2, "the second write")
        assert log.hard_state == HardState(term=2, vote="a", commit=2)
        writer.submit(job(HardState(term=3, vote=None, commit=2)))  # a term change syncs
        await wait_until(lambda: log.writes == 3, "the term change to be written")
        await wait_until(lambda: durable_terms[-1:] == [3], "the term change to be reported")
        nursery.cancel_scope.cancel()
    assert persisted == [(1, 2), (2, 2)]
    assert durable_terms == [2, 2, 3]  # each synced hard state is reported (the core's send gate)
