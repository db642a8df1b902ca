"""The cluster state machine: ``apply(command, index=, term=)`` and read-only queries.

Theory of operation
-------------------
Every replica applies the same committed commands in the same order and must end in the same
state, so ``apply`` is deterministic (no clock, no randomness, no iteration over hash-ordered
sets: the object tables iterate in id order, the other collections are dicts, whose order is
insertion order; both are the same on every replica) and total (every command gets a
response; a rejected command changes nothing but ``last_applied`` and, for session commands,
the session's activity).

The handler of each command (``univrs.sm.handlers``, where the fields are declared too)
first validates everything (arguments, existence, versions), and only then mutates, with no
failure point in the mutation: a command is applied whole or not at all.

Versions and revisions: every command applies at a *revision*, and a successful command sets
the version of every object it changes to that revision (cascades included: instances turned
``unknown`` when their node goes down get it too); session ids (``c<revision>``), the objects'
``created_index``, session activity and the watch history's revisions are revisions as well.
A log entry carries one command (``apply``) or a batch of them (``apply_batch``, payload
version 2: univrs/runtime/payload.py). Each command, and each entry without one
(``mark_applied``), takes revision ``max(last revision + 1, its entry's index)``, so the
commands of one batch entry take consecutive revisions and revisions only grow. While every
entry carries one command (all logs written before batch entries existed) the revision *is*
the log index, exactly as before: old logs and snapshots give the same versions, ids and
digests. A snapshot stores the last revision when it differs from the last index.

Cost: O(log n) table operations per command (the tables are ordered by id:
``univrs.sm.tables``), except the cascades (DeleteWorkload, DeregisterNode, UpdateNodeStatus to
``down``), which are O(instances affected) thanks to the secondary indexes workload ->
instances and node -> instances, and visit the instances in id order. Reads that list are range
scans in id order: a page of ``limit`` objects after an id costs O(log n + limit).

Watch events: ``last_events()`` describes what the last applied command changed
(``univrs.sm.events``), for the runtime's watch history; it is derived from the changes the
object tables recorded during that command, so it costs nothing unless somebody asks.

The object tables and their indexes live in ``univrs.sm.objects``; the ledger in
``credits``; the session table in ``sessions``. ``problems()`` checks all their invariants
(the property tests call it after every command). The read-only queries (``get_workload``,
the pages, ``statistics()``, ...) are ``univrs.sm.queries.StateQueries``, a base of
``ClusterStateMachine``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import attrs

from univrs.sm.builders import slot_builder
from univrs.sm.commands import (
    CloseSession,
    Command,
    Envelope,
    OpenSession,
)
from univrs.sm.errors import AppliedOutOfOrder, DecodeError
from univrs.sm.events import Event, ObjectKind
from univrs.sm.handlers import _HANDLERS, MAX_OWNER_LEN, invalid
from univrs.sm.model import Instance, Node
from univrs.sm.objects import AppliedChanges, Objects, StagedRows, StoredWorkload
from univrs.sm.queries import StateQueries
from univrs.sm.responses import ErrorCode, Failure, Response
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.tables import RawRows
from univrs.sm.tokens import Token
from univrs.sm.validate import (
    MAX_VERSION,
    VALID_IDS,
    client_id_problem,
    text_problem,
)

_SESSION_COMMANDS = (OpenSession, CloseSession)

# ``AppliedChanges(revision, items)``, built slot by slot (``builders``; once per command)
_applied_changes: Callable[[int, tuple[Any, ...]], AppliedChanges] = slot_builder(AppliedChanges)


@attrs.define(eq=False)
class ClusterStateMachine(StateQueries):
    """The replicated cluster state: workloads, instances, nodes, credits and client sessions."""

    # ---------------------------------------------------------------- apply

    def apply(
        self, command: Envelope | Command, *, index: int, term: int, time_ms: int | None = None
    ) -> Response:
        """Apply the one committed command of log position (index, term); never raises for a
        bad command. Raises ``AppliedOutOfOrder`` if ``index`` is not after the last applied one.

        The changes of one command are made in one ``batch`` (a write transaction for a
        persistent backend), or in the caller's batch if one is open."""
        with self._objects.batch():
            self.mark_applied(index=index, term=term, time_ms=time_ms)
            return self._command(command, self._revision)

    def apply_batch(
        self,
        commands: Sequence[Envelope | Command | Failure],
        *,
        index: int,
        term: int,
        time_ms: int | None = None,
        each: Callable[[int, AppliedChanges], None] | None = None,
        captured: list[tuple[int, AppliedChanges]] | None = None,
    ) -> list[Response]:
        """Apply the commands of the batch entry at log position (index, term), in order, at
        consecutive revisions (see the module docstring): one response each, as if each were
        the one command of its own entry. A ``Failure`` in ``commands`` (a command its replica
        could not decode, the same on every replica) is that command's response and takes its
        revision too. ``each(revision, changes)`` is called after each command with what it
        changed (``last_changes``), before the next one applies; ``captured`` (a list) gets
        the same (revision, changes) appended instead, for a caller that hands them on once
        per entry (the runtime's watch history). Raises ``AppliedOutOfOrder`` like ``apply``;
        ``commands`` must not be empty."""
        if not commands:
            raise ValueError("a batch entry carries at least one command")
        self._enter(index, term, time_ms)
        responses: list[Response] = []
        append = responses.append
        command_of = self._command
        keep = None if captured is None else captured.append
        # ``_next_revision`` written out (s30): the entry's index and the clock do not change
        # while its commands apply.
        changes, expire = self._objects.changes, self._sessions.expire
        last_index, clock_ms = self._last_index, self._clock_ms
        # One batch for the entry (round 18; the caller's if it opened one, as the runtime
        # does): its commands' changes are made, and a persistent state commits them, together
        # with the applied index, never half an entry.
        with self._objects.batch():
            for command in commands:
                revision = self._revision + 1
                if revision < last_index:
                    revision = last_index
                self._revision = revision
                changes.clear()  # last_events() describes this revision only
                expire(revision, clock_ms)
                if isinstance(command, Failure):
                    response: Response = command
                else:
                    response = command_of(command, revision)
                append(response)
                if keep is not None:
                    keep((revision, self.last_changes()))
                if each is not None:
                    each(revision, self.last_changes())
        return responses

    def _command(self, command: Envelope | Command, index: int) -> Response:
        if type(command) is Envelope:
            # Every keyed write (s30): the checks below, in the same order, written out for a
            # command that passes them all (a client id already validated, a plain seq, an
            # owner of plain text); then the same steps. Anything else: the general path.
            client_id, seq, owner = command.client_id, command.seq, command.owner
            cmd: object = command.command
            if (
                type(client_id) is str
                and client_id in VALID_IDS
                and type(seq) is int
                and 1 <= seq <= MAX_VERSION
                and not isinstance(cmd, _SESSION_COMMANDS)
                and (
                    owner is None
                    or (type(owner) is str and len(owner) <= MAX_OWNER_LEN and "\x00" not in owner)
                )
            ):
                return self._keyed(cmd, client_id, seq, owner, index, True)
        if isinstance(command, Envelope):
            cmd = command.command
            client_id, seq, owner = command.client_id, command.seq, command.owner
        else:
            cmd, client_id, seq, owner = command, None, None, None
        if client_id is None and seq is None:
            if owner is not None:
                return invalid("owner is sent only with a client id and seq")
            return self._dispatch(cmd, index)
        if client_id is None or seq is None:
            return invalid("client_id and seq must be given together")
        problem = client_id_problem(client_id)
        if problem:
            return invalid(problem)
        if type(seq) is not int or not 1 <= seq <= MAX_VERSION:
            return invalid("seq must be a positive integer")
        if isinstance(cmd, OpenSession | CloseSession):
            return invalid("session commands are sent without a client id and seq")
        if owner is not None:
            problem = text_problem("owner", owner, MAX_OWNER_LEN)
            if problem:
                return invalid(problem)
        return self._keyed(cmd, client_id, seq, owner, index, False)

    def _keyed(
        self, cmd: object, client_id: str, seq: int, owner: str | None, index: int, fast: bool
    ) -> Response:
        """The steps of a keyed command whose envelope passed every check, for both paths of
        ``_command``: the session's look-up, owner check and touch, the stale seq, the cached
        answer of a retry, else the command applied and its answer recorded. ``fast``: the
        written-out path (s30), which records with ``record_touched`` (``touch`` already told
        the journal of the session); the general path keeps ``record``."""
        sessions = self._sessions
        session = sessions.get(client_id)
        if session is None or not sessions.may_use(session, owner):
            # Another owner's session (s14-owner): answered as if it did not exist, and
            # left as it is (its activity, its cached responses): a forger that raced the
            # owner's open cannot take a (session, seq) slot, nor keep the session alive.
            return Failure(
                code=ErrorCode.SESSION_EXPIRED, message=f"session {client_id!r} is unknown"
            )
        sessions.touch(session, index, self._clock_ms)
        if seq <= session.max_seq - sessions.policy.window:  # ``is_stale``, written out
            return Failure(
                code=ErrorCode.STALE_SEQUENCE,
                message=f"seq {seq} is older than the window of session {client_id!r}",
            )
        cached = session.responses.get(seq)
        if cached is not None:
            return cached  # a retry: answered, not applied again
        handler = _HANDLERS.get(type(cmd))  # ``_dispatch``, written out
        response = self._dispatch(cmd, index) if handler is None else handler(self, cmd, index)
        if fast:
            sessions.record_touched(session, seq, response)
        else:
            sessions.record(session, seq, response)
        return response

    def mark_applied(self, *, index: int, term: int, time_ms: int | None = None) -> None:
        """Advance to log position (index, term) without a command (a no-op or configuration
        entry), so ``last_applied`` and snapshots follow the log; it takes a revision (the
        index, while no batch entry applied) and expires sessions."""
        with self._objects.batch():
            self._enter(index, term, time_ms)
            self._next_revision()

    def batch(self) -> AbstractContextManager[object]:
        """A context in which every change is made in one batch: one write transaction for a
        persistent backend, committed with the applied index, revision, term and clock when
        the block ends (the runtime applies a chunk of entries in one). Nothing in memory. If
        the block raises, a persistent state is left as it was before it, but this object is
        not: the caller must drop it (the node stops) and open the state again."""
        return self._objects.batch()

    def _enter(self, index: int, term: int, time_ms: int | None) -> None:
        """Start applying the entry at (index, term)."""
        if index <= self._last_index:
            raise AppliedOutOfOrder(
                f"index {index} is not after the last applied index {self._last_index}"
            )
        self._last_index, self._last_term = index, term
        if time_ms is not None and time_ms > self._clock_ms:
            self._clock_ms = time_ms

    def _next_revision(self) -> int:
        """Take the next revision in the current entry: ``max(last + 1, the entry's index)``."""
        revision = self._revision + 1
        if revision < self._last_index:
            revision = self._last_index
        self._revision = revision
        self._objects.changes.clear()  # last_events() describes this revision only
        self._sessions.expire(revision, self._clock_ms)
        return revision

    # ---------------------------------------------------------------- watch events

    def last_events(self) -> tuple[Event, ...]:
        """The events of the last applied command or entry (empty if it changed no object), in
        the order the changes were made. Call it before applying the next one: a workload's
        status is derived from the instances as they are when this is called."""
        return self.last_changes().events()

    def last_changes(self) -> AppliedChanges:
        """``last_events()`` captured, not rendered: the changed objects (immutable) and each
        changed workload's instance counts as they are now, so the events can be rendered
        later, after other entries applied, exactly as ``last_events()`` renders them now.
        Cheap (no views built): the runtime's watch history keeps these and renders only the
        revisions a watcher reads (issue 14)."""
        changes = self._objects.changes
        if not changes:
            return _applied_changes(self._revision, ())
        if len(changes) == 1:  # a scale, an update, a create: one workload put (round 18)
            kind, ident, before, after = changes[0]
            if type(after) is StoredWorkload and (
                before is None or (type(before) is StoredWorkload and before.id == after.id)
            ):
                now_counts = self._objects.instance_counts(after.id)
                prior = None if before is None else (before, now_counts)
                item = (kind, ident, prior, (after, now_counts))
                return _applied_changes(self._revision, (item,))
        counts = self._objects.instance_counts
        items: list[tuple[ObjectKind, str, Any, Any]] = []
        # A workload's counts as they are now, once per workload (an update's before and
        # after are the same workload: one lookup, not two). Tuples: shared.
        seen: dict[str, Any] = {}
        for kind, ident, before, after in changes:
            was: Any = before
            now: Any = after
            if isinstance(before, StoredWorkload):
                found = seen.get(before.id)
                if found is None:
                    found = seen[before.id] = counts(before.id)
                was = (before, found)
            if isinstance(after, StoredWorkload):
                found = seen.get(after.id)
                if found is None:
                    found = seen[after.id] = counts(after.id)
                now = (after, found)
            items.append((kind, ident, was, now))
        return _applied_changes(self._revision, tuple(items))

    # ---------------------------------------------------------------- snapshot support

    def stored_workloads(self) -> Iterator[StoredWorkload]:
        """Stored workloads in storage (id) order (for snapshots)."""
        return self._objects.stored_workloads()

    def stored_instances(self) -> Iterator[Instance]:
        """Instances in storage (id) order (for snapshots)."""
        return self._objects.stored_instances()

    def stored_nodes(self) -> Iterator[Node]:
        """Nodes in storage (id) order (for snapshots)."""
        return self._objects.stored_nodes()

    def stored_views(
        self,
    ) -> tuple[
        Callable[[], Iterator[StoredWorkload]],
        Callable[[], Iterator[Instance]],
        Callable[[], Iterator[Node]],
    ]:
        """Point-in-time views of the workloads, instances and nodes: cheap to take now,
        iterated in storage (id) order later, from another thread (for snapshots)."""
        return self._objects.views()

    def stored_raw_views(self) -> tuple[RawRows, RawRows, RawRows] | None:
        """Point-in-time views of the workload, instance and node rows already encoded for a
        snapshot (a persistent backend stores them so), or None (in memory): a snapshot of
        them copies bytes instead of encoding objects. Taken between batches."""
        return self._objects.raw_views()

    def ledger_items(self) -> Iterator[tuple[str, int]]:
        """(peer, balance) in storage order (for snapshots)."""
        return self._ledger.items()

    def stored_sessions(self) -> Iterator[Session]:
        """Sessions, least recently active first (for snapshots)."""
        return iter(self._sessions)

    def stored_tokens(self) -> Iterator[Token]:
        """API tokens in storage order (for snapshots)."""
        return iter(self._tokens)

    @classmethod
    def from_parts(
        cls,
        *,
        policy: SessionPolicy,
        last_index: int,
        last_term: int,
        clock_ms: int,
        workloads: Iterable[StoredWorkload] | StagedRows,
        instances: Iterable[Instance] | StagedRows,
        nodes: Iterable[Node] | StagedRows,
        balances: list[tuple[str, int]],
        sessions: list[Session],
        tokens: list[Token] | None = None,
        tokens_bootstrapped: bool = False,
        revision: int | None = None,
        objects: Objects | None = None,
    ) -> ClusterStateMachine:
        """Rebuild a state machine (and its indexes) from snapshot parts, in their order, in
        ``objects`` (empty tables; default: new ones), all in one batch. ``revision`` is the
        last revision (None: ``last_index``, all a snapshot taken before batch entries existed
        can say).

        Raises ``DecodeError`` if the parts break an invariant (a corrupt snapshot)."""
        sm = cls(policy) if objects is None else cls(policy, objects=objects)
        sm._revision = last_index if revision is None else revision
        if sm._revision < last_index:
            raise DecodeError(
                f"snapshot: revision {sm._revision} is below the last index {last_index}"
            )
        with sm.batch():
            sm._last_index, sm._last_term, sm._clock_ms = last_index, last_term, clock_ms
            found = sm._objects.load(workloads, instances, nodes)
            sm._ledger.restore(balances)
            sm._sessions.restore(sessions)
            sm._tokens.restore(tokens or [], tokens_bootstrapped)
            found += sm._ledger.problems() + sm._sessions.problems() + sm._tokens.problems()
            if found:
                raise DecodeError(f"snapshot: {'; '.join(found)}")
            sm._objects.journal.rewrite()
        return sm

    @classmethod
    def resume(
        cls,
        objects: Objects,
        *,
        policy: SessionPolicy,
        last_index: int,
        last_term: int,
        clock_ms: int,
        balances: list[tuple[str, int]],
        sessions: list[Session],
        tokens: list[Token],
        tokens_bootstrapped: bool,
        revision: int,
    ) -> ClusterStateMachine:
        """A state machine on object tables that already hold its objects (a persistent
        backend opened again), with the small tables read back from it. Nothing is written.

        Raises ``DecodeError`` if the small tables break an invariant."""
        sm = cls(policy, objects=objects)
        sm._last_index, sm._last_term, sm._clock_ms = last_index, last_term, clock_ms
        if revision < last_index:
            raise DecodeError(f"stored state: revision {revision} is below index {last_index}")
        sm._revision = revision
        sm._ledger.restore(balances)
        sm._sessions.restore(sessions)
        sm._tokens.restore(tokens, tokens_bootstrapped)
        found = sm._ledger.problems() + sm._sessions.problems() + sm._tokens.problems()
        if found:
            raise DecodeError(f"stored state: {'; '.join(found)}")
        return sm

    def problems(self) -> list[str]:
        """Violated invariants (empty when the state is sound); for tests and debugging."""
        return (
            self._objects.problems()
            + self._ledger.problems()
            + self._sessions.problems()
            + self._tokens.problems()
        )
