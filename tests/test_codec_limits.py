"""The item bound of frames from the network (``univrs.codec.strict.check_item_count``,
``MAX_FRAME_ITEMS``) and the depth bound, on every decoder of network bytes: raft frames, fast
protocol request frames and client hellos, raft hellos, probe frames.

Before the bound a frame under the size limit could be millions of one-byte items: 4 MiB of
empty maps decoded to 4 million dicts, a tracemalloc peak of 300 MB, for one frame of the raft
listener or the fast protocol (red team, session 11).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings

from tests.strategies import plain
from univrs import codec
from univrs.client import protocol
from univrs.codec.messages import MAX_BATCH_MESSAGES
from univrs.codec.strict import MAX_FRAME_ITEMS, check_item_count, load
from univrs.errors import ProtocolError
from univrs.net import hello, probe
from univrs.raft.messages import AppendEntries, Entry, InstallSnapshot, Membership, SnapshotMeta
from univrs.raft.ready import RaftConfig

FRAME = 4 * 1024 * 1024  # the listeners' default max_payload_size
BOUND = 16 * 1024 * 1024  # what refusing one hostile frame may allocate (tracemalloc peak)


def _head(major: int, n: int) -> bytes:
    return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")


def _count(obj: Any) -> int:
    """The reference: CBOR items of a plain value (a map's keys count)."""
    if isinstance(obj, list):
        return 1 + sum(_count(x) for x in obj)
    if isinstance(obj, dict):
        return 1 + sum(_count(k) + _count(v) for k, v in obj.items())
    return 1


@settings(max_examples=300, deadline=None)
@given(plain)
def test_the_walk_counts_every_item_of_any_plain_value(value: Any) -> None:
    data = codec.encode_plain(value)
    n = _count(value)
    check_item_count(data, n, "frame")  # exactly n items: within a bound of n
    if n > 1:
        with pytest.raises(ProtocolError, match=f"more than {n - 1} CBOR items"):
            check_item_count(data, n - 1, "frame")


def test_strings_are_skipped_whole_and_heads_strict_decoding_refuses_are_refused() -> None:
    big = cbor2.dumps([b"\xa0" * FRAME, "\xa0" * 1000])  # map heads inside strings: not items
    check_item_count(big, 3, "frame")
    for head in (b"\x9f", b"\xbf", b"\x5f", b"\x7f", b"\xff", b"\x1c", b"\xfc"):
        with pytest.raises(ProtocolError, match="indefinite-length or reserved"):
            check_item_count(b"\x82\x00" + head, 10, "frame")
    # A truncated frame ends the walk; the decoder then says what is wrong.
    check_item_count(b"\x9a\x00\x10\x00\x00\xa0", 10, "frame")
    check_item_count(b"\x5b" + b"\xff" * 8, 10, "frame")
    with pytest.raises(ProtocolError, match="truncated"):
        load(b"\x5b" + b"\xff" * 8 + b"x" * 40, max_size=100, max_depth=4, what="x", max_items=4)


def test_load_walks_only_frames_longer_than_the_bound() -> None:
    """Each item takes a byte at least, so a frame of at most ``max_items`` bytes is within
    the bound unwalked (the write path's frames: kilobytes); one byte more is walked."""
    assert load(cbor2.dumps([{}] * 9), max_size=100, max_depth=4, what="x", max_items=10)
    with pytest.raises(ProtocolError, match="more than 10 CBOR items"):
        load(cbor2.dumps([{}] * 11), max_size=100, max_depth=4, what="x", max_items=10)


def _peak(decode: Callable[[bytes], object], data: bytes) -> tuple[int, str]:
    tracemalloc.start()
    try:
        decode(data)
        outcome = "accepted"
    except ProtocolError as exc:
        outcome = str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, outcome


def _empty_maps(prefix: bytes, room: int) -> bytes:
    """``prefix`` then an array of empty maps filling ``room`` bytes in all."""
    n = room - len(prefix) - 5
    return prefix + _head(4, n) + b"\xa0" * n


# A request whose args hold the array (the frame's own head says 1 request: under
# MAX_FRAME_REQUESTS); a raft message frame whose third field is the array.
_REQUEST = b"\x81\xa3" + b"".join(cbor2.dumps(x) for x in ("id", 1, "op", "x", "args"))
_MESSAGE = b"\x84\x01\x01\x01"


@pytest.mark.parametrize(
    ("name", "decode", "data"),
    [
        (
            "fast request frame",
            lambda d: protocol.decode_requests(d, max_size=FRAME),
            _empty_maps(_REQUEST, FRAME - 64),
        ),
        (
            "raft frame",
            lambda d: codec.decode_frame(d, max_size=FRAME),
            _empty_maps(_MESSAGE, FRAME - 64),
        ),
        (
            "raft message",
            lambda d: codec.decode_message(d, max_size=FRAME),
            _empty_maps(_MESSAGE, FRAME - 64),
        ),
    ],
)
def test_a_frame_of_4_mib_of_empty_maps_is_refused_in_bounded_memory(
    name: str, decode: Callable[[bytes], object], data: bytes
) -> None:
    """Before: every one of these decoded 4 million dicts (300 MB peak) before refusing."""
    peak, outcome = _peak(decode, data)
    assert f"more than {MAX_FRAME_ITEMS} CBOR items" in outcome, (name, outcome)
    assert peak < BOUND, (name, peak)


@pytest.mark.parametrize(
    ("name", "decode", "room"),
    [
        ("fast request frame", lambda d: protocol.decode_requests(d, max_size=FRAME), FRAME),
        ("raft frame", lambda d: codec.decode_frame(d, max_size=FRAME), FRAME),
        ("client hello", protocol.check_client_hello, protocol.MAX_HELLO),
        ("raft hello", hello.decode_hello, 4096),
        ("probe question", probe.decode_question, 4096),
        ("probe answer", probe.decode_answer, 4096),
    ],
)
def test_deep_nesting_is_refused_in_bounded_memory(
    name: str, decode: Callable[[bytes], object], room: int
) -> None:
    """Arrays of one array, as deep as the frame allows: refused by the decoder's depth
    bound (or, for the large frames, by the item bound first), never built."""
    data = b"\x81" * (room - 1) + b"\x00"
    peak, outcome = _peak(decode, data)
    assert "depth" in outcome or "CBOR items" in outcome, (name, outcome)
    assert peak < BOUND, (name, peak)


@pytest.mark.parametrize(
    ("name", "decode", "room"),
    [
        ("client hello", protocol.check_client_hello, protocol.MAX_HELLO),
        ("raft hello", hello.decode_hello, 4096),
        ("probe question", probe.decode_question, 4096),
    ],
)
def test_hellos_are_bounded_and_strict(
    name: str, decode: Callable[[bytes], object], room: int
) -> None:
    """The hellos hold a few fields: many items, a tag or an indefinite map is refused (the
    raft hello and the probe were decoded by plain ``cbor2.loads`` before)."""
    with pytest.raises(ProtocolError, match="CBOR items"):
        decode(_empty_maps(b"", room))
    with pytest.raises(ProtocolError):
        decode(b"\xc1\x00")  # a tag (an epoch datetime)
    with pytest.raises(ProtocolError, match="indefinite"):
        decode(b"\xbf\xff")


def test_the_client_hello_has_a_size_of_its_own() -> None:
    token = "t" * protocol.MAX_TOKEN_LEN
    assert protocol.check_client_hello(protocol.encode_client_hello(token)) == token
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.check_client_hello(b"\x60" * (protocol.MAX_HELLO + 1))


def _entries(n: int, start: int) -> tuple[Entry, ...]:
    return tuple(Entry(term=7, index=start + i) for i in range(n))


def test_the_densest_legitimate_raft_batch_is_within_the_bound() -> None:
    """``MAX_BATCH_MESSAGES`` AppendEntries of ``max_entries_per_msg`` entries each, entries
    without data (5 items each): the most items a leader's batch frame can hold."""
    per_msg = RaftConfig().max_entries_per_msg
    frames = [
        codec.encode_message(
            AppendEntries(
                term=7,
                src="n1",
                dst="n2",
                prev_log_index=1000 + k * per_msg - 1,
                prev_log_term=7,
                entries=_entries(per_msg, 1000 + k * per_msg),
                commit=1000,
            )
        )
        for k in range(MAX_BATCH_MESSAGES)
    ]
    batch = codec.encode_batch(frames)
    assert len(batch) <= FRAME
    items = 3 + sum(_count(cbor2.loads(f)) for f in frames)  # the array, version, tag
    assert items > MAX_BATCH_MESSAGES * 5 * per_msg
    assert items < MAX_FRAME_ITEMS
    check_item_count(batch, items, "frame")  # the reference count is exact
    msgs = codec.decode_frame(batch, max_size=FRAME)
    assert len(msgs) == MAX_BATCH_MESSAGES


def test_large_legitimate_frames_pass() -> None:
    """A snapshot chunk of a whole frame and a frame of ``MAX_FRAME_REQUESTS`` requests."""
    chunk = InstallSnapshot(
        term=3,
        src="n1",
        dst="n2",
        meta=SnapshotMeta(index=10, term=3, membership=Membership(voters=frozenset({"n1"}))),
        offset=0,
        data=b"\xa0" * (FRAME - 200),
        done=False,
        total_size=FRAME,
        checksum=1,
    )
    data = codec.encode_message(chunk)
    assert len(data) > MAX_FRAME_ITEMS
    assert codec.decode_frame(data, max_size=FRAME) == (chunk,)
    requests = [
        {
            "id": i,
            "op": "workload.create",
            "args": {"id": f"w-{i}", "spec": {"image": "nginx", "replicas": 3, "ports": [80]}},
            "key": ["c0ffee", i],
        }
        for i in range(protocol.MAX_FRAME_REQUESTS)
    ]
    frame = codec.encode_plain(requests)
    assert len(protocol.decode_requests(frame, max_size=FRAME)) == len(requests)
