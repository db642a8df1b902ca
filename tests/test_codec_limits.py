"""The memory bound of frames from the network (``univrs.codec.strict.check_frame_cost``,
``frame_cost_bound``), the item bound of hellos (``check_item_count``) and the depth bound, on
every decoder of network bytes: raft frames, fast protocol request frames and client hellos,
raft hellos, probe frames.

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
from univrs.codec import strict
from univrs.codec.messages import MAX_BATCH_MESSAGES
from univrs.codec.strict import (
    _MAX_COST_PER_BYTE,
    check_frame_cost,
    check_item_count,
    frame_cost,
    frame_cost_bound,
    load,
)
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
    assert f"more than {frame_cost_bound(FRAME)} bytes while decoded" in outcome, (name, outcome)
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
    assert "depth" in outcome or "while decoded" in outcome, (name, outcome)
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
    check_item_count(batch, items, "frame")  # the reference count is exact
    check_frame_cost(batch, frame_cost_bound(FRAME) // 2, "frame")  # well within the bound
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
    assert len(data) * _MAX_COST_PER_BYTE > frame_cost_bound(FRAME)  # walked
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


# ---- the memory bound of frames (s13-small) -----------------------------------------------


def _array_of(n: int, item: bytes) -> bytes:
    return _head(4, n) + item * n


# The densest forms of each kind of item, as a hostile frame would hold them.
_DENSE = {
    "empty maps": _array_of(100_000, b"\xa0"),
    "empty arrays": _array_of(100_000, b"\x80"),
    "maps of one pair of small ints": _array_of(100_000, b"\xa1\x00\x00"),
    "maps of 22 pairs": _array_of(5_000, cbor2.dumps({i + 1000: 0 for i in range(22)})),
    "maps of 22 text keys": _array_of(5_000, cbor2.dumps({f"k{i:02}": 0 for i in range(22)})),
    "maps keyed by empty maps": _array_of(50_000, b"\xa1\xa0\xa0"),
    "ASCII text of 2": _array_of(100_000, b"\x62ab"),
    "text of one 4-byte character": _array_of(100_000, cbor2.dumps("\U00010000")),
    "text of one 2-byte character": _array_of(100_000, cbor2.dumps("\u0100")),
    "text of 2 Latin-1 characters": _array_of(100_000, cbor2.dumps("\xe9\xe9")),
    "bytes of 2": _array_of(100_000, b"\x42ab"),
    "ints past the cache": _array_of(100_000, b"\x19\x04\x00"),
    "negative ints": _array_of(100_000, b"\x37"),
    "2^64 - 1": _array_of(100_000, b"\x1b" + b"\xff" * 8),
    "half floats": _array_of(100_000, b"\xf9\x3c\x00"),
    "nulls": _array_of(100_000, b"\xf6"),
}


@pytest.mark.parametrize("form", sorted(_DENSE))
def test_the_estimate_never_falls_short_of_what_decoding_builds(form: str) -> None:
    """``frame_cost`` against the tracemalloc peak of decoding: never short, so the bound
    holds for hostile frames (how close it is for legitimate content: the frame tests
    below and docs/security.md)."""
    data = _DENSE[form]
    estimate = frame_cost(data, 1 << 40)
    peak, outcome = _peak(lambda d: load(d, max_size=FRAME, max_depth=4, what="x"), data)
    assert outcome == "accepted", outcome
    assert peak <= estimate * 1.02 + 64 * 1024, (form, peak, estimate)


@settings(max_examples=300, deadline=None)
@given(plain)
def test_no_item_is_estimated_past_the_most_per_byte(value: Any) -> None:
    """``load`` leaves frames of at most ``max_cost / _MAX_COST_PER_BYTE`` bytes unwalked."""
    data = codec.encode_plain(value)
    assert frame_cost(data, 1 << 60) <= _MAX_COST_PER_BYTE * len(data)
    tree = b"\xa1" * 1000 + b"\xa0" * 1001  # maps of one pair keyed by maps: the densest
    assert load(tree, max_size=FRAME, max_depth=2000, what="x") is not None
    assert frame_cost(tree, 1 << 60) <= _MAX_COST_PER_BYTE * len(tree)


def test_load_walks_a_frame_only_when_it_could_pass_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walked: list[int] = []
    real = strict.frame_cost

    def counted(data: bytes, stop_above: int, what: str = "frame") -> int:
        walked.append(len(data))
        return real(data, stop_above, what)

    monkeypatch.setattr(strict, "frame_cost", counted)
    small = cbor2.dumps([{}] * 99)  # 104 bytes: at most 104 * 288 bytes of objects
    assert load(small, max_size=FRAME, max_depth=4, what="x", max_cost=104 * 288)
    assert walked == []
    with pytest.raises(ProtocolError, match="more than 19000 bytes while decoded"):
        load(small, max_size=FRAME, max_depth=4, what="x", max_cost=19000)
    assert walked == [len(small)]


def test_a_legitimate_request_frame_of_more_than_a_million_tiny_items_passes() -> None:
    """Until s13-small a fast-protocol frame of more than 2^20 CBOR items was refused as
    hostile (the connection closed): 4,096 workload creations (``MAX_FRAME_REQUESTS``) of
    256 empty-string arguments each (``MAX_ARGS``), valid requests, are 1.06 million items in
    1.3 MB. The items build next to nothing (the empty string is shared): 11 bytes of
    objects per frame byte, well within the bound."""
    requests = [
        {
            "id": i,
            "op": "workload.create",
            "args": {"id": f"w-{i}", "spec": {"image": "nginx", "args": [""] * 256}},
        }
        for i in range(protocol.MAX_FRAME_REQUESTS)
    ]
    frame = codec.encode_plain(requests)
    assert _count(requests) > 1 << 20 and len(frame) < FRAME
    assert frame_cost(frame, 1 << 40) < frame_cost_bound(FRAME) // 4
    decoded = protocol.decode_requests(frame, max_size=FRAME)
    assert len(decoded) == protocol.MAX_FRAME_REQUESTS
    assert decoded[-1].args["spec"]["args"] == [""] * 256  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "item", [b"\xa0", b"\x80", b"\xa1\x00\x00"], ids=["empty maps", "empty arrays", "pairs"]
)
def test_hostile_frames_of_each_dense_form_are_refused_in_bounded_memory(item: bytes) -> None:
    data = _MESSAGE + _head(4, (FRAME - 64) // len(item)) + item * ((FRAME - 64) // len(item))
    peak, outcome = _peak(lambda d: codec.decode_frame(d, max_size=FRAME), data)
    assert "while decoded" in outcome, outcome
    assert peak < BOUND, peak
