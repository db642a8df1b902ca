"""Coalescing: what one driver step queues for a peer leaves in one websocket frame, when the
peer's hello said it reads batch frames; a peer that did not (an older node) gets one frame
per message. Real sockets on 127.0.0.1, the tests' JSON codec. (Bad batch frames are refused
like any bad frame: tests/net/test_transport_sockets.py HOSTILE, tests/test_codec_batch.py.)
"""

from __future__ import annotations

import pytest

from tests.net.helpers import addr, append, heartbeat, make_transport, receive, wait_until
from univrs.net.transport import open_transport


@pytest.mark.parametrize("b_reads_batches", [True, False])
async def test_one_frame_per_peer_per_step(b_reads_batches: bool) -> None:
    a, _a_inbox = make_transport("a")
    b, b_inbox = make_transport("b", read_batches=b_reads_batches)
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        b.set_peer_addresses({"a": addr(a)})
        # a has accepted b's hello (so it knows whether b reads batches) and dialed b.
        await wait_until(lambda: a.statistics().peer("b").inbound == 1)
        await wait_until(lambda: a.statistics().peer("b").connected)
        before = a.statistics().peer("b")
        # One driver step: several messages to b, queued with no checkpoint in between.
        sent = [heartbeat("a", "b", ctx=i) for i in range(1, 5)] + [append("a", "b", 1)]
        for msg in sent:
            a.send(msg)
        assert [await receive(b_inbox) for _ in sent] == sent  # all of them, in order
        after = a.statistics().peer("b")
        assert after.messages_sent - before.messages_sent == len(sent)
        frames = after.frames_sent - before.frames_sent
        assert frames == (1 if b_reads_batches else len(sent))
        assert b.statistics().peer("a").messages_received == len(sent)
        assert after.dropped == 0


async def test_a_full_inbox_back_pressures_the_reader_without_losing_messages() -> None:
    """Messages are delivered without a yield while the inbox has room; when it is full the
    reader waits (and with it the peer's frames), and nothing is lost or reordered."""
    a, _a_inbox = make_transport("a")
    b, b_inbox = make_transport("b", inbox_size=2)
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        b.set_peer_addresses({"a": addr(a)})
        await wait_until(lambda: a.statistics().peer("b").inbound == 1)
        sent = [heartbeat("a", "b", ctx=i) for i in range(1, 21)]
        for msg in sent:
            a.send(msg)
        # b's inbox holds 2: the rest waits in the reader and the socket until we read.
        await wait_until(lambda: b.statistics().peer("a").messages_received >= 3)
        assert [await receive(b_inbox) for _ in sent] == sent
        assert a.statistics().peer("b").dropped == 0


async def test_the_payload_version_a_peer_announced_is_recorded_with_its_incarnation() -> None:
    """What a leader's gate on batch entries reads (``peer_payload_versions``): the version
    and incarnation of the newest hello accepted from each peer; an older peer (no
    announcement) counts as version 1. Fails on the old code: nothing was recorded."""
    a, _ = make_transport("a", incarnation="inc-a", payload_version=2)
    b, _ = make_transport("b", incarnation="inc-b")  # announces nothing: version 1
    async with open_transport(a), open_transport(b):
        a.set_peer_addresses({"b": addr(b)})
        b.set_peer_addresses({"a": addr(a)})
        await wait_until(lambda: "a" in b.peer_payload_versions())
        await wait_until(lambda: "b" in a.peer_payload_versions())
        assert b.peer_payload_versions() == {"a": ("inc-a", 2)}
        assert a.peer_payload_versions() == {"b": ("inc-b", 1)}
