"""The incarnation a connection attests reaches the core on every message (session 30: the
direct path has the decoder set it, ``decode_frame(..., sender_incarnation=...)``, instead
of rebuilding each decoded message with it; ``FrameReading._accept_message`` still sets it
on a message a decoder left without it)."""

from __future__ import annotations

from typing import Any

import trio

from tests.net import fake_codec
from univrs.bench.raft_setup import frame_reading
from univrs.codec import decode_frame, encode_batch, encode_message
from univrs.net.inbound_frames import _Reading
from univrs.net.stats import PeerCounters
from univrs.raft.messages import AppendEntries, Entry, Heartbeat, Message

ATTESTED = "inc-of-a"


def _reading(
    decode: Any, attested: str | None
) -> tuple[_Reading, trio.MemoryReceiveChannel[Message]]:
    send, receive = trio.open_memory_channel[Message](16)
    reading = frame_reading(
        node_id="b",
        inbox=send,
        leave=None,
        configured={"a": "127.0.0.1:1", "b": "127.0.0.1:2"},
        src="a",
        term=2,
        incarnation=attested,
        decode=decode,
    )
    return reading, receive


MSGS: tuple[Message, ...] = (
    AppendEntries(
        term=2,
        src="a",
        dst="b",
        prev_log_index=4,
        prev_log_term=2,
        entries=(Entry(term=2, index=5, data=b"x" * 100),),
        commit=4,
    ),
    Heartbeat(term=2, src="a", dst="b", commit=5, ctx=7),
)


async def test_the_direct_path_delivers_the_attested_incarnation_with_either_decoder() -> None:
    for decode, encode, batch in (
        (decode_frame, encode_message, encode_batch),
        (fake_codec.decode, fake_codec.encode, fake_codec.encode_batch),
    ):
        for attested in (ATTESTED, None):
            reading, inbox = _reading(decode, attested)
            assert reading.take(encode(MSGS[0])) is None
            assert reading.take(batch([encode(msg) for msg in MSGS])) is None
            got = [inbox.receive_nowait() for _ in range(3)]
            assert got == [MSGS[0], *MSGS]
            assert [msg.sender_incarnation for msg in got] == [attested] * 3


def test_a_message_carrying_the_attested_incarnation_is_not_rebuilt() -> None:
    reading, _inbox = _reading(decode_frame, ATTESTED)
    counters = PeerCounters()
    (msg,) = decode_frame(encode_message(MSGS[1]), max_size=1 << 20, sender_incarnation=ATTESTED)
    assert reading.reader._accept_message(msg, counters, ATTESTED) is msg
    other = reading.reader._accept_message(MSGS[1], counters, ATTESTED)
    assert other == MSGS[1] and other.sender_incarnation == ATTESTED
    assert reading.reader._accept_message(MSGS[1], counters, None) is MSGS[1]
    assert counters.messages_received == 3
