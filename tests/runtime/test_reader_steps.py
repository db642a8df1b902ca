"""A transport reader steps an append or its answer itself while the driver waits idle
(step.py ``_step_now``, session 27): the step is the driver's, run in the caller's task, and
only when it would be exactly the driver's next step.

The appends are caught on their way (``MemCluster.hold``) and offered by hand, as the
transport's reader offers every checked message (``Inbox.leave``), so each test sees whether
the core moved inside that call, with no scheduling round in between.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.runtime.memcluster import MemCluster, create, start_cluster, wait_until
from univrs.raft.messages import (
    COMMIT_NOTICE_CTX,
    AppendEntries,
    Heartbeat,
    Message,
    TimeoutNow,
)
from univrs.raft.node import RaftNode
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.events import TICK


async def held_append(
    cluster: MemCluster, leader: RaftRuntime, follower: str
) -> tuple[RaftRuntime, AppendEntries]:
    """Propose a write and catch the leader's appends carrying entries to ``follower`` from
    now on; return the follower's runtime, once its driver waits idle, and the first."""

    def hold(msg: Message) -> bool:
        return type(msg) is AppendEntries and msg.dst == follower and bool(msg.entries)

    cluster.hold = hold  # kept: the leader's resends to it are caught too
    cluster.nursery.start_soon(leader.propose, create("w"))
    await wait_until(lambda: cluster.held, "the append to be caught")
    msg = cluster.held[0]
    assert isinstance(msg, AppendEntries)
    runtime = cluster.runtimes[follower]
    await wait_until(lambda: idle(runtime), "the follower's driver to wait idle")
    return runtime, msg


def idle(runtime: RaftRuntime) -> bool:
    stats = runtime.inbox.receiver.statistics()
    return runtime._parked and stats.tasks_waiting_receive == 1 and not stats.current_buffer_used


async def follower_and_append(
    nursery: trio.Nursery,
) -> tuple[MemCluster, RaftRuntime, AppendEntries]:
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    follower = next(i for i in cluster.ids if i != leader.core.id)
    runtime, msg = await held_append(cluster, leader, follower)
    return cluster, runtime, msg


async def test_an_append_is_stepped_in_the_readers_call_while_the_driver_waits(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _cluster, follower, msg = await follower_and_append(nursery)
    before = follower.core.status().last_index
    assert follower.inbox.leave(msg)  # taken: stepped here, not queued
    assert follower.core.status().last_index == msg.entries[-1].index > before
    assert not follower.inbox.receiver.statistics().current_buffer_used


async def test_a_commit_notice_is_stepped_in_the_readers_call_while_the_driver_waits(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The commit notice a follower gets for a batch (session 30): its step, the commit and
    the hand-over of the committed entry to the apply, run in the reader's call, as the
    driver's would; with an event before it, it goes to the driver."""
    _cluster, follower, msg = await follower_and_append(nursery)
    assert follower.inbox.leave(msg)
    await wait_until(lambda: idle(follower), "the driver to wait idle")
    index = msg.entries[-1].index
    assert follower.core.status().commit < index
    notice = Heartbeat(term=msg.term, src=msg.src, dst=msg.dst, commit=index, ctx=COMMIT_NOTICE_CTX)
    follower.inbox.sender.send_nowait(TICK)  # handed to the waiting driver: its turn first
    assert not follower.inbox.leave(notice)
    assert follower.core.status().commit < index
    await wait_until(lambda: idle(follower), "the driver to take the tick")
    assert follower.inbox.leave(notice)  # taken: stepped here, not queued
    assert follower.core.status().commit == index
    assert not follower.inbox.receiver.statistics().current_buffer_used
    await wait_until(lambda: follower.applied_index == index, "the entry applied")


async def test_off_or_with_an_event_before_it_the_append_goes_to_the_driver(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Refused (False: the reader queues it) when stepping it now would not be the driver's
    next step: an event already handed to the driver comes first. And with
    ``reader_steps`` off, and for any message but an append, its answer or a heartbeat."""
    _cluster, follower, msg = await follower_and_append(nursery)
    before = follower.core.status().last_index
    follower.inbox.sender.send_nowait(TICK)  # handed to the waiting driver: its turn first
    assert not follower.inbox.leave(msg)
    assert follower.core.status().last_index == before
    await wait_until(lambda: idle(follower), "the driver to take the tick")
    follower.reader_steps = False
    assert not follower.inbox.leave(msg)
    follower.reader_steps = True
    assert not follower.inbox.leave(TimeoutNow(term=msg.term, src=msg.src, dst=msg.dst))
    assert follower.core.status().last_index == before
    follower.inbox.sender.send_nowait(msg)  # the driver steps it, as before
    await wait_until(
        lambda: follower.core.status().last_index == msg.entries[-1].index, "the driver's step"
    )


async def test_a_step_that_fails_in_a_reader_stops_the_node(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver raises what the reader's step raised: the node stops, as it would had
    the driver stepped the message itself."""
    with pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            _cluster, follower, msg = await follower_and_append(nursery)
            step = RaftNode.step

            def broken(core: RaftNode, m: Message) -> None:
                if core is follower.core and m is msg:
                    raise AssertionError("a bug in the core")
                step(core, m)

            monkeypatch.setattr(RaftNode, "step", broken)
            assert follower.inbox.leave(msg)  # taken: the failure is the driver's to raise
            with trio.fail_after(60):
                await trio.sleep_forever()
    assert raised.group_contains(AssertionError, match="a bug in the core")
