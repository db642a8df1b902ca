"""Proposal batching is the runtime's (univrs/runtime/step.py, "Proposal batching").

At most ``proposal_depth`` batches are appended and not yet applied; proposals arriving
meanwhile wait in the open batch and become one ``propose_many`` when the batch in flight
applies, however their callers' tasks were scheduled (they arrive here in separate driver
steps). A leadership change fails the open batch (not appended: retrying is safe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from tests.runtime.memcluster import create, start_cluster, wait_leader, wait_until
from univrs.errors import NotLeader
from univrs.raft.messages import AppendEntries, Message
from univrs.raft.ready import Role
from univrs.runtime.batching import GATHER_PAUSE_PARTS, ProposalBatches
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.events import Propose
from univrs.runtime.proposals import PendingProposals
from univrs.runtime.waiter import Waiter
from univrs.sm.commands import Envelope
from univrs.sm.responses import Created, Response

IDS = ["a", "b", "c"]


def holding_appends(leader: RaftRuntime) -> Callable[[Message], bool]:
    """A ``MemCluster.hold`` predicate: the leader's appends that carry entries (heartbeats
    still go, so the leader keeps its followers and its quorum)."""

    def hold(msg: Message) -> bool:
        return msg.src == leader.node_id and isinstance(msg, AppendEntries) and bool(msg.entries)

    return hold


async def test_proposals_arriving_while_a_batch_is_in_flight_go_as_one_batch(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Fails on the old runtime: it appended every proposal at the end of the step it arrived
    in, so callers arriving one tick apart made one batch each (11 here), unless the API's
    batcher happened to wake them together."""
    cluster, leader = await start_cluster(nursery, IDS)
    await leader.propose(create("w"))
    before = leader.statistics()
    cluster.hold = holding_appends(leader)
    results: list[Response | BaseException] = []

    async def propose(name: str) -> None:
        try:
            results.append(await leader.propose(create(name)))
        except Exception as exc:
            results.append(exc)

    nursery.start_soon(propose, "first")
    await wait_until(
        lambda: leader.statistics().proposal_batches == before.proposal_batches + 1,
        "the first proposal to be appended at once",
    )
    for i in range(10):  # one tick apart: each arrives in a driver step of its own
        nursery.start_soon(propose, f"later-{i}")
        await trio.sleep(0.05)
    assert leader.statistics().proposal_batches == before.proposal_batches + 1  # they wait
    assert leader.status().role is Role.LEADER and not results
    cluster.hold = None
    for msg in cluster.held:
        cluster.deliver(msg)
    cluster.held.clear()
    await wait_until(lambda: len(results) == 11, "every proposal to apply")
    assert all(isinstance(r, Created) for r in results), results
    after = leader.statistics()
    assert after.proposal_batches == before.proposal_batches + 2  # the ten went together
    assert after.proposals == before.proposals + 11


async def test_a_lone_proposal_is_appended_in_the_step_it_arrives(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Nothing in flight: a proposal does not wait for anything (no extra latency)."""
    _, leader = await start_cluster(nursery, IDS)
    for i in range(3):
        before = leader.statistics().proposal_batches
        started = trio.current_time()
        assert isinstance(await leader.propose(create(f"w{i}")), Created)
        assert leader.statistics().proposal_batches == before + 1
        assert trio.current_time() - started < 0.05  # under a tick: no timer involved


async def test_losing_leadership_fails_the_open_batch_as_not_applied(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The open batch was never appended: its proposers hear NotLeader (safe to retry),
    and a later leadership of this node starts with nothing in flight."""
    cluster, old = await start_cluster(nursery, IDS)
    await old.propose(create("w"))
    cluster.hold = holding_appends(old)
    first: list[Response | BaseException] = []
    waiting: list[Response | BaseException] = []

    async def propose(into: list[Response | BaseException], name: str) -> None:
        try:
            into.append(await old.propose(create(name)))
        except Exception as exc:
            into.append(exc)

    batches = old.statistics().proposal_batches
    nursery.start_soon(propose, first, "in-flight")
    await wait_until(lambda: old.statistics().proposal_batches == batches + 1, "the append")
    await trio.sleep(0.05)
    nursery.start_soon(propose, waiting, "open")
    await trio.sleep(0.05)
    cluster.hold = None
    cluster.held.clear()  # the in-flight entry never reaches the others
    cluster.cut.add(old.node_id)
    await wait_until(lambda: old.status().role is not Role.LEADER, "the old leader to step down")
    await wait_until(lambda: waiting, "the open batch to fail")
    assert isinstance(waiting[0], NotLeader), waiting
    assert old.statistics().proposal_batches == batches + 1  # the open batch was never appended
    assert not first  # the appended one stays pending: the next leader decides
    cluster.cut.clear()
    new = await wait_leader(cluster)
    assert isinstance(await new.propose(create("after")), Created)
    await wait_until(lambda: first, "the in-flight proposal to end")
    if new is old:  # this node leads again: its new leadership had nothing in flight
        assert isinstance(await old.propose(create("again")), Created)


COHORT = 20  # proposals per client frame below: a batch entry too large to apply on the step
ROUND_TRIP = 0.002  # a client's round trip between its answer and its next frame


async def _two_cohorts(
    nursery: trio.Nursery, gather: float
) -> tuple[RaftRuntime, list[int], list[float]]:
    """Cohort A's frame in flight (its appends held for 0.1 s), cohort B's frame waiting in the
    open batch; A's closed loop sends its next frame a round trip after its answers. Returns
    the leader, (proposals, batches) appended from A on, and when A2's answers came (trio
    time, from A's release)."""
    cluster, leader = await start_cluster(nursery, IDS, proposal_gather=gather)
    await leader.propose(create("w"))
    start = leader.statistics()
    figures: list[int] = []
    answered: list[float] = []

    def frame(name: str) -> list[Envelope]:
        return [create(f"{name}-{i}") for i in range(COHORT)]

    cluster.hold = holding_appends(leader)
    first = await leader.propose_together(frame("a"))
    await wait_until(lambda: cluster.held, "A's append")
    second = await leader.propose_together(frame("b"))
    await trio.sleep(0.1)  # B waits in the open batch behind A
    released = trio.current_time()

    async def a_loop() -> None:
        for waiter in first:
            assert isinstance(await waiter.wait(), Created)
        await trio.sleep(ROUND_TRIP)
        for waiter in await leader.propose_together(frame("a2")):
            assert isinstance(await waiter.wait(), Created)
        answered.append(trio.current_time() - released)

    done = trio.Event()

    async def run_a() -> None:
        await a_loop()
        done.set()

    nursery.start_soon(run_a)
    cluster.hold = None
    for msg in cluster.held:
        cluster.deliver(msg)
    cluster.held.clear()
    await done.wait()
    for waiter in second:
        assert isinstance(await waiter.wait(), Created)
    after = leader.statistics()
    figures.append(after.proposals - start.proposals)
    figures.append(after.proposal_batches - start.proposal_batches)
    return leader, figures, answered


async def test_the_open_batch_gathers_the_proposers_the_applied_batch_answered(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Fails without gathering (``proposal_gather`` 0, the test below): B's batch went the
    moment A's applied, and A's proposers, back a round trip later, made a third batch. Two
    alternating half batches of closed-loop clients cost nearly twice one whole one (most of a
    write's CPU is paid per batch: docs/performance.md, Round 13)."""
    _, (proposals, batches), answered = await _two_cohorts(nursery, gather=0.05)
    assert proposals == 3 * COHORT
    assert batches == 2  # A; then B and A2 together
    # A2 did not wait behind a batch of B: back a round trip after A's answers, appended at once.
    assert answered[0] < 0.1


async def test_without_gathering_the_cohorts_alternate(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The behaviour gathering replaces: B goes alone as A applies, A2 waits for it."""
    _, (proposals, batches), _ = await _two_cohorts(nursery, gather=0.0)
    assert proposals == 3 * COHORT
    assert batches == 3


async def test_a_gather_ends_at_its_bound_when_the_proposers_do_not_come_back(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A's proposers never come back: B waits until no proposal arrived for half of the
    gather's bound (never forever), and a lone proposer after that is appended at once."""
    cluster, leader = await start_cluster(nursery, IDS, proposal_gather=0.03)
    await leader.propose(create("w"))
    cluster.hold = holding_appends(leader)
    first = await leader.propose_together([create(f"a-{i}") for i in range(COHORT)])
    await wait_until(lambda: cluster.held, "A's append")
    second = await leader.propose_together([create(f"b-{i}") for i in range(COHORT)])
    await trio.sleep(0.1)
    cluster.hold = None
    for msg in cluster.held:
        cluster.deliver(msg)
    cluster.held.clear()
    for waiter in first:
        assert isinstance(await waiter.wait(), Created)
    applied = trio.current_time()
    for waiter in second:
        assert isinstance(await waiter.wait(), Created)
    # B went once no proposal had arrived for half of the bound (no straggler will come),
    # then needed its own commit (no simulated time: the memory transport delivers at once).
    waited = trio.current_time() - applied
    pause = 0.03 / GATHER_PAUSE_PARTS
    assert pause - 1e-9 <= waited < pause + 0.005
    before = leader.statistics().proposal_batches
    started = trio.current_time()
    await trio.sleep(0.1)  # any gather is over
    assert isinstance(await leader.propose(create("lone")), Created)
    assert leader.statistics().proposal_batches == before + 1
    assert trio.current_time() - started < 0.1 + 0.05


class _Core:
    """What ``ProposalBatches.flush`` uses of a leader's core: appends at consecutive indexes."""

    def __init__(self) -> None:
        self.last = 0

    def propose_many(self, payloads: list[bytes]) -> tuple[int, int]:
        first = self.last + 1
        self.last += len(payloads)
        return 1, first


def _proposal() -> Propose:
    return Propose(b"x", Waiter(), 0.0)


def test_the_gather_rule_a_lone_proposer_goes_at_once_and_a_pause_ends_a_gather() -> None:
    """The rule itself (batching.py), clock in hand: after a batch of one applies 4 ms after it
    was proposed, its proposer's next proposal ends the gather at once (a lone client is never
    held); a proposal that waited in the open batch waits at most half the span (2 ms) for a
    proposer that does not come back."""
    core, pending = _Core(), PendingProposals[Any]()
    batches = ProposalBatches(max_gather=0.05)

    def step(now: float) -> None:  # what the driver's loop does after its events
        if batches.released:
            batches.released = False
            batches.gather(now)
        if not batches.gathering(now):
            batches.flush(core, pending, lambda n: False, now)  # type: ignore[arg-type]

    batches.open.append(_proposal())
    step(0.0)
    assert (batches.batches, batches.open) == (1, [])
    batches.applied(core.last, 0.004)  # its commit took 4 ms
    step(0.004)
    assert batches.gather_until == 0.004 + 0.002  # half the span without an arrival
    batches.open.append(_proposal())  # the lone client is back, 1 ms later
    step(0.005)
    assert batches.batches == 2 and batches.gather_until is None  # went at once

    batches.open.append(_proposal())  # another writer arrives while that batch is in flight
    batches.applied(core.last, 0.009)  # released: its proposer is expected back, the other waits
    step(0.009)
    assert batches.batches == 2 and batches.gather_until is not None
    step(0.0105)  # neither back nor paused long enough yet
    assert batches.batches == 2
    step(0.009 + 0.002)  # no arrival for half the span (4 ms): the gather ends
    assert batches.batches == 3 and batches.gather_until is None

    off = ProposalBatches(max_gather=0.0)  # gathering off: the open batch goes on release
    off.open.append(_proposal())
    off.flush(core, pending, lambda n: False, 0.0)
    off.open.append(_proposal())
    off.applied(core.last, 0.004)
    off.gather(0.004)
    assert not off.gathering(0.004)
