"""A write as the node runs it (``Write``; ``Submission`` and ``WriteAnswer`` for a client frame's),
and what its caller is told when an attempt did not end with an answer: the types, messages and
errors shared by the single-write path (``RaftStateStore.submit``, univrs/api/store.py) and a
client frame's writes (``FrameWrites``, univrs/api/batcher.py).

The rules (docs/api.md, "Write outcomes"): a refusal proves only that *its* attempt did not
apply; once an earlier attempt may have applied, the caller is told the outcome is unknown
(``after_unknown``), and a deadline passed after such an attempt is a ``timeout``, before any a
``unavailable`` (nothing applied: ``expired``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from univrs.api.auth import ANONYMOUS, Caller
from univrs.errors import (
    NoSpace,
    OutcomeUnknown,
    PermissionDenied,
    SessionExpired,
    StaleSequence,
    Timeout,
    Unauthenticated,
    Unavailable,
    UnivrsError,
)
from univrs.sm.commands import Command, Envelope
from univrs.sm.responses import Response
from univrs.sm.state import ClusterStateMachine

__all__ = [
    "NODE_ITSELF",
    "NO_LEADER_MESSAGE",
    "UNKNOWN_MESSAGE",
    "Submission",
    "Write",
    "WriteAnswer",
    "after_unknown",
    "check_session_owner",
    "expired",
    "held_to_owner",
]

NO_LEADER_MESSAGE = (
    "no leader: the cluster is electing one or has lost its quorum; nothing was applied, retry"
)
# The caller of a node's own write (no caller given, auth on): trusted on the leader, never
# forwarded (see ``RaftStateStore.execute``).
NODE_ITSELF = Caller(address="node-itself")
UNKNOWN_MESSAGE = (
    "the write reached a Raft log but this node cannot tell whether it applied; it was not "
    "retried: read the object to find out, or send writes with an idempotency key"
)


def after_unknown(exc: UnivrsError) -> UnivrsError:
    """The error to answer once an earlier attempt may have applied the write.

    A later attempt's refusal (no leader, not the leader, the session gone or its window
    passed) only says that *that* attempt did not apply; answering it would tell the caller
    that nothing applied, and a caller retrying without the key would apply it twice (so do
    the refusals of a retry made before proposing: ``no-space``, the caller's rights). Answers
    of the state machine to a keyed retry (the first response) and unknown outcomes stand."""
    if isinstance(exc, Unavailable) and not exc.outcome_unknown:
        return OutcomeUnknown(f"{UNKNOWN_MESSAGE} (a retry was refused: {exc.message})")
    if isinstance(
        exc, SessionExpired | StaleSequence | NoSpace | Unauthenticated | PermissionDenied
    ):
        # (The quota's and the rights' refusals: made before the retry was proposed.)
        return OutcomeUnknown(f"{UNKNOWN_MESSAGE} (a retry with its key failed: {exc.message})")
    return exc


def expired(maybe_applied: bool) -> UnivrsError:
    """The answer to a write whose deadline passed (``maybe_applied``: an attempt may have
    applied it)."""
    if maybe_applied:
        return Timeout(
            "the write was not confirmed before its deadline; it may or may not have been "
            "applied: retry it with the same idempotency key",
            retry_after=1.0,
        )
    return Unavailable(NO_LEADER_MESSAGE, retry_after=1.0)


# ``Write`` and ``Submission`` are built for every client write and never changed: plain
# ``attrs.define`` classes, since a frozen attrs class pays an ``object.__setattr__`` per field
# at construction (1.6 µs for a ``Write``, against 0.5: docs/performance.md, "Round 9").
@attrs.define(kw_only=True)
class Write:
    """One write as ``RaftStateStore.submit`` runs it (not to be changed once built).

    ``envelope`` is proposed on the leader; a follower forwards ``op`` with ``args`` (the
    normalized arguments the leader rebuilds the same command from). ``render`` turns the
    applied response into the result (None: the response itself); ``leader_step``, on the
    leader, may replace the command or answer without writing (a heartbeat)."""

    envelope: Envelope
    op: str
    args: dict[str, Any]
    caller: Caller = ANONYMOUS  # forwarded with the request: the leader authorizes it again
    allowed_when_full: bool = False  # a write that frees space passes the NOSPACE alarm
    render: Callable[[Response, ClusterStateMachine], Any] | None = None
    leader_step: Callable[[ClusterStateMachine], tuple[Command | None, dict[str, Any]]] | None = (
        None
    )
    # The caller asked for a minimal answer (``{"id", "version"}``, s18-answers): ``render``
    # gives it here, and a follower forwards the request asking the leader for it too.
    minimal: bool = False


@attrs.define
class Submission:
    """One write of ``RaftStateStore.submit_many``: ``submit``'s arguments (not to be changed
    once built)."""

    write: Write
    key: tuple[str, int] | None
    deadline: float
    hops: int = 0


# A write's answer from ``submit_many``: (result, meta), or the exception ``submit`` raises.
WriteAnswer = tuple[Any, dict[str, Any]] | Exception


def held_to_owner(owner: str) -> bool:
    """Is a keyed write of this identity held to its session's owner? Only token identities:
    without auth an identity is the client's address as each node sees it, which changes with
    the node a client reaches (and anyone may write anything anyway)."""
    return owner.startswith("token:")


def check_session_owner(sm: ClusterStateMachine, client_id: str, owner: str) -> None:
    """Refuse early a keyed write under a session another token opened (s13-audit2 S1).

    Session ids are log positions, easy to guess: a write keyed with another writer's id and
    next seq used to apply and have its response cached under that key, so the owner's own
    write with it was answered with the forger's response and never applied. This check reads
    the serving node's applied state (and the leader's: a forwarded write is built there
    again), so a session not applied there yet passes it; the check that holds is the state
    machine's (s14-owner): the envelope carries the caller's identity and a command under
    another owner's session is refused at apply, the same on every replica
    (docs/security.md, "s14-owner"). This one only answers sooner, without a log entry."""
    if not held_to_owner(owner):
        return
    session = sm.session(client_id)
    if session is not None and session.owner and session.owner != owner:
        raise SessionExpired(f"session {client_id!r} is unknown")


def check_caught_up(sm: ClusterStateMachine, term: int) -> None:
    """Refuse a ``leader_step`` (it reads the leader's own state: a heartbeat's node, the
    answer of a write with nothing to write) on a leader whose state has not yet applied an
    entry of its own term ``term``: before it applied its term's first entry, its state may
    lack writes committed under an earlier leader (a heartbeat answered "not found" for a node
    registered a moment before the election). ``Unavailable`` is retried by the client; the
    window is the few milliseconds between the election and the apply of the new term's first
    entry."""
    if sm.last_applied_term != term:
        raise Unavailable(
            "the leader is still applying the entries of earlier terms; try again",
            retry_after=0.05,
        )
