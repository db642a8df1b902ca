"""Pure pieces of the client surface: frame codecs, header and field readers."""

from __future__ import annotations

import pytest

from univrs import codec
from univrs import errors as e
from univrs.api import convert as cv
from univrs.api.rest import parse_idempotency_key, parse_if_match
from univrs.client import protocol
from univrs.client.protocol import BadRequest, Request
from univrs.errors import ProtocolError


def test_request_frames_round_trip_and_bad_requests_are_isolated() -> None:
    reqs = [
        Request(id=1, op="workload.get", args={"id": "w"}, consistency="local"),
        Request(id=7, op="workload.get", args={"id": "w"}, consistency="lease"),
        Request(id=2, op="workload.scale", args={"id": "w", "replicas": 2}, key=("c4", 9)),
    ]
    assert protocol.decode_requests(protocol.encode_requests(reqs)) == reqs
    frame = codec.encode_plain(
        [
            {"id": 3, "op": "workload.get", "args": {}, "bogus": 1},
            {"id": 4, "op": "workload.get", "key": ["c1", -1]},
            {"id": 5, "op": "workload.get", "consistency": "eventual"},
            {"id": 6, "op": 7},
        ]
    )
    decoded = protocol.decode_requests(frame)
    assert [type(d) for d in decoded] == [BadRequest] * 4
    assert [d.error.field for d in decoded if isinstance(d, BadRequest)] == [
        "bogus",
        "key",
        "consistency",
        "op",
    ]


@pytest.mark.parametrize(
    "frame",
    [
        b"\xff",  # not CBOR
        codec.encode_plain({"id": 1}),  # not an array
        codec.encode_plain([{"op": "workload.get"}]),  # no id
        codec.encode_plain([{"id": -1, "op": "x"}]),  # negative id
        "text frame",
    ],
)
def test_unusable_request_frames_are_protocol_errors(frame: bytes | str) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_requests(frame)


def test_headers() -> None:
    assert parse_idempotency_key(None) is None
    assert parse_idempotency_key("c12:3") == ("c12", 3)
    assert parse_idempotency_key(" c12:3 ") == ("c12", 3)
    for bad in ("c12", "c12:0", "c12:x", "my key:1", ":3", "c1:2:3"):
        with pytest.raises(e.MalformedRequest):
            parse_idempotency_key(bad)
    assert parse_if_match('"12"') == 12
    assert parse_if_match('W/"12"') == 12
    assert parse_if_match("12") == 12
    with pytest.raises(e.MalformedRequest):
        parse_if_match('"abc"')


def test_field_readers() -> None:
    assert cv.read_int(2.0, "n") == 2  # JSON does not tell 2 from 2.0
    for bad in (2.5, True, "2", None, float("inf")):
        with pytest.raises(e.InvalidArgument):
            cv.read_int(bad, "n")
    with pytest.raises(e.InvalidArgument) as out_of_range:
        cv.read_int(-1, "spec.replicas")
    assert out_of_range.value.field == "spec.replicas"
    with pytest.raises(e.InvalidArgument, match="lone surrogate"):
        cv.read_str("\ud800", "name")
    with pytest.raises(e.InvalidArgument) as unknown:
        cv.read_object({"a": 1, "b": 2}, "spec", required=("a",))
    assert unknown.value.field == "spec.b"
    spec = cv.read_workload_spec({"name": "web", "image": "nginx", "labels": {"b": "2", "a": "1"}})
    assert spec.labels == (("a", "1"), ("b", "2"))
    assert cv.spec_doc(spec)["labels"] == {"a": "1", "b": "2"}


def test_ids_that_passed_are_remembered_but_only_as_exact_strings() -> None:
    """``read_id`` remembers the ids that passed (a session's client id comes back in every
    request): a bad id is refused however many good ones came first, a str subclass equal to
    a remembered id is still refused as not a string, and the memory is bounded."""

    class Sneaky(str):
        pass

    assert cv.read_id("w-1", "id") == "w-1"
    assert cv.read_id("w-1", "client_id") == "w-1"
    with pytest.raises(e.InvalidArgument, match="must be a string"):
        cv.read_id(Sneaky("w-1"), "id")
    with pytest.raises(e.InvalidArgument, match="1-128 characters"):
        cv.read_id("w 1", "id")
    for i in range(cv.MAX_GOOD_IDS + 10):
        cv.read_id(f"id-{i}", "id")
    assert len(cv._GOOD_IDS) <= cv.MAX_GOOD_IDS
    with pytest.raises(e.InvalidArgument, match="1-128 characters"):
        cv.read_id("-leading-dash", "id")
