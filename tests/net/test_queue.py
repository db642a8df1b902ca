"""The per-peer outbound queue: control before bulk, bounded lanes dropping their oldest."""

from __future__ import annotations

import trio
import trio.testing

from univrs.net.queue import PeerQueue, is_bulk
from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    TimeoutNow,
)


def append(i: int) -> AppendEntries:
    entry = Entry(term=1, index=i, data=b"x" * 100)
    return AppendEntries(
        term=1, src="a", dst="b", prev_log_index=i - 1, prev_log_term=1, entries=(entry,), commit=0
    )


def heartbeat(ctx: int = 0) -> Heartbeat:
    return Heartbeat(term=1, src="a", dst="b", commit=0, ctx=ctx)


def drain(q: PeerQueue) -> list[Message]:
    out: list[Message] = []
    for _ in range(1000):
        msg = q.get_nowait()
        if msg is None:
            return out
        out.append(msg)
    raise AssertionError("queue did not drain")


def test_lanes() -> None:
    assert is_bulk(append(1))
    for msg in (
        heartbeat(),
        HeartbeatResponse(term=1, src="b", dst="a"),
        RequestVote(term=2, src="a", dst="b", last_log_index=0, last_log_term=0),
        AppendEntriesResponse(term=1, src="b", dst="a", success=True, index=3),
        TimeoutNow(term=1, src="a", dst="b"),
    ):
        assert not is_bulk(msg)


def test_heartbeat_behind_a_full_batch_queue_comes_out_first() -> None:
    q = PeerQueue(max_control=8, max_bulk=4)
    for i in range(1, 5):
        assert q.put(append(i)) is None
    q.put(heartbeat(ctx=9))
    out = drain(q)
    assert out[0] == heartbeat(ctx=9)
    assert out[1:] == [append(i) for i in range(1, 5)]


def test_full_bulk_lane_drops_its_oldest_and_keeps_control() -> None:
    q = PeerQueue(max_control=8, max_bulk=3)
    q.put(heartbeat(ctx=1))
    dropped = [q.put(append(i)) for i in range(1, 6)]
    assert dropped == [None, None, None, append(1), append(2)]
    assert drain(q) == [heartbeat(ctx=1), append(3), append(4), append(5)]


def test_full_control_lane_drops_its_oldest() -> None:
    q = PeerQueue(max_control=2, max_bulk=2)
    q.put(heartbeat(ctx=1))
    q.put(heartbeat(ctx=2))
    assert q.put(heartbeat(ctx=3)) == heartbeat(ctx=1)
    assert len(q) == 2
    assert drain(q) == [heartbeat(ctx=2), heartbeat(ctx=3)]


def test_clear_counts_and_empties() -> None:
    q = PeerQueue()
    q.put(heartbeat())
    q.put(append(1))
    assert q.clear() == 2
    assert len(q) == 0 and q.get_nowait() is None


async def test_get_waits_until_put() -> None:
    q = PeerQueue()
    got: list[Message] = []

    async def consumer() -> None:
        got.append(await q.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        q.put(heartbeat(ctx=5))
    assert got == [heartbeat(ctx=5)]
