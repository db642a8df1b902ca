"""One error family for the whole product: ``UnivrsError`` and the table of its codes.

Every error univrs raises on purpose is a ``UnivrsError`` with a ``code``. The node's service
(REST and fast protocol), the Raft core, the runtime and the Python client raise the *same*
classes: the server turns one into its wire form ``{"code", "message", "field"?, ...extra}``
(``error_to_plain``), the client turns that back into the same class (``error_from_plain``).
So ``except NotFound`` is written once, whichever side raised it.

``ERRORS`` is the table, one class per code, each with four attributes:

* ``http_status``: the REST status; ``None`` for a *local* error, which never crosses the wire
  (configuration, storage, a dropped proposal: the code that sees one translates it, and one
  that reaches a client anyway is answered as ``internal``, a bug);
* ``retryable``: an automatic retry of the same request may succeed later;
* ``outcome_unknown``: a write may or may not have been applied (docs/api.md, "Write
  outcomes"): retry it only with its idempotency key. ``ConnectionLost`` sets it per instance
  (True once its request was sent);
* ``meaning``: one line, printed in docs/api.md's table (``error_table``; a test keeps the two
  equal).

Errors of one component that no other component catches (``MembershipError``,
``ScenarioError``, ...) subclass ``UnivrsError`` where they are raised, as local errors.

This is a leaf module: it imports only the standard library, so the pure core (``univrs.raft``)
and the state machine (``univrs.sm``) may import it. Library exceptions (LMDB, cbor2,
trio-websocket) are translated into these at the edge where they occur.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ERRORS",
    "MAX_WIRE_FIELD",
    "MAX_WIRE_MESSAGE",
    "WIRE_CODES",
    "AlreadyExists",
    "AppliedOutOfOrder",
    "CommitPending",
    "Compacted",
    "ConfigError",
    "Conflict",
    "ConnectionLost",
    "DecodeError",
    "InsufficientCredits",
    "InternalError",
    "InvalidArgument",
    "MalformedRequest",
    "MethodNotAllowed",
    "NoSpace",
    "NotFound",
    "NotLeader",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProposalDropped",
    "ProtocolError",
    "RateLimited",
    "SessionExpired",
    "StaleSequence",
    "StorageError",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "UnivrsError",
    "VersionConflict",
    "error_from_plain",
    "error_table",
    "error_to_plain",
    "wire_error",
]


class UnivrsError(Exception):
    """Base class of every error univrs raises on purpose (see the module docstring).

    ``message`` says what happened; ``field`` names the offending request field
    (``spec.replicas``) when there is one.
    """

    code: ClassVar[str] = "error"
    http_status: ClassVar[int | None] = None
    retryable: ClassVar[bool] = False
    outcome_unknown: bool = False  # an instance may override it (ConnectionLost)
    meaning: ClassVar[str] = "a local error of one component"

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @classmethod
    def on_wire(cls) -> bool:
        """True if a server answers this error to clients (it has an HTTP status)."""
        return cls.http_status is not None

    def extra(self) -> dict[str, Any]:
        """Code-specific fields carried next to code and message (leader, versions, ...)."""
        return {}


# ---------------------------------------------------------------- answers: the request is wrong


class MalformedRequest(UnivrsError):
    """The request cannot be parsed at all (bad JSON/CBOR, bad header syntax)."""

    code = "malformed-request"
    http_status = 400
    meaning = "body is not JSON, not an object; bad header syntax (`Idempotency-Key`, `If-Match`)"


class InvalidArgument(UnivrsError):
    """A field is missing, unknown, of the wrong type or out of range; ``field`` says which."""

    code = "invalid-argument"
    http_status = 422
    meaning = (
        "wrong type, unknown field, missing field, value out of range; `field` names it "
        "(`spec.replicas`)"
    )


class PayloadTooLarge(UnivrsError):
    """The request body (or JSON nesting) exceeds the node's limit; nothing was read past it."""

    code = "payload-too-large"
    http_status = 413
    meaning = "the request body is larger than the node accepts (`limits.max_body_bytes`)"


class Unauthenticated(UnivrsError):
    """Auth is on and the request carries no token, or one that is unknown or revoked."""

    code = "unauthenticated"
    http_status = 401
    meaning = "auth is on: no token, or an unknown or revoked one (`Authorization: Bearer`)"


class PermissionDenied(UnivrsError):
    """The caller is known (or anonymous) but may not do this: its token lacks the role the
    operation needs, or a join comes without the join token or a node certificate."""

    code = "permission-denied"
    http_status = 403
    meaning = (
        "the token lacks the operation's role (`read`, `write`, `credits`, `admin`), or a join "
        "lacks the join token or a node certificate"
    )


class NotFound(UnivrsError):
    """The addressed object does not exist."""

    code = "not-found"
    http_status = 404
    meaning = "the object (or endpoint, or operation) does not exist"


class MethodNotAllowed(UnivrsError):
    """The endpoint exists but not with this HTTP method (REST only)."""

    code = "method-not-allowed"
    http_status = 405
    meaning = "REST only"


class Conflict(UnivrsError):
    """The request conflicts with the current state (base of the other 409 errors)."""

    code = "conflict"
    http_status = 409
    meaning = "conflicts with the current state (a membership change that cannot be made)"


class AlreadyExists(Conflict):
    """An object with this id already exists."""

    code = "already-exists"
    meaning = "create with a taken id"


class VersionConflict(Conflict):
    """The object's version is not the expected one; ``current_version`` is the actual one."""

    code = "version-conflict"
    meaning = "expected version differs; `current_version`"

    def __init__(
        self, message: str = "", *, field: str | None = None, current_version: int | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.current_version = current_version

    def extra(self) -> dict[str, Any]:
        return {} if self.current_version is None else {"current_version": self.current_version}


class Compacted(UnivrsError):
    """A watch asked for events from a revision this node no longer keeps (etcd's
    "required revision has been compacted"). ``current_revision`` is the node's applied
    revision: list again (the list reports the revision it was read at) and watch from that
    revision + 1. ``compacted_revision``: every revision up to it may be missing here."""

    code = "compacted"
    http_status = 410
    meaning = "a watch's revision is no longer kept; list again, watch from `current_revision` + 1"

    def __init__(
        self,
        message: str = "",
        *,
        field: str | None = None,
        current_revision: int = 0,
        compacted_revision: int = 0,
    ) -> None:
        super().__init__(message, field=field)
        self.current_revision = current_revision
        self.compacted_revision = compacted_revision

    def extra(self) -> dict[str, Any]:
        return {
            "current_revision": self.current_revision,
            "compacted_revision": self.compacted_revision,
        }


class InsufficientCredits(Conflict):
    """The payer's balance is too low for the transfer."""

    code = "insufficient-credits"
    meaning = "a transfer would overdraw the payer"


class SessionExpired(Conflict):
    """The idempotency session is unknown (expired, evicted or closed): this request applied
    nothing; an earlier attempt with the same key may have. Open a new session."""

    code = "session-expired"
    meaning = "the idempotency session is unknown (expired); this request applied nothing"


class StaleSequence(Conflict):
    """The idempotency sequence number fell out of the session's window: this request applied
    nothing, and whether an earlier attempt with that key did is no longer known."""

    code = "stale-sequence"
    meaning = "the idempotency seq is older than the session's window; this request applied nothing"


# ---------------------------------------------------------------- refusals: try again later


class Unavailable(UnivrsError):
    """The cluster cannot serve the request now (no leader, no quorum); nothing was applied.
    ``retry_after`` is a hint in seconds, ``leader`` the leader the node knows of, if any.

    Its subclasses say more: ``NotLeader`` (nothing applied either), and the unknown outcomes
    ``Timeout``, ``OutcomeUnknown`` and (once sent) ``ConnectionLost``.
    """

    code = "unavailable"
    http_status = 503
    retryable = True
    meaning = "no leader / no quorum; nothing was applied; `retry_after`"

    def __init__(
        self,
        message: str = "",
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


class NotLeader(Unavailable):
    """This node is not the leader and may not forward the request; ``leader_hint`` names the
    leader it knows of, if any. Nothing was proposed, so retrying is safe (at the leader)."""

    code = "not-leader"
    meaning = "(forwarded requests only) this node cannot execute the write; `leader` hints"

    def __init__(
        self,
        leader: str | None = None,
        *,
        message: str | None = None,
        field: str | None = None,
        retry_after: float = 0.1,
    ) -> None:
        text = message or f"not the leader (leader hint: {leader or 'unknown'})"
        super().__init__(text, field=field, retry_after=retry_after, leader=leader)

    @property
    def leader_hint(self) -> str | None:
        """The leader this node knows of (None: unknown)."""
        return self.leader


class Timeout(Unavailable):
    """The request's deadline passed before it was answered; a write's outcome is unknown."""

    code = "timeout"
    outcome_unknown = True
    meaning = "deadline passed; a write's outcome is unknown: retry with its key"


class OutcomeUnknown(Unavailable):
    """A write reached a Raft log and the node cannot tell whether it applied (its entry was
    covered by a snapshot from a new leader, its waiter was abandoned, the connection to the
    leader broke after sending, or a retry with its key could not be answered from the
    session). It may apply or may have applied already: never retried without an idempotency
    key; with one, a retry is answered with the first outcome."""

    code = "outcome-unknown"
    outcome_unknown = True
    meaning = (
        "the write reached a log and may or may not have applied; it was not retried "
        "(see *Write outcomes*): retry only with its key"
    )


class ConnectionLost(Unavailable):
    """The connection to a node broke (client side, and a node forwarding to its leader).
    ``outcome_unknown`` is True once the request was sent, False when it never left."""

    code = "connection-lost"
    outcome_unknown = True
    meaning = "(raised by clients) the connection broke; unknown outcome once the request was sent"


class RateLimited(Unavailable):
    """The caller (its token, or its address without auth) exceeded a rate limit, such as
    session opening; nothing was applied. Retry after ``retry_after`` seconds."""

    code = "rate-limited"
    http_status = 429
    meaning = "too many requests of this kind from this token or address; nothing was applied"


class NoSpace(UnivrsError):
    """The storage quota is exhausted (a NOSPACE alarm, like etcd's): writes are refused until
    space is freed (deletes and compaction still work); reads are served."""

    code = "no-space"
    http_status = 507
    meaning = "the storage quota is exceeded (NOSPACE alarm): writes other than deletes refused"


class InternalError(UnivrsError):
    """The server hit a bug; the message says what broke."""

    code = "internal"
    http_status = 500
    meaning = "a bug (logged with its traceback); never expected"


# ---------------------------------------------------------------- local errors (never on the wire)


class ProposalDropped(UnivrsError):
    """A proposal certainly did not and never will apply: it was refused before it reached the
    log (for example during a leader transfer), or its entry was replaced by a different entry
    at its index. Retrying it is safe."""

    code = "proposal-dropped"
    retryable = True
    meaning = "the core refused a proposal, or a different entry took its index; retry"


class CommitPending(ProposalDropped):
    """A leader refused a configuration change until an entry already in its log commits: the
    first entry of its term (it was just elected, or handed leadership) or the previous
    configuration change. That takes about one round trip; ``runtime.membership`` waits for
    it and proposes again."""

    code = "commit-pending"
    meaning = "a configuration change waits for an entry already in the leader's log to commit"


class ConfigError(UnivrsError):
    """A configuration file or flag is invalid; the message says which key and why."""

    code = "config-error"
    meaning = "a configuration file or flag is invalid"


class StorageError(UnivrsError):
    """The data directory is unusable: corrupt, foreign, locked or out of space."""

    code = "storage-error"
    meaning = "the data directory is unusable: corrupt, foreign, locked or full"


class WouldWait(Exception):
    """A storage write asked not to wait found that it would: another writer holds the
    store's write lock, or its map must grow first. Nothing was written; the caller runs the
    write again, waiting (the storage writer, on its thread: univrs/runtime/writer.py)."""


class ProtocolError(UnivrsError):
    """A peer or client broke the wire protocol (malformed, oversized or unexpected frame)."""

    code = "protocol-error"
    meaning = "a peer or client broke the wire protocol (the connection is closed)"


class DecodeError(UnivrsError, ValueError):
    """Plain data (a command, a response, a snapshot) does not have the shape of the value it
    should encode; says where and why. Raised by the state machine's ``*_from_plain``."""

    code = "decode-error"
    meaning = "plain data (command, response, snapshot) has the wrong shape"


class AppliedOutOfOrder(UnivrsError):
    """``apply`` got a log index that is not greater than the last applied index (a bug in
    the caller: answering it would hide a double apply)."""

    code = "applied-out-of-order"
    meaning = "the state machine was fed an index it already applied (a bug)"


# ---------------------------------------------------------------- the table

ERRORS: tuple[type[UnivrsError], ...] = (
    MalformedRequest,
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    Conflict,
    AlreadyExists,
    VersionConflict,
    InsufficientCredits,
    SessionExpired,
    StaleSequence,
    Compacted,
    NotLeader,
    Unavailable,
    Timeout,
    OutcomeUnknown,
    ConnectionLost,
    RateLimited,
    NoSpace,
    InternalError,
    ProposalDropped,
    CommitPending,
    ConfigError,
    StorageError,
    ProtocolError,
    DecodeError,
    AppliedOutOfOrder,
)

_BY_CODE: dict[str, type[UnivrsError]] = {cls.code: cls for cls in ERRORS}
assert len(_BY_CODE) == len(ERRORS), "two errors share a code"

WIRE_CODES: tuple[str, ...] = tuple(sorted(c for c, cls in _BY_CODE.items() if cls.on_wire()))
"""The codes a server may answer (the OpenAPI document's enum)."""


def error_class(code: str) -> type[UnivrsError] | None:
    """The class of ``code``, if it is one of the table."""
    return _BY_CODE.get(code)


def error_table() -> str:
    """The table as Markdown (docs/api.md prints it; a test keeps the two equal)."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    lines = [
        "| code | HTTP | retryable | outcome unknown | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for cls in ERRORS:
        status = "-" if cls.http_status is None else str(cls.http_status)
        lines.append(
            f"| `{cls.code}` | {status} | {yes(cls.retryable)} | {yes(cls.outcome_unknown)} "
            f"| {cls.meaning} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the wire form


def wire_error(exc: UnivrsError) -> UnivrsError:
    """``exc`` if a server may answer it; a local error becomes ``InternalError`` (a local
    error that reaches a client is a bug of the code that should have translated it)."""
    if exc.on_wire():
        return exc
    return InternalError(f"{type(exc).__name__}: {exc.message}")


MAX_WIRE_MESSAGE = 4096
"""The most characters of an error's message on the wire (``error_to_plain``): refusals quote
what the client sent (an unknown operation or field, a session id), which may be megabytes of
a request frame; the fast protocol charges an error answer a fixed size of its connection's
answer budget (s26-fuzz)."""
MAX_WIRE_FIELD = 512
"""The most characters of an error's ``field`` on the wire (a field path)."""


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    room = limit - len(f"... ({len(text)} characters cut)")  # the note's longest form
    if room < 16:
        return text[:limit]
    return f"{text[:room]}... ({len(text) - room} characters cut)"


def error_to_plain(exc: UnivrsError) -> dict[str, Any]:
    """The wire form of an error: ``{"code", "message", "field"?, ...extra}``; a message or
    field longer than ``MAX_WIRE_MESSAGE`` / ``MAX_WIRE_FIELD`` characters is cut short."""
    exc = wire_error(exc)
    message = exc.message
    if len(message) > MAX_WIRE_MESSAGE:
        message = _clip(message, MAX_WIRE_MESSAGE)
    out: dict[str, Any] = {"code": exc.code, "message": message}
    field = exc.field
    if field is not None:
        out["field"] = field if len(field) <= MAX_WIRE_FIELD else _clip(field, MAX_WIRE_FIELD)
    out.update(exc.extra())
    return out


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _opt_num(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return default


def error_from_plain(doc: Any) -> UnivrsError:
    """The exception for a wire error (an unknown code or shape becomes ``InternalError``)."""
    if not isinstance(doc, dict):
        return InternalError(f"malformed error from the server: {doc!r:.100}")
    code = doc.get("code")
    message = doc.get("message")
    if not isinstance(message, str):
        message = str(message)
    field = _opt_str(doc.get("field"))
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None or not cls.on_wire():
        return InternalError(f"{code}: {message}", field=field)
    if cls is VersionConflict:
        current = doc.get("current_version")
        return VersionConflict(
            message, field=field, current_version=current if type(current) is int else None
        )
    if cls is Compacted:
        current, compacted = doc.get("current_revision"), doc.get("compacted_revision")
        return Compacted(
            message,
            field=field,
            current_revision=current if type(current) is int else 0,
            compacted_revision=compacted if type(compacted) is int else 0,
        )
    if cls is NotLeader:
        return NotLeader(
            _opt_str(doc.get("leader")),
            message=message,
            field=field,
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
