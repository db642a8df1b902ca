"""The incarnation a connection attests reaches the core on every message (session 30: the
direct path has the decoder set it, ``decode_frame(..., sender_incarnation=...)``, instead
of rebuilding each decoded message with it; ``FrameReading._accept_message`` still sets it
on a message a decoder left without it)."""

from __future__ import annotations

from typing import Any

import trio

from tests.net import fake_codec
from univrs.codec import decode_frame, encode_batch, encode_message
from univrs.net.inbound_frames import FrameReading, InboundConnection, _Reading
from univrs.net.settings import TransportSettings
from univrs.net.stats import PeerCounters
from univrs.raft.messages import AppendEntries, Entry, Heartbeat, Message

ATTESTED = "inc-of-a"


class _Scope:
    cancel_called = False


class _WS:
    closed = None


def _reading(
    decode: Any, attested: str | None
) -> tuple[_Reading, trio.MemoryReceiveChannel[Message]]:
    send, receive = trio.open_memory_channel[Message](16)
    reader: Any = object.__new__(FrameReading)
    reader.node_id = "b"
    reader.inbox = send
    reader.leave = None
    reader.settings = TransportSettings()
    reader.decode = decode
    reader._configured = {"a": "127.0.0.1:1", "b": "127.0.0.1:2"}
    reader._source = "a"
    reader._source_term = 2
    reader._leader_terms = {}
    reader._rejected = 0
    reader._warned_protocol = set()
    conn: Any = InboundConnection.__new__(InboundConnection)
    object.__setattr__(conn, "scope", _Scope())
    object.__setattr__(conn, "incarnation", None)
    object.__setattr__(conn, "hello", type("H", (), {"src": "a"})())
    return _Reading(reader, send, _WS(), conn, PeerCounters(), attested), receive  # type: ignore[arg-type]


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
