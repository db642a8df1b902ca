"""Pure pieces of the client surface: the error table, frame codecs, header and field readers."""

from __future__ import annotations

import pathlib

import pytest

from univrs import codec
from univrs import errors as e
from univrs.api import convert as cv
from univrs.api.rest import parse_idempotency_key, parse_if_match
from univrs.client import protocol
from univrs.client.protocol import BadRequest, Request
from univrs.errors import ProtocolError
from univrs.sm.errors import failure_to_exception
from univrs.sm.responses import ErrorCode, Failure


@pytest.mark.parametrize("code", e.WIRE_CODES)
def test_every_error_round_trips_through_its_wire_form(code: str) -> None:
    cls = e.error_class(code)
    assert cls is not None
    if cls is e.VersionConflict:
        exc: e.UnivrsError = e.VersionConflict("v", field="expected_version", current_version=7)
    elif cls is e.NotLeader:
        exc = e.NotLeader(leader="n2")
    elif issubclass(cls, e.Unavailable):
        exc = cls("u", retry_after=2.0, leader="n1")
    else:
        exc = cls("message", field="spec.replicas")
    back = e.error_from_plain(
        codec.decode_plain(codec.encode_plain(e.error_to_plain(exc)), max_size=1 << 20)
    )
    assert type(back) is cls
    assert back.message == exc.message and back.field == exc.field
    assert back.extra() == exc.extra()


def test_one_family_for_core_server_and_client() -> None:
    # The core raises NotLeader(hint); the client raises the same class from the wire form.
    core = e.NotLeader("n3")
    assert str(core) == "not the leader (leader hint: n3)" and core.leader_hint == "n3"
    back = e.error_from_plain(e.error_to_plain(core))
    assert type(back) is e.NotLeader and back.leader_hint == "n3"
    assert isinstance(back, e.Unavailable) and back.retryable and not back.outcome_unknown
    assert e.Timeout("t").outcome_unknown and not e.Unavailable("u").outcome_unknown
    assert e.OutcomeUnknown("o").code == "outcome-unknown" and e.OutcomeUnknown.http_status == 503
    assert e.AlreadyExists("x").http_status == 409
    unknown = e.error_from_plain({"code": "from-the-future", "message": "?"})
    assert isinstance(unknown, e.InternalError)
    assert isinstance(e.error_from_plain("garbage"), e.InternalError)


def test_local_errors_never_cross_the_wire() -> None:
    # A local error (no HTTP status) that reaches a client is answered as a bug; a peer that
    # sends one of their codes gets no such class back either.
    for cls in (e.ProposalDropped, e.StorageError, e.ConfigError, e.ProtocolError):
        assert not cls.on_wire() and cls.code not in e.WIRE_CODES
        assert e.error_to_plain(cls("secret detail"))["code"] == "internal"
        assert type(e.error_from_plain({"code": cls.code, "message": "m"})) is e.InternalError


def test_the_table_has_one_class_per_code_and_covers_the_state_machine() -> None:
    codes = [cls.code for cls in e.ERRORS]
    assert len(codes) == len(set(codes))
    defined = {
        obj
        for obj in vars(e).values()
        if isinstance(obj, type) and issubclass(obj, e.UnivrsError) and obj is not e.UnivrsError
    }
    assert defined == set(e.ERRORS), "every error class of univrs.errors is in the table"
    for code in ErrorCode:  # a state machine failure is answered with its own code
        failure = Failure(code=code, message="m", current_version=3)
        exc = failure_to_exception(failure)
        assert exc.code == code.value and exc.on_wire()
    assert tuple(sorted(c.code for c in e.ERRORS if c.http_status is not None)) == e.WIRE_CODES


def test_docs_print_the_error_table() -> None:
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert e.error_table() in doc, "docs/api.md: paste univrs.errors.error_table() under Errors"


def test_request_frames_round_trip_and_bad_requests_are_isolated() -> None:
    reqs = [
        Request(id=1, op="workload.get", args={"id": "w"}, consistency="local"),
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
