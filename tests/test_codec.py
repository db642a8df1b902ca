"""The strict CBOR codec: round trips, the one table, and refusal of every malformed frame."""

from __future__ import annotations

import contextlib
import typing

import attrs
import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.strategies import UINT64, plain
from univrs import codec
from univrs.codec import (
    WIRE_VERSION,
    decode_message,
    decode_plain,
    encode_message,
    encode_plain,
    message_fields,
)
from univrs.errors import ProtocolError
from univrs.raft import messages as m

MAX = 1 << 22

# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

uints = st.one_of(st.integers(0, 1000), st.integers(0, UINT64))
node_ids = st.text(max_size=12)


@st.composite
def memberships(draw: st.DrawFn) -> m.Membership:
    voters = draw(st.frozensets(node_ids, max_size=5))
    learners = draw(st.frozensets(node_ids, max_size=3)) - voters
    pairs = st.lists(st.tuples(node_ids, st.text(max_size=20)), max_size=4)
    return m.Membership(
        voters=voters,
        learners=learners,
        addresses=tuple(sorted(draw(pairs))),
        api_addresses=tuple(sorted(draw(pairs))),
    )


snapshot_metas = st.builds(m.SnapshotMeta, index=uints, term=uints, membership=memberships())


@st.composite
def append_entries(draw: st.DrawFn) -> m.AppendEntries:
    prev = draw(st.integers(0, 1 << 40))
    n = draw(st.integers(0, 20))
    terms = sorted(draw(st.lists(st.integers(1, 1 << 40), min_size=n, max_size=n)))
    entries = tuple(
        m.Entry(
            term=t,
            index=prev + 1 + i,
            kind=draw(st.sampled_from(m.EntryKind)),
            data=draw(st.binary(max_size=50)),
        )
        for i, t in enumerate(terms)
    )
    return m.AppendEntries(
        term=draw(uints),
        src=draw(node_ids),
        dst=draw(node_ids),
        prev_log_index=prev,
        prev_log_term=draw(uints),
        entries=entries,
        commit=draw(uints),
    )


_KIND_STRATEGIES: dict[str, st.SearchStrategy[typing.Any]] = {
    "uint": uints,
    "bool": st.booleans(),
    "str": node_ids,
    "bytes": st.binary(max_size=100),
    "snapshot_meta": snapshot_metas,
    "tail_str": st.none() | node_ids,
}


def message_strategy(cls: type[m.Message]) -> st.SearchStrategy[m.Message]:
    if cls is m.AppendEntries:
        return append_entries()
    _, fields = message_fields(cls)
    return st.builds(cls, **{name: _KIND_STRATEGIES[kind] for name, kind in fields})


any_message = st.one_of([message_strategy(cls) for cls in m.MESSAGE_TYPES])


def frame(*items: object) -> bytes:
    return cbor2.dumps(list(items))


def hb_frame(**overrides: object) -> bytes:
    """A Heartbeat frame built by hand, with selected fields replaced."""
    fields = {"term": 1, "src": "a", "dst": "b", "commit": 0, "ctx": 0} | overrides
    return frame(WIRE_VERSION, message_fields(m.Heartbeat)[0], *fields.values())


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

_ANNOTATION_KIND = {
    "int": "uint",
    "bool": "bool",
    "str": "str",
    "NodeId": "str",
    "bytes": "bytes",
    "tuple[Entry, ...]": "entries",
    "SnapshotMeta": "snapshot_meta",
    "NodeId | None": "tail_str",
}


@pytest.mark.parametrize("cls", m.MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_table_lists_every_field_of_every_message_with_its_type(cls: type[m.Message]) -> None:
    _, fields = message_fields(cls)
    # Fields marked ``wire: False`` (the attested sender incarnation) never travel.
    attrs_fields = {f.name: f.type for f in attrs.fields(cls) if f.metadata.get("wire", True)}
    assert [name for name, _ in fields] == list(attrs_fields)
    for name, kind in fields:
        assert _ANNOTATION_KIND[str(attrs_fields[name])] == kind, name


def test_type_tags_are_unique_small_integers() -> None:
    tags = [message_fields(cls)[0] for cls in m.MESSAGE_TYPES]
    assert len(set(tags)) == len(tags)
    assert all(0 <= t < 24 for t in tags)  # one-byte CBOR header


def test_frame_layout_is_version_then_tag_then_fields() -> None:
    msg = m.HeartbeatResponse(term=7, src="n1", dst="n2", ctx=9)
    assert cbor2.loads(encode_message(msg)) == [WIRE_VERSION, 6, 7, "n1", "n2", 9]


def test_a_trailing_optional_field_is_left_out_when_none() -> None:
    """RequestVoteResponse.leader (the leader hint): a frame without it has the layout older
    nodes read, and both layouts decode; a wrong type or an extra field is refused."""
    plain = m.RequestVoteResponse(term=3, src="n1", dst="n2", granted=False, pre_vote=True)
    assert cbor2.loads(encode_message(plain)) == [WIRE_VERSION, 2, 3, "n1", "n2", False, True]
    hinted = attrs.evolve(plain, leader="n9")
    assert cbor2.loads(encode_message(hinted))[-1] == "n9"
    for msg in (plain, hinted):
        assert decode_message(encode_message(msg), max_size=MAX) == msg
    with pytest.raises(ProtocolError):
        decode_message(frame(WIRE_VERSION, 2, 3, "n1", "n2", False, True, 9), max_size=MAX)
    with pytest.raises(ProtocolError):
        decode_message(frame(WIRE_VERSION, 2, 3, "n1", "n2", False, True, None), max_size=MAX)
    with pytest.raises(ProtocolError):
        decode_message(frame(WIRE_VERSION, 2, 3, "n1", "n2", False, True, "n9", 1), max_size=MAX)
    with pytest.raises(ProtocolError):
        decode_message(frame(WIRE_VERSION, 2, 3, "n1", "n2", False), max_size=MAX)


def test_entries_are_compact_arrays() -> None:
    msg = m.AppendEntries(
        term=2,
        src="a",
        dst="b",
        prev_log_index=4,
        prev_log_term=1,
        entries=(m.Entry(term=2, index=5, kind=m.EntryKind.NOOP),),
        commit=3,
    )
    assert cbor2.loads(encode_message(msg))[7] == [[2, 5, 1, b""]]


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(any_message)
def test_every_message_round_trips(msg: m.Message) -> None:
    assert decode_message(encode_message(msg), max_size=MAX) == msg


def test_batch_of_512_entries_round_trips() -> None:
    entries = tuple(m.Entry(term=3, index=i, data=b"x" * 40) for i in range(11, 523))
    msg = m.AppendEntries(
        term=3, src="n1", dst="n2", prev_log_index=10, prev_log_term=2, entries=entries, commit=9
    )
    assert decode_message(encode_message(msg), max_size=MAX) == msg


def test_encode_message_refuses_a_non_message() -> None:
    with pytest.raises(TypeError):
        encode_message(m.Entry(term=1, index=1))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Fuzzing: nothing but ProtocolError ever escapes
# --------------------------------------------------------------------------------------------


def _decode_or_protocol_error(data: bytes) -> None:
    try:
        msg = decode_message(data, max_size=MAX)
    except ProtocolError:
        return
    assert isinstance(msg, m.MESSAGE_TYPES)
    # Whatever decodes is canonical enough to survive another trip.
    assert decode_message(encode_message(msg), max_size=MAX) == msg


@settings(max_examples=500)
@given(st.binary(max_size=200))
@example(b"")
@example(b"\xff")
@example(b"\x9b\x00\x00\x00\x00\xff\xff\xff\xff")  # array claiming 4G items
@example(b"\x5b\x00\x00\x00\x00\xff\xff\xff\xff")  # bytes claiming 4 GB
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    _decode_or_protocol_error(data)
    with contextlib.suppress(ProtocolError):
        decode_plain(data, max_size=MAX)


def mutated(raw: bytearray, data: st.DataObject) -> bytes:
    """``raw`` after one to four edits drawn from ``data``: a bit flipped, a byte inserted, a
    byte deleted, the tail cut off."""
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "truncate":
            del raw[pos:]
    return bytes(raw)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(any_message, st.data())
def test_mutated_frames_raise_only_protocol_error(msg: m.Message, data: st.DataObject) -> None:
    _decode_or_protocol_error(mutated(bytearray(encode_message(msg)), data))


@given(st.lists(st.one_of(plain, st.builds(cbor2.CBORSimpleValue, st.integers(0, 19)))))
def test_random_cbor_items_as_frames_raise_only_protocol_error(items: list[object]) -> None:
    _decode_or_protocol_error(cbor2.dumps(items))
    _decode_or_protocol_error(cbor2.dumps([WIRE_VERSION, *items]))


# --------------------------------------------------------------------------------------------
# Specific refusals
# --------------------------------------------------------------------------------------------


def refused(data: bytes, match: str, *, plain: bool = False, max_size: int = MAX) -> None:
    with pytest.raises(ProtocolError, match=match):
        if plain:
            decode_plain(data, max_size=max_size)
        else:
            decode_message(data, max_size=max_size)


def test_a_valid_hand_built_frame_decodes() -> None:
    # The baseline the refusal tests below mutate: it must itself be accepted.
    assert decode_message(hb_frame(), max_size=MAX) == m.Heartbeat(
        term=1, src="a", dst="b", commit=0, ctx=0
    )


def test_trailing_garbage_is_refused() -> None:
    good = encode_message(m.TimeoutNow(term=1, src="a", dst="b"))
    refused(good + b"\x00", "1 trailing bytes")
    refused(encode_plain([1, 2]) + b"\xf6\xf6", "2 trailing bytes", plain=True)
    big = encode_plain([b"x" * 100_000, b"y" * 100_000])
    refused(big + b"\x01", "trailing", plain=True)


def test_truncated_frames_are_refused() -> None:
    good = encode_message(m.ReadIndexRequest(term=1, src="a", dst="b", ctx=5))
    for cut in range(len(good)):
        refused(good[:cut], "truncated|empty")


def test_oversized_frames_are_refused_before_decoding() -> None:
    good = encode_message(m.TimeoutNow(term=1, src="a", dst="b"))
    refused(good, "exceeds the limit", max_size=len(good) - 1)
    assert decode_message(good, max_size=len(good)) == m.TimeoutNow(term=1, src="a", dst="b")
    refused(encode_plain(b"x" * 1000), "exceeds the limit", plain=True, max_size=999)


def test_huge_declared_lengths_in_small_frames_are_refused() -> None:
    for header in ["9b00000000ffffffff", "5b00000000ffffffff", "7bffffffffffffffff"]:
        refused(bytes.fromhex(header), "truncated")
        refused(bytes.fromhex(header), "truncated", plain=True)


def test_deep_nesting_is_refused() -> None:
    deep = b"\x81" * 100_000 + b"\x00"
    refused(deep, "depth")
    refused(deep, "depth", plain=True)
    at_limit = b"\x81" * 3 + b"\x00"
    assert decode_plain(at_limit, max_size=100, max_depth=3) == [[[0]]]
    with pytest.raises(ProtocolError):
        decode_plain(b"\x81" * 4 + b"\x00", max_size=100, max_depth=3)
    # Maps count as nesting too.
    refused(b"\xa1\x00" * 40 + b"\x00", "depth", plain=True)


@pytest.mark.parametrize(
    "item",
    [
        "c11a514b67b0",  # tag 1: epoch datetime, decoded natively by cbor2
        "c074323031332d30332d32315432303a30343a30305a",  # tag 0: datetime string
        "c249010000000000000000",  # tag 2: bignum
        "d90102820102",  # tag 258: set
        "d81c81d81d00",  # tags 28/29: shared references (a cycle)
        "d9d9f700",  # tag 55799: self-described CBOR
        "d825500123456789abcdef0123456789abcdef",  # tag 37: UUID
        "d9ffff00",  # tag 65535: no built-in decoder
        "db000000010000000000",  # tag 2**32
    ],
)
def test_every_tag_is_refused(item: str) -> None:
    refused(bytes.fromhex(item), "tag", plain=True)
    refused(bytes.fromhex("82" + item + "00"), "tag", plain=True)
    refused(bytes.fromhex("8601" + "06" + item + "61616162" + "00"), "tag")


@given(st.integers(0, UINT64))
def test_any_tag_number_is_refused(tag: int) -> None:
    refused(cbor2.dumps(cbor2.CBORTag(tag, 0)), "tag", plain=True)


def test_wrong_version_and_unknown_type_are_refused() -> None:
    good = cbor2.loads(encode_message(m.TimeoutNow(term=1, src="a", dst="b")))
    refused(frame(WIRE_VERSION + 1, *good[1:]), "unsupported wire version")
    refused(frame(True, *good[1:]), "unsupported wire version")
    refused(frame(0, *good[1:]), "unsupported wire version")
    refused(frame(WIRE_VERSION, 99, *good[2:]), "unknown message type 99")
    refused(frame(WIRE_VERSION, "7", *good[2:]), "unknown message type")
    refused(frame(WIRE_VERSION), "must be an array")
    refused(cbor2.dumps({"v": 1}), "must be an array")


def test_wrong_field_count_is_refused() -> None:
    refused(hb_frame()[:-1].replace(b"\x87", b"\x86", 1), "has 4 fields, expected 5")
    refused(frame(*cbor2.loads(hb_frame()), 0), "has 6 fields, expected 5")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"term": -1}, "'term': expected a non-negative integer"),
        ({"term": True}, "'term': expected a non-negative integer"),
        ({"term": 1.0}, "'term': expected a non-negative integer"),
        ({"term": None}, "'term': expected a non-negative integer"),
        ({"commit": "3"}, "'commit'"),
        ({"src": b"a"}, "'src': expected a text string"),
        ({"dst": 3}, "'dst': expected a text string"),
    ],
)
def test_field_types_are_checked(overrides: dict[str, object], match: str) -> None:
    refused(hb_frame(**overrides), match)


def _ae(entries: list[object], prev: int = 0) -> bytes:
    return frame(WIRE_VERSION, 3, 1, "a", "b", prev, 0, entries, 0)


def test_entry_fields_are_checked() -> None:
    assert decode_message(_ae([[1, 1, 0, b""]]), max_size=MAX)  # the baseline is valid
    refused(_ae([[0, 1, 0, b""]]), "entries.term")
    refused(_ae([[1, 0, 0, b""]], prev=-1), "prev_log_index")
    refused(_ae([[1, 1, 7, b""]]), "entries.kind")
    refused(_ae([[1, 1, True, b""]]), "entries.kind")
    refused(_ae([[1, 1, 0, "x"]]), "entries.data")
    refused(_ae([[1, 1, 0]]), "an entry")
    refused(_ae([{"term": 1}]), "an entry")
    refused(frame(WIRE_VERSION, 3, 1, "a", "b", 0, 0, b"", 0), "array of entries")


def test_append_entries_must_be_contiguous_after_prev() -> None:
    assert decode_message(_ae([[1, 5, 0, b""], [2, 6, 0, b""]], prev=4), max_size=MAX)
    refused(_ae([[1, 6, 0, b""]], prev=4), "not contiguous")
    refused(_ae([[1, 5, 0, b""], [1, 7, 0, b""]], prev=4), "not contiguous")
    refused(_ae([[2, 5, 0, b""], [1, 6, 0, b""]], prev=4), "smaller term")


def _snap(meta: object) -> bytes:
    return frame(WIRE_VERSION, 10, 1, "a", "b", meta, 0, b"", True, 0, 0)


def test_snapshot_meta_is_checked() -> None:
    ok = decode_message(_snap([3, 2, [["a"], ["b"], [["a", "h:1"]], [["b", "h:2"]]]]), max_size=MAX)
    assert isinstance(ok, m.InstallSnapshot)
    assert ok.meta == m.SnapshotMeta(
        index=3,
        term=2,
        membership=m.Membership(
            voters=frozenset({"a"}),
            learners=frozenset({"b"}),
            addresses=(("a", "h:1"),),
            api_addresses=(("b", "h:2"),),
        ),
    )
    refused(_snap([3, 2, [["a"], ["a"], [], []]]), "invalid membership")
    refused(_snap([3, 2, [["a"], [1], [], []]]), "membership.learners")
    refused(_snap([3, 2, ["a", [], [], []]]), "membership.voters")
    refused(_snap([3, 2, [[], [], [["a"]], []]]), "membership.addresses")
    refused(_snap([3, 2, [[], [], [], [["a", 1]]]]), "membership.api_addresses")
    refused(_snap([3, -2, [[], [], [], []]]), "meta.term")
    refused(_snap([3, 2, [[], [], []]]), "a membership")
    refused(_snap([3, 2]), "snapshot meta")


def test_membership_encoding_covers_every_membership_field() -> None:
    # A new Membership field must get a place in membership_to_plain (and a new wire version).
    assert [f.name for f in attrs.fields(m.Membership)] == [
        "voters",
        "learners",
        "addresses",
        "api_addresses",
        "incarnations",
    ]
    full = m.Membership(
        voters=frozenset({"b", "a"}),
        learners=frozenset({"c"}),
        addresses=(("a", "x:1"),),
        api_addresses=(("a", "x:2"),),
        incarnations=(("a", "0f3c"), ("c", "77aa")),
    )
    assert codec.membership_from_plain(codec.membership_to_plain(full)) == full
    assert m.decode_membership(m.encode_membership(full)) == full
    # Without incarnations the forms are the ones older nodes wrote and read.
    bare = attrs.evolve(full, incarnations=())
    assert len(codec.membership_to_plain(bare)) == 4
    assert b"incarnations" not in m.encode_membership(bare)


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(ProtocolError, match="expected bytes"):
        decode_message("abc", max_size=MAX)  # type: ignore[arg-type]


def test_membership_pairs_decode_canonically() -> None:
    # A frame may list pairs in any order (a fuzzer found one); what decodes is the sorted
    # form every node writes, so it survives another trip unchanged.
    plain = [["a"], [], [["z", "z:1"], ["a", "a:1"]], [], [["b", "2"], ["a", "1"]]]
    got = codec.membership_from_plain(plain)
    assert got.addresses == (("a", "a:1"), ("z", "z:1"))
    assert got.incarnations == (("a", "1"), ("b", "2"))
    assert codec.membership_from_plain(codec.membership_to_plain(got)) == got
