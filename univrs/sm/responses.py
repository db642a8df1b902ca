"""What ``apply`` answers: a success, a created id, or a typed failure.

Responses are values stored in client sessions (for exactly-once retries) and therefore in
snapshots, so they are small: an object's new version, never the object itself.
"""

from __future__ import annotations

import enum

import attrs


class ErrorCode(enum.StrEnum):
    """Why a command failed. The string values are part of the plain (wire/snapshot) format."""

    NOT_FOUND = "not-found"
    ALREADY_EXISTS = "already-exists"
    INVALID_ARGUMENT = "invalid-argument"
    INSUFFICIENT_CREDITS = "insufficient-credits"
    VERSION_CONFLICT = "version-conflict"
    # Session errors (Raft dissertation 6.3): the command was NOT applied by this entry, and
    # the state machine cannot tell whether an earlier copy of it was.
    SESSION_EXPIRED = "session-expired"
    STALE_SEQUENCE = "stale-sequence"


@attrs.frozen(kw_only=True, slots=True)
class Success:
    """The command took effect at log index ``version`` (the new version of what it changed)."""

    version: int


@attrs.frozen(kw_only=True, slots=True)
class Created:
    """An object (or a client session) was created with ``id``, at log index ``version``."""

    id: str
    version: int


@attrs.frozen(kw_only=True, slots=True)
class Failure:
    """The command changed nothing. ``current_version`` is set on a version conflict."""

    code: ErrorCode
    message: str
    current_version: int | None = None


Response = Success | Created | Failure
