"""Client sessions for exactly-once commands (Raft dissertation 6.3).

Theory of operation
-------------------
A client opens a session with an ``OpenSession`` command; its client id is derived from the log
index of that command, so an id that is not in the table was certainly opened and then expired
(or never existed): the state machine answers ``session-expired`` and does not apply the
command, instead of silently applying a retry twice. (Client-chosen ids could not tell a new
client from a returning expired one without remembering every id forever.)

Every session command carries ``seq``. The session remembers the response of every applied
sequence number in the window ``(max_seq - window, max_seq]``:

* ``seq`` in the cache: a retry; the cached response is returned and nothing is applied;
* ``seq`` in the window but not cached: never applied (possibly reordered); it is applied;
* ``seq <= max_seq - window``: its response was discarded; ``stale-sequence``, nothing applied.

Expiry is deterministic: a session expires when it has been inactive for more than
``ttl_entries`` log entries or for more than ``ttl_ms`` of *leader-stamped* time (the largest
``time_ms`` carried by an applied entry so far; never a local clock). The table is kept in
activity order (least recent first), and activity index and time only grow, so expiry only
ever pops from the front: O(1) amortised per command.

Every session has an *owner*: the identity that opened it (a token id, or the client's address
when the API runs without tokens; "" for sessions of older entries). Eviction never lets one
owner's flood push out another owner's sessions: an owner holds at most
``max_sessions_per_owner`` sessions (opening one more evicts that owner's least recently active
session), and when the whole table is full, the evicted session is the least recently active
one of the owner holding the most sessions (so a flooding owner loses its own first; between
owners holding as many, the one whose least recently active session is the least recent, then
the smaller client id: a rule on the state alone, so a replica that restored its table from a
snapshot or from disk picks the same one as a replica that built it command by command).

A keyed command may name its caller (``Envelope.owner``, s14-owner): under a session of
another known owner it is refused as ``session-expired`` before it touches the session
(``may_use``), so a forger that guesses a session id cannot take its (session, seq) slots.

Order is a function of the state, never of the history: sessions in activity order (by their
last index, then client id), a session's cached responses by sequence number. A persistent
backend stores the table with that order as an index (``univrs.storage.sm_tables``).

The table, with the order, is part of the state and of snapshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from univrs.sm.responses import Response
from univrs.sm.tables import NO_JOURNAL, StateJournal


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{attribute.name} must be a positive integer or None, got {value!r}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen(kw_only=True)
class SessionPolicy:
    """Session limits. Part of the replicated state (stored in snapshots): every replica must
    apply with the same policy, so it is fixed when the state machine is created."""

    window: int = attrs.field(default=64, validator=_positive)
    max_sessions: int = attrs.field(default=10_000, validator=_positive)
    ttl_entries: int | None = attrs.field(default=None, validator=_positive_or_none)
    ttl_ms: int | None = attrs.field(default=3_600_000, validator=_positive_or_none)
    max_sessions_per_owner: int = attrs.field(default=1_024, validator=_positive)


@attrs.define(eq=False)
class Session:
    """One client's session. Invariant: every key of ``responses`` is in
    ``(max_seq - window, max_seq]``, and ``max_seq`` is a key unless it is 0."""

    client_id: str
    last_index: int  # log index of the last command of this client (or of the open)
    last_ms: int  # leader-stamped clock at that command
    max_seq: int = 0
    responses: dict[int, Response] = attrs.field(factory=dict)
    owner: str = ""  # who opened it (a token id or a client address; "" if not known)


@attrs.define(eq=False)
class SessionTable:
    """All open sessions, least recently active first."""

    policy: SessionPolicy
    # Told of every session about to change (a persistent backend writes it with the batch).
    journal: StateJournal = NO_JOURNAL
    _sessions: dict[str, Session] = attrs.field(factory=dict)
    # owner -> its sessions' client ids, least recently active first (an index of _sessions)
    _owners: dict[str, dict[str, None]] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(self._sessions.values())

    def get(self, client_id: str) -> Session | None:
        """The session of ``client_id``, or None if it is unknown (expired, closed)."""
        return self._sessions.get(client_id)

    def owned(self, owner: str) -> int:
        """How many sessions ``owner`` holds."""
        return len(self._owners.get(owner, ()))

    def open(self, client_id: str, index: int, now_ms: int, owner: str = "") -> None:
        """Open a session for ``owner``, first evicting (see the module docstring) the
        owner's least recently active session when it holds its maximum, and the least
        recently active session of the largest owner when the table is full."""
        mine = self._owners.get(owner)
        while mine and len(mine) >= self.policy.max_sessions_per_owner:
            self._drop(next(iter(mine)))
            mine = self._owners.get(owner)
        while len(self._sessions) >= self.policy.max_sessions:
            self._drop(self._evicted())
        self.journal.session(client_id)
        self.journal.opened(client_id)
        self._sessions[client_id] = Session(
            client_id=client_id, last_index=index, last_ms=now_ms, owner=owner
        )
        self._owners.setdefault(owner, {})[client_id] = None

    def _evicted(self) -> str:
        """The session to evict from a full table: the least recently active one of the owner
        holding the most sessions; between owners holding as many, of the one whose least
        recently active session is the least recent (then the smaller client id)."""
        most = max(map(len, self._owners.values()))
        firsts = [self._sessions[next(iter(m))] for m in self._owners.values() if len(m) == most]
        return min(firsts, key=lambda s: (s.last_index, s.last_ms, s.client_id)).client_id

    def _drop(self, client_id: str) -> None:
        if client_id not in self._sessions:
            return
        self.journal.session(client_id)
        session = self._sessions.pop(client_id)
        mine = self._owners[session.owner]
        del mine[client_id]
        if not mine:
            del self._owners[session.owner]

    def close(self, client_id: str) -> None:
        """Drop a session (no-op if unknown)."""
        self._drop(client_id)

    def touch(self, session: Session, index: int, now_ms: int) -> None:
        """Record activity: the session moves to the back of the table."""
        client_id = session.client_id
        self.journal.session(client_id)
        session.last_index = index
        session.last_ms = now_ms
        table = self._sessions
        del table[client_id]
        table[client_id] = session
        mine = self._owners[session.owner]
        del mine[client_id]
        mine[client_id] = None

    def expire(self, index: int, now_ms: int) -> int:
        """Drop every session inactive for too long at (index, now_ms); returns how many."""
        sessions = self._sessions
        if not sessions:
            return 0
        policy = self.policy
        ttl_entries, ttl_ms = policy.ttl_entries, policy.ttl_ms
        # the loop's first test written out (s30: once per revision, nearly always false)
        first = next(iter(sessions.values()))
        if (ttl_entries is None or index - first.last_index <= ttl_entries) and (
            ttl_ms is None or now_ms - first.last_ms <= ttl_ms
        ):
            return 0
        dropped = 0
        while self._sessions:
            first = next(iter(self._sessions.values()))
            stale = (ttl_entries is not None and index - first.last_index > ttl_entries) or (
                ttl_ms is not None and now_ms - first.last_ms > ttl_ms
            )
            if not stale:
                break
            self._drop(first.client_id)
            dropped += 1
        return dropped

    def may_use(self, session: Session, owner: str | None) -> bool:
        """May a command of ``owner`` use ``session``? (s14-owner) Yes without an owner in the
        command (entries written before owners travelled in the log: no check, as then), and
        for a session of no known owner (opened by such an entry); else only its owner."""
        return owner is None or not session.owner or session.owner == owner

    def is_stale(self, session: Session, seq: int) -> bool:
        """True if ``seq`` is older than the response window (its outcome is forgotten)."""
        return seq <= session.max_seq - self.policy.window

    def record(self, session: Session, seq: int, response: Response) -> None:
        """Remember the response to ``seq`` and slide the window: O(1) for a seq after the
        others (one response in, those that fall out of the window out), O(later seqs) for a
        gap filled; the journal is told of this response only (``StateJournal.response``)."""
        self.journal.session(session.client_id)
        self.record_touched(session, seq, response)

    def record_touched(self, session: Session, seq: int, response: Response) -> None:
        """``record`` for a session ``touch`` reported to the journal in this command (the
        state machine's keyed write, s30): the journal already knows the session changes."""
        window = self.policy.window
        self.journal.response(session.client_id, seq)
        if seq > session.max_seq:
            old_cut, new_cut = session.max_seq - window, seq - window
            if new_cut == old_cut + 1:  # the next seq (a client's every write): one out
                session.responses.pop(new_cut, None)
            elif new_cut - old_cut >= window:
                session.responses.clear()  # every cached seq is <= old max_seq <= new_cut
            else:
                for gone in range(old_cut + 1, new_cut + 1):
                    session.responses.pop(gone, None)
            session.max_seq = seq
            session.responses[seq] = response  # the largest: the cache stays in seq order
        else:
            # a gap in the window filled: keep seq order by moving the later seqs behind it
            # (O(later seqs), no copy of the window)
            responses = session.responses
            later = []
            for cached in reversed(responses):
                if cached < seq:
                    break
                later.append(cached)
            moved = [(k, responses.pop(k)) for k in reversed(later) if k != seq]
            responses[seq] = response
            responses.update(moved)

    def restore(self, sessions: list[Session]) -> None:
        """Load sessions read from a snapshot or from disk, in their stored (activity) order
        (each one's responses put in seq order: older snapshots kept arrival order)."""
        for s in sessions:
            if list(s.responses) != sorted(s.responses):
                s.responses = dict(sorted(s.responses.items()))
        self._sessions = {s.client_id: s for s in sessions}
        self._owners = {}
        for s in sessions:
            self._owners.setdefault(s.owner, {})[s.client_id] = None

    def problems(self) -> list[str]:
        """Violated invariants (empty when the table is sound)."""
        found: list[str] = []
        if len(self._sessions) > self.policy.max_sessions:
            found.append(f"{len(self._sessions)} sessions exceed {self.policy.max_sessions}")
        if sum(len(m) for m in self._owners.values()) != len(self._sessions) or any(
            self._sessions.get(c) is None or self._sessions[c].owner != o
            for o, m in self._owners.items()
            for c in m
        ):
            found.append("the owner index does not match the sessions")
        for owner, mine in self._owners.items():
            if len(mine) > self.policy.max_sessions_per_owner:
                found.append(f"owner {owner!r} holds more than its maximum of sessions")
        previous: Session | None = None
        for s in self._sessions.values():
            if any(not s.max_seq - self.policy.window < k <= s.max_seq for k in s.responses):
                found.append(f"session {s.client_id} caches responses outside its window")
            if s.max_seq and s.max_seq not in s.responses:
                found.append(f"session {s.client_id} lost the response to its max seq")
            if list(s.responses) != sorted(s.responses):
                found.append(f"session {s.client_id} caches responses out of seq order")
            if previous is not None and (
                s.last_index < previous.last_index
                or s.last_ms < previous.last_ms
                or (s.last_index == previous.last_index and s.client_id < previous.client_id)
            ):
                found.append(f"session {s.client_id} is out of activity order")
            previous = s
        return found
