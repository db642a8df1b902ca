"""Idempotency sessions of one writer: ``SessionPool`` leases the key ``(client_id, seq)`` each
write carries (Raft dissertation 6.3; the state machine's side is univrs/sm/sessions.py).

Theory of operation. A pool holds the sessions one writer opened (``session.open``, through
the log) and hands each write the next sequence number of a session, keeping fewer than
``SESSION_WINDOW`` of one session's writes in flight (the state machine remembers the
responses of the last 64 numbers, so a retry of the oldest in flight is never stale); it opens
another session, up to ``max_sessions``, when all are busy, and otherwise waits for a number
to be released. ``write`` runs one write with its key: the caller's ``call`` retries the SAME
key until its deadline, so a retry after a leader change is answered with the first response
instead of applying again. If the session is gone (``session-expired``: expired or evicted)
before any attempt may have applied, the write goes once more under a new session.

Two writers use it: ``univrs.client.Client`` (its own sessions, on the cluster it dials) and
the node's MCP endpoint (univrs/api/mcp.py: one pool per caller, opened on the node for that
caller's identity).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from univrs.errors import SessionExpired, Timeout

SESSION_WINDOW = 32  # in-flight writes per session; the state machine's window is 64
MAX_SESSIONS = 64

T = TypeVar("T")

__all__ = ["MAX_SESSIONS", "SESSION_WINDOW", "SessionPool"]


@attrs.define(eq=False)
class _Session:
    """One idempotency session: its client id and the sequence numbers in use."""

    client_id: str
    next_seq: int = 1
    # The seqs in flight, in the order issued: increasing (each is ``next_seq``, which only
    # grows), so the first is the oldest, without a ``min`` over them per lease.
    outstanding: dict[int, None] = attrs.field(factory=dict)

    def can_issue(self) -> bool:
        # Every seq in flight stays within the window of the newest one, so a retry of the
        # oldest is never "stale" (older than the state machine's response cache).
        outstanding = self.outstanding
        return not outstanding or self.next_seq < next(iter(outstanding)) + SESSION_WINDOW


@attrs.define(eq=False)
class SessionPool:
    """The idempotency sessions of one writer (see the module docstring). ``open_session``
    opens one by ``deadline`` (safe to retry: a session a lost attempt opened merely idles
    until it expires) and answers its client id."""

    open_session: Callable[[float], Awaitable[str]]
    max_sessions: int = MAX_SESSIONS
    _sessions: list[_Session] = attrs.field(factory=list)
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    # Set when a key is released, made only while a lease waits for one (not per write).
    _released: trio.Event | None = None

    @property
    def in_flight(self) -> int:
        """How many keys are leased now (writes in flight)."""
        return sum(len(s.outstanding) for s in self._sessions)

    async def write(self, call: Callable[[tuple[str, int]], Awaitable[T]], deadline: float) -> T:
        """``call(key)`` with the next key of a session; ``call`` retries that same key until
        ``deadline`` and raises ``OutcomeUnknown`` (never ``SessionExpired``) once an attempt
        may have applied."""
        fresh = True
        while True:
            leased = self._lease_now()  # no coroutine for the usual case (s19-client)
            session, seq = leased if leased is not None else await self._lease(deadline)
            try:
                return await call((session.client_id, seq))
            except SessionExpired:
                # The session is gone (expired or evicted) and no attempt of this call may
                # have applied: nothing was applied, so the command may go again under a new
                # session, once.
                self._forget(session)
                if not fresh:
                    raise
                fresh = False
            finally:
                session.outstanding.pop(seq, None)
                released = self._released
                if released is not None:
                    self._released = None
                    released.set()

    def _lease_now(self) -> tuple[_Session, int] | None:
        """The next key of the first session that can issue one, if any (not waiting)."""
        for session in self._sessions:
            outstanding = session.outstanding
            seq = session.next_seq
            # ``can_issue``, written out: this runs for every write.
            if not outstanding or seq < next(iter(outstanding)) + SESSION_WINDOW:
                session.next_seq = seq + 1
                outstanding[seq] = None
                return session, seq
        return None

    async def _lease(self, deadline: float) -> tuple[_Session, int]:
        while True:
            leased = self._lease_now()
            if leased is not None:
                return leased
            if len(self._sessions) < self.max_sessions and not self._lock.locked():
                async with self._lock:
                    client_id = await self.open_session(deadline)
                    self._sessions.append(_Session(client_id=client_id))
                continue
            with trio.move_on_at(deadline):
                if self._released is None:
                    self._released = trio.Event()
                await self._released.wait()
                continue
            raise Timeout("no idempotency session became free before the deadline")

    def adopt(self, client_id: str, next_seq: int) -> None:
        """Write with an existing session from ``next_seq`` on; the caller guarantees nobody
        else uses those numbers."""
        self._sessions.append(_Session(client_id=client_id, next_seq=next_seq))

    def detach(self) -> list[tuple[str, int]]:
        """Hand the sessions over (client id, next sequence number), newest last: the pool
        forgets them."""
        sessions, self._sessions = self._sessions, []
        return [(s.client_id, s.next_seq) for s in sessions]

    def _forget(self, session: _Session) -> None:
        if session in self._sessions:
            self._sessions.remove(session)
