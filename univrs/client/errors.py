"""The errors of the client surface, shared by the server (REST and fast protocol) and the client.

One table (``_CODES``) maps each error code to its class and HTTP status, so the REST API, the
fast client protocol and the Python client agree on every error: the server raises one of these,
the protocol layers turn it into ``{"code", "message", ...}`` with ``error_to_plain``, and the
client turns that back into the same class with ``error_from_plain``.

=====================  ======  ===============================================================
code                   HTTP    meaning
=====================  ======  ===============================================================
malformed-request      400     not JSON / not CBOR, not an object, a malformed header
invalid-argument       422     a field has the wrong type, an unknown name or a bad value
not-found              404     the object (or route) does not exist
method-not-allowed     405     the REST endpoint exists, not with this method
already-exists         409     create with an id that is taken
version-conflict       409     expected version differs (``current_version`` says the actual)
insufficient-credits   409     a transfer would make the payer's balance negative
session-expired        409     the idempotency session is unknown (expired); open a new one
stale-sequence         409     the idempotency seq is older than the session's window
not-leader             503     this node cannot serve the write (``leader`` hints the leader)
unavailable            503     no leader / no quorum now; nothing was applied; retry later
timeout                503     the deadline passed; the outcome is unknown: retry with the key
outcome-unknown        503     the write may or may not have applied: retry only with its key
internal               500     a bug; the message says what broke
=====================  ======  ===============================================================
"""

from __future__ import annotations

from typing import Any

from univrs import errors as base

RETRYABLE_CODES = frozenset({"not-leader", "unavailable", "timeout", "outcome-unknown"})


class ApiError(base.UnivrsError):
    """An error answered by a univrs node (or raised by the client on its behalf).

    ``field`` names the offending request field (``spec.replicas``) for invalid arguments.
    """

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        # Not super(): with NotLeader's two bases, the next __init__ in line would be
        # univrs.errors.NotLeader's, whose first argument is a hint, not a message.
        Exception.__init__(self, message)
        self.message = message
        self.field = field

    def extra(self) -> dict[str, Any]:
        """Code-specific fields carried next to code and message (leader, versions, ...)."""
        return {}


class MalformedRequest(ApiError):
    """The request cannot be parsed at all (bad JSON/CBOR, bad header syntax)."""

    code = "malformed-request"
    http_status = 400


class InvalidArgument(ApiError):
    """A field is missing, unknown, of the wrong type or out of range; ``field`` says which."""

    code = "invalid-argument"
    http_status = 422


class NotFound(ApiError):
    """The addressed object does not exist."""

    code = "not-found"
    http_status = 404


class MethodNotAllowed(ApiError):
    """The endpoint exists but not with this HTTP method (REST only)."""

    code = "method-not-allowed"
    http_status = 405


class Conflict(ApiError):
    """The request conflicts with the current state (base of the 409 errors)."""

    code = "conflict"
    http_status = 409


class AlreadyExists(Conflict):
    """An object with this id already exists."""

    code = "already-exists"


class VersionConflict(Conflict):
    """The object's version is not the expected one; ``current_version`` is the actual one."""

    code = "version-conflict"

    def __init__(
        self, message: str, *, field: str | None = None, current_version: int | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.current_version = current_version

    def extra(self) -> dict[str, Any]:
        return {} if self.current_version is None else {"current_version": self.current_version}


class InsufficientCredits(Conflict):
    """The payer's balance is too low for the transfer."""

    code = "insufficient-credits"


class SessionExpired(Conflict):
    """The idempotency session is unknown (expired, evicted or closed); nothing was applied."""

    code = "session-expired"


class StaleSequence(Conflict):
    """The idempotency sequence number fell out of the session's window; outcome unknown."""

    code = "stale-sequence"


class Unavailable(ApiError, base.Unavailable):
    """The cluster cannot serve the request now; ``retry_after`` is a hint in seconds.

    ``outcome_unknown`` is False when the server knows nothing was applied (no leader, refused
    before proposing) and True when a write may or may not have been applied (a deadline or a
    lost connection after sending): retry it only with its idempotency key.
    """

    code = "unavailable"
    http_status = 503
    outcome_unknown = False

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        retry_after: float = 1.0,
        leader: str | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after
        self.leader = leader

    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"retry_after": self.retry_after}
        if self.leader is not None:
            out["leader"] = self.leader
        return out


class Timeout(Unavailable):
    """The request's deadline passed before it was answered; a write's outcome is unknown."""

    code = "timeout"
    outcome_unknown = True


class OutcomeUnknown(Unavailable, base.OutcomeUnknown):
    """The write reached a Raft log, and the node cannot tell whether it applied (its entry was
    covered by a snapshot from a new leader, the connection to the leader broke after sending,
    or a retry with its key could not be answered from the session). Never retried without an
    idempotency key; with one, a retry is answered with the first outcome."""

    code = "outcome-unknown"
    outcome_unknown = True


class ConnectionLost(Unavailable):
    """The connection to the node broke with the request in flight (client side only)."""

    code = "connection-lost"
    outcome_unknown = True


class NotLeader(Unavailable, base.NotLeader):
    """The node cannot execute the write and may not forward it; ``leader_hint`` names the
    leader it knows of. The write was not proposed, so retrying is safe."""

    code = "not-leader"

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        leader: str | None = None,
        retry_after: float = 0.1,
    ) -> None:
        text = message or f"not the leader (leader hint: {leader or 'unknown'})"
        Unavailable.__init__(self, text, field=field, retry_after=retry_after, leader=leader)
        self.leader_hint = leader


class InternalError(ApiError):
    """The server hit a bug; the message says what broke."""

    code = "internal"
    http_status = 500


_CODES: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (
        MalformedRequest,
        InvalidArgument,
        NotFound,
        MethodNotAllowed,
        Conflict,
        AlreadyExists,
        VersionConflict,
        InsufficientCredits,
        SessionExpired,
        StaleSequence,
        Unavailable,
        Timeout,
        OutcomeUnknown,
        ConnectionLost,
        NotLeader,
        InternalError,
    )
}

ERROR_CODES = tuple(sorted(_CODES))


def error_to_plain(exc: ApiError) -> dict[str, Any]:
    """The wire form of an error: ``{"code", "message", "field"?, ...extra}``."""
    out: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        out["field"] = exc.field
    out.update(exc.extra())
    return out


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _opt_num(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return default


def error_from_plain(doc: Any) -> ApiError:
    """The exception for a wire error (an unknown code or shape becomes ``InternalError``)."""
    if not isinstance(doc, dict):
        return InternalError(f"malformed error from the server: {doc!r:.100}")
    code = doc.get("code")
    message = doc.get("message")
    if not isinstance(message, str):
        message = str(message)
    field = _opt_str(doc.get("field"))
    cls = _CODES.get(code) if isinstance(code, str) else None
    if cls is None:
        return InternalError(f"{code}: {message}", field=field)
    if cls is VersionConflict:
        current = doc.get("current_version")
        return VersionConflict(
            message,
            field=field,
            current_version=current if type(current) is int else None,
        )
    if cls is NotLeader:
        return NotLeader(
            message,
            field=field,
            leader=_opt_str(doc.get("leader")),
            retry_after=_opt_num(doc.get("retry_after"), 0.1),
        )
    if issubclass(cls, Unavailable):
        return cls(
            message,
            field=field,
            retry_after=_opt_num(doc.get("retry_after"), 1.0),
            leader=_opt_str(doc.get("leader")),
        )
    return cls(message, field=field)
