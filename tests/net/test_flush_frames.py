"""Raft frames written from the step that queued them (``RaftTransport.send_now``,
univrs/net/peer_flush.py ``LinkFlush.flush``, univrs/net/wsdirect.py ``write_whole_nowait``;
issue 14, s17-lat1): the driver's step (after a Ready's messages) and the storage writer's
completion (after its acks) write what the links' tasks would have written a scheduling
round later. What does not qualify is the link's task's to write, in order. Real sockets on
127.0.0.1."""

from __future__ import annotations

import pytest
import trio

from tests.net.helpers import addr, append, heartbeat, make_transport, receive, wait_until
from tests.net.test_direct_frames import QUIET, counting
from univrs.net import wsdirect
from univrs.net.transport import RaftTransport, open_transport
from univrs.raft.messages import Message


async def connected(a: RaftTransport, b_inbox: trio.MemoryReceiveChannel[Message]) -> None:
    a.send(heartbeat("a", "b", ctx=0))
    assert await receive(b_inbox) == heartbeat("a", "b", ctx=0)
    # The link's task is back waiting on its queue (what a flush from a step needs).
    await wait_until(lambda: a._links["b"].queue.waiting)


async def test_a_flushed_frame_is_written_before_the_caller_yields() -> None:
    a, _ = make_transport("a", settings=QUIET)
    b, b_inbox = make_transport("b", settings=QUIET)
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        await connected(a, b_inbox)
        for i in range(1, 21):
            sent = a.statistics().peer("b").messages_sent
            a.send_now([append("a", "b", i), heartbeat("a", "b", ctx=i)])  # written by it
            assert a.statistics().peer("b").messages_sent == sent + 2
            frames = a.statistics().peer("b").frames_sent
            # (the control lane first, as the link's task sends them: univrs/net/queue.py)
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=i)
            assert await receive(b_inbox) == append("a", "b", i)
            assert a.statistics().peer("b").frames_sent == frames  # the link wrote nothing
        assert a.statistics().peer("b").dropped == 0


async def test_a_frame_too_large_to_flush_goes_through_the_link_in_order() -> None:
    a, _ = make_transport("a", settings=QUIET)
    b, b_inbox = make_transport("b", settings=QUIET)
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        await connected(a, b_inbox)
        frames = a.statistics().peer("b").frames_sent
        big = append("a", "b", 1, size=wsdirect.WHOLE_MAX + 1)
        a.send_now([big])
        assert a.statistics().peer("b").frames_sent == frames  # left to the link's task
        a.send_now([heartbeat("a", "b", ctx=1)])  # must not overtake the large frame
        assert a.statistics().peer("b").frames_sent == frames
        assert await receive(b_inbox) == big
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
        assert a.statistics().peer("b").dropped == 0


async def test_a_flushed_frame_the_kernel_takes_in_part_ends_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Half a frame on the stream with no lock held: another writer could put its bytes
    inside it. The socket is shut down instead; the link redials and the next frames arrive
    whole (Raft sends again what was lost)."""
    a, _ = make_transport("a", settings=QUIET)
    b, b_inbox = make_transport("b", settings=QUIET)
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        await connected(a, b_inbox)
        real = wsdirect._write
        monkeypatch.setattr(wsdirect, "_write", lambda fd, data: real(fd, data[: len(data) // 2]))
        reconnects = a.statistics().peer("b").reconnects
        a.send_now([heartbeat("a", "b", ctx=1)])
        monkeypatch.setattr(wsdirect, "_write", real)
        assert a.statistics().peer("b").dropped == 1
        await wait_until(lambda: a.statistics().peer("b").reconnects > reconnects)
        a.send(heartbeat("a", "b", ctx=2))
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
        assert b.statistics().peer("a").messages_received == 2  # ctx 0 and 2, never 1 in part


async def test_frames_written_by_send_now_do_not_wake_the_links_task() -> None:
    a, _ = make_transport("a", settings=QUIET)
    b, b_inbox = make_transport("b", settings=QUIET)
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        await connected(a, b_inbox)
        frames = 30
        async with counting() as counter:
            for i in range(1, frames + 1):
                a.send_now([heartbeat("a", "b", ctx=i)])
                assert await receive(b_inbox) == heartbeat("a", "b", ctx=i)
        assert counter.of("PeerLink.run") <= 2, counter.steps  # (one frame each: 30 steps)
        assert a.statistics().peer("b").dropped == 0
