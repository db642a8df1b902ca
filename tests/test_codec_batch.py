"""Batch frames (several Raft messages in one websocket frame): round trip, and every bad
batch refused whole with a ProtocolError (the transport then closes the connection)."""

from __future__ import annotations

import cbor2
import pytest

from univrs.codec import WIRE_VERSION, decode_frame, decode_message, encode_batch, encode_message
from univrs.codec.messages import BATCH_TAG, MAX_BATCH_MESSAGES
from univrs.errors import ProtocolError
from univrs.raft.messages import AppendEntries, Entry, Heartbeat, Message

LIMIT = 1 << 20


def hb(i: int) -> Heartbeat:
    return Heartbeat(term=3, src="a", dst="b", commit=i, ctx=i)


def ae(index: int) -> AppendEntries:
    entries = (Entry(term=3, index=index, data=b"x" * 30),)
    return AppendEntries(
        term=3,
        src="a",
        dst="b",
        prev_log_index=index - 1,
        prev_log_term=3,
        entries=entries,
        commit=1,
    )


@pytest.mark.parametrize("n", [1, 2, 23, 24, 255, MAX_BATCH_MESSAGES])
def test_a_batch_round_trips_in_order(n: int) -> None:
    msgs: list[Message] = [hb(i) if i % 3 else ae(i + 1) for i in range(n)]
    data = encode_batch([encode_message(m) for m in msgs])
    assert decode_frame(data, max_size=LIMIT) == tuple(msgs)
    # The header is what a CBOR encoder writes for the same array.
    assert cbor2.loads(data)[:2] == [WIRE_VERSION, BATCH_TAG]


def test_a_single_message_frame_decodes_as_before() -> None:
    data = encode_message(ae(5))
    assert decode_frame(data, max_size=LIMIT) == (decode_message(data, max_size=LIMIT),)


def test_the_encoder_refuses_empty_and_oversized_batches() -> None:
    with pytest.raises(ValueError):
        encode_batch([])
    with pytest.raises(ValueError):
        encode_batch([encode_message(hb(1))] * (MAX_BATCH_MESSAGES + 1))


def raw(*items: object) -> bytes:
    return cbor2.dumps([WIRE_VERSION, BATCH_TAG, *items])


def plain(msg: Message) -> object:
    return cbor2.loads(encode_message(msg))


BAD: dict[str, bytes] = {
    "empty batch": raw(),
    "too many messages": raw(*[plain(hb(1))] * (MAX_BATCH_MESSAGES + 1)),
    "batch in a batch": raw(plain(hb(1)), [WIRE_VERSION, BATCH_TAG, plain(hb(2))]),
    "wrong version": cbor2.dumps([WIRE_VERSION + 1, BATCH_TAG, plain(hb(1))]),
    "inner wrong version": raw(plain(hb(1)), [WIRE_VERSION + 1, *plain(hb(2))[1:]]),  # type: ignore[index]
    "inner not an array": raw(plain(hb(1)), b"hello"),
    "inner unknown type": raw(plain(hb(1)), [WIRE_VERSION, 77, 1, "a", "b"]),
    "inner bad field": raw(plain(hb(1)), [WIRE_VERSION, 5, -1, "a", "b", 0, 0]),
    "inner entries not contiguous": raw([WIRE_VERSION, 3, 3, "a", "b", 4, 3, [[3, 9, 0, b""]], 1]),
    "trailing bytes": encode_batch([encode_message(hb(1))]) + b"\x00",
    "too deep": raw([[[[[[[[1]]]]]]]]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_batch_is_refused_whole(case: str) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(BAD[case], max_size=LIMIT)


def test_a_batch_larger_than_the_limit_is_refused() -> None:
    data = encode_batch([encode_message(ae(i + 1)) for i in range(100)])
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_frame(data, max_size=len(data) - 1)
