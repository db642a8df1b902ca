"""A client frame's proposals are stepped in the caller's task while the driver waits idle
(runtime/inline_steps.py ``hold_proposals`` / ``release_proposals``, session 28): the step is
the driver's, run once the frame is served, and only when it would be exactly the driver's
next step; otherwise the proposals go through the inbox as before.

The API's reader holds and releases around a frame (api/fast.py ``_take``;
tests/api/test_frame_batching.py sees it end to end); here the runtime is driven by hand, so
each test sees whether the core moved inside the call, with no scheduling round in between.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.runtime.memcluster import create, start_cluster, wait_until
from univrs.raft.node import RaftNode
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.events import TICK
from univrs.runtime.waiter import Waiter


def idle(runtime: RaftRuntime) -> bool:
    stats = runtime.inbox.receiver.statistics()
    return runtime._parked and stats.tasks_waiting_receive == 1 and not stats.current_buffer_used


def gathering(runtime: RaftRuntime) -> bool:
    stats = runtime.inbox.receiver.statistics()
    return runtime._gathering and stats.tasks_waiting_receive == 1 and not stats.current_buffer_used


async def idle_leader(nursery: trio.Nursery, *, gather: float | None = None) -> RaftRuntime:
    _cluster, leader = await start_cluster(nursery, ["a", "b", "c"], proposal_gather=gather)
    await leader.propose(create("first"))  # an entry of its term committed: steady state
    await wait_until(lambda: idle(leader), "the leader's driver to wait idle")
    return leader


async def test_held_proposals_are_stepped_in_the_release_call(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    leader = await idle_leader(nursery)
    before = leader.core.status().last_index
    assert leader.hold_proposals()
    waiters, unsent = leader.propose_together_nowait([create("w1"), create("w2")])
    assert unsent is None
    # Kept, not handed over: the driver was not woken and the core has not seen them yet.
    assert not leader.inbox.receiver.statistics().current_buffer_used
    assert leader.core.status().last_index == before
    leader.release_proposals()
    assert leader.core.status().last_index > before  # proposed inside the call
    assert not leader.inbox.receiver.statistics().current_buffer_used
    for waiter in waiters:
        with trio.fail_after(30):
            await waiter.wait()  # committed and applied as any proposal


async def test_not_held_when_the_drivers_next_step_is_not_ours(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """An event handed to the driver goes first (and with ``reader_steps`` off nothing is
    held): the proposals go through the inbox, as before."""
    leader = await idle_leader(nursery)
    leader.inbox.sender.send_nowait(TICK)  # handed to the waiting driver: its turn first
    assert not leader.hold_proposals()
    await wait_until(lambda: idle(leader), "the driver to take the tick")
    leader.reader_steps = False
    assert not leader.hold_proposals()
    leader.reader_steps = True
    assert leader.hold_proposals()
    assert not leader.hold_proposals()  # one frame at a time
    leader.release_proposals()  # nothing was proposed: nothing happens
    assert idle(leader)


async def test_an_event_handed_over_meanwhile_goes_before_the_held_proposals(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A read the same frame handed to the driver while its proposals were held: the
    proposals are put on the inbox behind it, not stepped ahead of it."""
    leader = await idle_leader(nursery)
    before = leader.core.status().last_index
    assert leader.hold_proposals()
    waiters, _ = leader.propose_together_nowait([create("w3")])
    read: Waiter[int] = Waiter()
    assert leader.read_index_nowait(read)  # handed to the waiting driver
    leader.release_proposals()
    assert leader.core.status().last_index == before  # not stepped here
    assert leader.inbox.receiver.statistics().current_buffer_used == 1  # queued behind it
    with trio.fail_after(30):
        await read.wait()
        await waiters[0].wait()
    assert leader.core.status().last_index > before


async def test_in_the_gather_the_step_proposes_and_the_driver_waits_anew(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """While the driver waits in the open batch's gather (at one client, where the next write
    always finds it): the step ends the gather once the proposer it waited for is back and
    proposes at once; the driver is woken to leave its stale gather and park again, where
    the transport's readers can step the appends' answers themselves."""
    leader = await idle_leader(nursery, gather=5.0)
    batches = leader._batches
    batches._returning, batches._released_took = 1, 10.0  # one proposer to come back
    batches.gather(trio.current_time())
    leader._nudge()  # the driver's loop takes the gather up
    await wait_until(lambda: gathering(leader), "the driver to wait in the gather")
    before = leader.core.status().last_index
    assert leader.hold_proposals()
    waiters, _ = leader.propose_together_nowait([create("w4")])
    leader.release_proposals()
    assert leader.core.status().last_index > before  # the gather ended: proposed now
    assert batches.gather_until is None
    assert leader._wake_sent  # woken now, not at its stale gather's deadline (5 s on)
    await wait_until(lambda: idle(leader), "the driver to park again", timeout=1.0)
    with trio.fail_after(30):
        await waiters[0].wait()


async def test_a_step_that_keeps_the_gather_leaves_the_driver_waiting_in_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A frame whose proposals join a gather that goes on (more proposers to come back) only
    keeps it or moves its deadline later: the driver is not woken for it (session 31: one
    driver wake-up less per frame at 64 clients); at its old deadline it finds the gather
    still on and waits again. The next frame that ends the gather wakes it; and a gather
    nobody ends still proposes at its (moved) deadline."""
    leader = await idle_leader(nursery, gather=5.0)
    batches = leader._batches
    for rest in (True, False):  # the last proposer comes back, or never does
        batches._returning, batches._released_took = 2, 10.0  # two proposers to come back
        batches.gather(trio.current_time())
        leader._nudge()  # the driver's loop takes the gather up
        await wait_until(lambda: gathering(leader), "the driver to wait in the gather")
        await trio.sleep(0.5)  # (the first frame moves the deadline later)
        until = batches.gather_until
        before = leader.core.status().last_index
        assert leader.hold_proposals()
        first, _ = leader.propose_together_nowait([create(f"g1-{rest}")])
        leader.release_proposals()
        assert leader.core.status().last_index == before  # still gathering
        assert batches.gather_until is not None and until is not None
        assert batches.gather_until >= until
        assert not leader._wake_sent  # the driver was left waiting in its gather
        assert gathering(leader)
        if rest:
            assert leader.hold_proposals()
            second, _ = leader.propose_together_nowait([create("g2")])
            leader.release_proposals()
            assert leader.core.status().last_index > before  # everyone back: proposed now
            assert leader._wake_sent  # woken to leave the gather it ended
            with trio.fail_after(30):
                await second[0].wait()
        with trio.fail_after(30):
            await first[0].wait()  # (alone: at the gather's deadline, at most 2.5 s on)
        await wait_until(lambda: idle(leader), "the driver to park again", timeout=10.0)


async def test_a_failing_held_step_stops_the_node(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver raises what the step in the releasing task raised: the node stops, as it
    would had the driver proposed them itself."""
    with pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            leader = await idle_leader(nursery)
            propose_many = RaftNode.propose_many

            def broken(core: RaftNode, items: list[bytes]) -> tuple[int, int]:
                if core is leader.core:
                    raise AssertionError("a bug in the core")
                return propose_many(core, items)

            monkeypatch.setattr(RaftNode, "propose_many", broken)
            assert leader.hold_proposals()
            leader.propose_together_nowait([create("w5")])
            leader.release_proposals()  # the failure is the driver's to raise
            with trio.fail_after(60):
                await trio.sleep_forever()
    assert raised.group_contains(AssertionError, match="a bug in the core")
