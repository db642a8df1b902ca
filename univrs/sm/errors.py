"""The state machine's errors: the product's error family (``univrs.errors``), mapped here.

Inside the state machine a failed command is a *response*, never an exception: ``apply`` is
total and answers ``Failure(code, message)`` (``univrs.sm.responses``), a value that client
sessions and snapshots store. ``failure_to_exception`` is the one place that turns such a
failure into the exception every layer raises for it (``NotFound``, ``VersionConflict``, ...:
the same classes the service answers and the Python client raises).

Two errors are raised, not answered: ``DecodeError`` (plain data of the wrong shape, from the
``*_from_plain`` converters, never from ``apply``) and ``AppliedOutOfOrder`` (a bug in the
caller: the runtime fed an index that is not after the last applied one; answering it would
hide a double apply).
"""

from __future__ import annotations

from univrs.errors import (
    AlreadyExists,
    AppliedOutOfOrder,
    DecodeError,
    InsufficientCredits,
    InvalidArgument,
    NotFound,
    SessionExpired,
    StaleSequence,
    UnivrsError,
    VersionConflict,
)
from univrs.sm.responses import ErrorCode, Failure

__all__ = [
    "AlreadyExists",
    "AppliedOutOfOrder",
    "DecodeError",
    "InsufficientCredits",
    "InvalidArgument",
    "NotFound",
    "SessionExpired",
    "StaleSequence",
    "VersionConflict",
    "failure_to_exception",
]


def failure_to_exception(failure: Failure) -> UnivrsError:
    """The exception for a failure response, naming the request field it is about."""
    code, message = failure.code, failure.message
    if code is ErrorCode.NOT_FOUND:
        return NotFound(message)
    if code is ErrorCode.ALREADY_EXISTS:
        return AlreadyExists(message, field="id")
    if code is ErrorCode.VERSION_CONFLICT:
        return VersionConflict(
            message, field="expected_version", current_version=failure.current_version
        )
    if code is ErrorCode.INSUFFICIENT_CREDITS:
        return InsufficientCredits(message, field="amount")
    if code is ErrorCode.SESSION_EXPIRED:
        return SessionExpired(
            f"{message}: the idempotency session expired (or never existed); open a new "
            "session; a command sent with this key may or may not have been applied"
        )
    if code is ErrorCode.STALE_SEQUENCE:
        return StaleSequence(message)
    return InvalidArgument(message)
