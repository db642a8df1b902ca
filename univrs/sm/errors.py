"""Errors of the state machine layer.

Two families:

* ``DecodeError``: plain data (a command, a response, a snapshot) has the wrong shape or types.
  Raised by the ``*_from_plain`` converters, never by ``apply``.
* ``CommandFailed`` and its subclasses: the exception form of a ``Failure`` response, raised by
  the ``StateStore`` layer so application code can ``except NotFound``. Inside the state machine
  a failed command is a *response*, never an exception (``apply`` is total).

``AppliedOutOfOrder`` is a bug in the caller (the runtime fed an index that is not after the
last applied one); it is raised, not answered, because answering would hide a double apply.
"""

from __future__ import annotations

from univrs.errors import UnivrsError
from univrs.sm.responses import ErrorCode, Failure


class DecodeError(UnivrsError, ValueError):
    """Plain data does not have the shape of the value it should encode; says where and why."""


class AppliedOutOfOrder(UnivrsError):
    """``apply`` got a log index that is not greater than the last applied index."""


class CommandFailed(UnivrsError):
    """A command was applied and answered with a ``Failure``; ``failure`` is that response."""

    code: ErrorCode = ErrorCode.INVALID_ARGUMENT

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(f"{failure.code.value}: {failure.message}")

    @property
    def current_version(self) -> int | None:
        """The object's version when the command was applied (set for version conflicts)."""
        return self.failure.current_version


class NotFound(CommandFailed):
    """The object the command addresses does not exist."""

    code = ErrorCode.NOT_FOUND


class AlreadyExists(CommandFailed):
    """An object with the id the command creates already exists."""

    code = ErrorCode.ALREADY_EXISTS


class InvalidArgument(CommandFailed):
    """The command is well-formed but its arguments are not acceptable (ranges, transitions)."""

    code = ErrorCode.INVALID_ARGUMENT


class InsufficientCredits(CommandFailed):
    """A transfer would make the payer's balance negative."""

    code = ErrorCode.INSUFFICIENT_CREDITS


class VersionConflict(CommandFailed):
    """The object's version differs from the command's expected version."""

    code = ErrorCode.VERSION_CONFLICT


class SessionExpired(CommandFailed):
    """The client session is unknown (expired, evicted or closed); open a new one."""

    code = ErrorCode.SESSION_EXPIRED


class StaleSequence(CommandFailed):
    """The sequence number is older than the session's response window; outcome unknown."""

    code = ErrorCode.STALE_SEQUENCE


_BY_CODE: dict[ErrorCode, type[CommandFailed]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        InsufficientCredits,
        VersionConflict,
        SessionExpired,
        StaleSequence,
    )
}


def failure_to_exception(failure: Failure) -> CommandFailed:
    """The exception (a ``CommandFailed`` subclass chosen by the code) for a failure response."""
    return _BY_CODE[failure.code](failure)
