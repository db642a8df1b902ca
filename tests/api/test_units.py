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
from univrs.sm import validate


def test_a_frame_of_too_many_requests_is_refused_from_its_head() -> None:
    """Before: a 4 MiB frame of 5-byte requests (``{"id": 0}``) was decoded into 838,858
    requests, each answered with an error: 1.3 GB of node memory from one frame (red team).
    A frame may carry ``MAX_FRAME_REQUESTS``; one more is refused before anything in it is
    decoded (the head claims a million; the body is not even there)."""
    most = protocol.MAX_FRAME_REQUESTS
    assert len(protocol.decode_requests(codec.encode_plain([{"id": 0}] * most))) == most
    with pytest.raises(ProtocolError, match=f"at most {most}"):
        protocol.decode_requests(codec.encode_plain([{"id": 0}] * (most + 1)))
    with pytest.raises(ProtocolError, match="1000000 requests"):
        protocol.decode_requests(b"\x9a\x00\x0f\x42\x40" + b"\xa1\x62id\x00" * 10)


def test_a_batch_frame_of_too_many_messages_is_refused_from_its_head() -> None:
    """The raft listener's batch frames: refused from the head before the body is decoded."""
    from univrs.codec.messages import MAX_BATCH_MESSAGES

    with pytest.raises(ProtocolError, match="1000000 messages"):
        codec.decode_frame(b"\x9a\x00\x0f\x42\x42" + b"\x00" * 10, max_size=1 << 20)
    assert codec.array_length(b"\x9b" + (2**40).to_bytes(8, "big")) == 2**40
    assert codec.array_length(b"\x83\x01") == 3
    assert codec.array_length(b"\x9f") is None  # indefinite: the strict decoder refuses it
    assert codec.array_length(b"\xa1") is None and codec.array_length(b"") is None
    assert MAX_BATCH_MESSAGES + 2 < 1_000_000


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
    for i in range(validate.VALID_IDS_KEPT + 10):
        cv.read_id(f"id-{i}", "id")
    assert len(validate.VALID_IDS) <= validate.VALID_IDS_KEPT
    with pytest.raises(e.InvalidArgument, match="1-128 characters"):
        cv.read_id("-leading-dash", "id")


def test_the_api_and_the_state_machine_share_one_memo_of_valid_ids() -> None:
    """One bounded memo of passed ids per process (univrs/sm/validate.py ``VALID_IDS``): an id
    the API passed is the state machine's passed client id, and the other way round; an id
    either refuses is in it for neither."""
    from univrs.api.opargs import existing_id

    validate.VALID_IDS.clear()
    assert cv.read_id("from-the-api", "id") == "from-the-api"
    assert "from-the-api" in validate.VALID_IDS
    assert validate.client_id_problem("from-the-sm") is None
    assert cv.read_id("from-the-sm", "client_id") == "from-the-sm"
    assert existing_id({"id": "from-the-sm"}, "workload") == "from-the-sm"
    assert validate.client_id_problem("bad id") is not None
    with pytest.raises(e.NotFound):
        existing_id({"id": "bad id"}, "workload")
    with pytest.raises(e.InvalidArgument):
        cv.read_id("bad id", "id")
    assert "bad id" not in validate.VALID_IDS


def test_the_cli_shows_a_write_whose_object_was_deleted_since() -> None:
    """A write answered ``{"id", "version", "deleted": true}`` (its object deleted by a later
    command of its batch) has no object to show: the detail views say so instead of failing
    on the missing fields."""
    from univrs.cli.views import VIEWS
    from univrs.service.operations import operation

    op = operation("workload.update")
    assert op is not None
    for kind in ("Workload", "Instance", "Node"):
        shown = VIEWS[kind]({"id": "w", "version": 9, "deleted": True}, op, {})
        assert shown == "w: applied at version 9, deleted since"
