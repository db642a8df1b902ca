"""The one error family (univrs/errors.py): its table, its wire form, who may raise what."""

from __future__ import annotations

import pathlib

import pytest

from univrs import codec
from univrs import errors as e
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
    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    assert e.error_table() in doc, "docs/api.md: paste univrs.errors.error_table() under Errors"
