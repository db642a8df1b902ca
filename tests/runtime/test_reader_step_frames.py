"""Two appends of one frame, offered one after the other as the transport's reader offers a
frame's messages (``Inbox.leave(msg, last=...)``), are one step and one write, as the driver
takes them (the second drained behind the first): a reader steps only a frame's last message
(session 27's review found one step and one fsync per append)."""

from __future__ import annotations

import trio
import trio.testing

from tests.runtime.memcluster import create, start_cluster, wait_until
from tests.runtime.test_reader_steps import idle
from univrs.raft.messages import AppendEntries, Message


async def _two_appends(nursery: trio.Nursery, by_reader: bool) -> int:
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    follower = next(i for i in cluster.ids if i != leader.core.id)

    def hold(msg: Message) -> bool:
        return type(msg) is AppendEntries and msg.dst == follower and bool(msg.entries)

    cluster.hold = hold
    await leader.propose(create("w1"))
    await leader.propose(create("w2"))
    await wait_until(lambda: len(cluster.held) >= 2, "two appends caught")
    first, second = cluster.held[:2]
    assert isinstance(first, AppendEntries) and isinstance(second, AppendEntries)
    assert second.prev_log_index == first.entries[-1].index
    runtime = cluster.runtimes[follower]
    await wait_until(lambda: idle(runtime), "idle")
    store = cluster.stores[follower]
    before = store.writes
    for msg in (first, second):  # one frame's messages, in the reader's one step
        if not (by_reader and runtime.inbox.leave(msg, last=msg is second)):
            runtime.inbox.sender.send_nowait(msg)
    await wait_until(
        lambda: runtime.core.status().persisted >= second.entries[-1].index, "persisted"
    )
    return store.writes - before


async def test_a_frame_of_two_appends_is_one_write_through_the_driver(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    assert await _two_appends(nursery, by_reader=False) == 1


async def test_a_frame_of_two_appends_is_one_write_through_a_reader(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    assert await _two_appends(nursery, by_reader=True) == 1
