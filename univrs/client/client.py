"""The async (Trio) Python client: finds and follows the leader, retries safely, typed errors.

Theory of operation.

* Addresses. The client is given fast-protocol addresses (the nodes' raft listeners) or REST
  addresses, from which it asks ``/v1/cluster/endpoints`` once. Every node's hello lists all
  members, so the client knows the whole cluster after its first connection.
* Leader following. The client keeps one connection, preferably to the leader: each response
  frame carries the server's leader hint, and when it names another node the client moves its
  next requests to that node (the old connection is closed once its requests are answered).
  Any node would do (followers forward writes), the leader just saves a hop.
* Exactly-once writes. Every write carries an idempotency key ``(client_id, seq)`` from a
  session the client opened (``session.open``); a retry reuses the key, so the state machine
  answers it with the first response instead of applying it again (Raft dissertation 6.3). A
  session remembers the responses of its last 64 sequence numbers, so the client keeps fewer
  than ``SESSION_WINDOW`` of one session's writes in flight and opens more sessions when it is
  busier than that (``univrs.client.sessions.SessionPool``, shared with the node's MCP endpoint).
* Retries. Until the call's deadline, the client retries what is safe to retry: any request
  the node certainly did not apply (``unavailable``, ``not-leader``, not sent), and after an
  unknown outcome (``timeout``, ``outcome-unknown``, a connection lost after sending) only
  reads and keyed writes: a keyless write's unknown outcome is raised at once. So a caller
  does not see a leader change at all; it sees ``Unavailable`` only when no leader emerges
  before the deadline and nothing was applied. Once an attempt of a write may have applied,
  every later failure that only says the *retry* did not apply (``unavailable``,
  ``not-leader``, ``session-expired``, ``stale-sequence``) is raised as ``OutcomeUnknown``,
  so ``write`` never opens a new session and sends the command again.
* Watches. ``watch(kinds, from_revision=)`` is a loop of ``events.poll`` long polls, each
  asking for the revision after the last one answered; a poll is a read, so a failed one is
  retried on another member with the same revision: the events go on with no gap and no
  duplicate across a killed node or a leader change (docs/orchestrator.md).
* TLS. With ``ssl_context`` (``univrs.net.tls.client_context(ca, cert, key)``) every
  connection, fast or REST, is TLS: the node's certificate is checked against the cluster CA
  and the address dialed, and the client's certificate (if the context has one) is shown.
  An ``https://`` address asks for TLS too (with the system's CAs when no context is given).
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from univrs.client.connection import Connection
from univrs.client.methods import StateMethods
from univrs.client.protocol import ANSWER_MESSAGE, ANSWERS, MINIMAL_READ_MESSAGE, OBJECT_WRITES
from univrs.client.sessions import SessionPool
from univrs.errors import (
    Compacted,
    ConnectionLost,
    InvalidArgument,
    NoSpace,
    OutcomeUnknown,
    PayloadTooLarge,
    PermissionDenied,
    SessionExpired,
    StaleSequence,
    Unauthenticated,
    Unavailable,
    UnivrsError,
)
from univrs.service.operations import operation
from univrs.service.schemas import DEFAULT_EVENTS

log = logging.getLogger("univrs.client")

DEFAULT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0
MAX_PAUSE = 0.5  # longest pause between two attempts
MOVE_BACKOFF = 5.0  # after failing to reach the leader, keep using a follower this long
WATCH_WAIT = 5.0  # how long one watch poll waits on the server for an event


def split_url(address: str) -> tuple[str, bool]:
    """(``host:port``, whether TLS was asked for) of ``address``: ``host:port``,
    ``http://host:port`` or ``https://host:port`` (a trailing ``/`` is ignored)."""
    text = address.strip().rstrip("/")
    for scheme, secure in (("https://", True), ("http://", False)):
        if text.lower().startswith(scheme):
            return text[len(scheme) :], secure
    return text, False


def ssl_for(secure: bool, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The context to dial with: the one given, else the system's for an ``https://`` address."""
    if ssl_context is not None:
        return ssl_context
    return ssl.create_default_context() if secure else None


async def discover(
    api_addresses: list[str],
    *,
    timeout: float = CONNECT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    own: bool = False,
) -> list[str]:
    """Fast-protocol addresses of the cluster, leader first, from any node's REST API; with
    ``own``, only the address of the node that answered."""
    from univrs.net.http import get_json

    errors = []
    for url in api_addresses:
        api, secure = split_url(url)
        try:
            doc = await get_json(
                api,
                "/v1/cluster/endpoints",
                timeout=timeout,
                ssl_context=ssl_for(secure, ssl_context),
            )
        except (OSError, ValueError, trio.TooSlowError) as exc:
            errors.append(f"{api}: {exc or type(exc).__name__}")
            continue
        members = doc.get("members", {}) if isinstance(doc, dict) else {}
        leader = doc.get("leader") if isinstance(doc, dict) else None
        order = sorted(members, key=lambda m: (m != leader, m != doc.get("node"), m))
        if own:
            order = [m for m in order if m == doc.get("node")]
        found = [members[m]["client"] for m in order if members[m].get("client")]
        if found:
            return found
        errors.append(f"{api}: no client endpoints listed")
    raise Unavailable(
        "cannot reach the univrs API at "
        + ", ".join(api_addresses)
        + f" ({'; '.join(errors)}); is a node running there?"
    )


@attrs.define(eq=False)
class Client(StateMethods):
    """A univrs client (see the module docstring). Create it with ``open_client``; the typed
    operations (``create_workload``, ``mint_credits``, ...) come from ``StateMethods``."""

    endpoints: list[str]
    nursery: trio.Nursery
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = CONNECT_TIMEOUT
    ssl_context: ssl.SSLContext | None = None
    token: str | None = attrs.field(default=None, repr=False)  # the API token's secret
    _conn: Connection | None = None
    _retired: list[Connection] = attrs.field(factory=list)
    _members: dict[str, str] = attrs.field(factory=dict)  # node id -> fast address
    _move_retry_at: dict[str, float] = attrs.field(factory=dict)  # address -> earliest retry
    _connect_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _sessions: SessionPool = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: SessionPool(self._open_session), takes_self=True),
    )
    _rng: random.Random = attrs.field(factory=random.Random)
    retries: int = 0  # attempts beyond the first, over the client's lifetime (statistics)
    # Give up at once, rather than retry until the deadline, when a node answers that the
    # cluster is unavailable (it has already waited for an election: LEADER_WAIT on the
    # server) or no node can be reached at all. For one-shot callers such as the CLI.
    fail_fast: bool = False
    # Stay on the node first connected to, never move to the leader: for local (stale-allowed)
    # reads of that node's replica. Writes and linearizable reads are forwarded by the node.
    stay: bool = False
    # How the writes that answer with their object (``protocol.OBJECT_WRITES``) answer unless
    # a call says otherwise: "full" (the document, the default) or "minimal" (``{"id",
    # "version"}``: no document rendered, encoded or decoded for it; s18-answers).
    answer: str = attrs.field(default="full", validator=attrs.validators.in_(ANSWERS))
    # The run's clock, read directly (s19-client): ``trio.current_time()`` costs twice the
    # clock's method (0.16 against 0.08 µs here). The client lives in one run.
    _clock: trio.abc.Clock = attrs.field(init=False, factory=trio.lowlevel.current_clock)

    # ---------------------------------------------------------------- connections

    @property
    def node_id(self) -> str | None:
        """The node the client is connected to now, if any."""
        return None if self._conn is None or self._conn.closed else self._conn.node_id

    @property
    def leader(self) -> str | None:
        """The leader as last reported by the node the client talks to."""
        return None if self._conn is None else self._conn.leader

    def _candidates(self, avoid: set[str]) -> list[str]:
        leader = self.leader
        first = [self._members[leader]] if leader in self._members else []
        rest = list(dict.fromkeys([*self._members.values(), *self.endpoints]))
        self._rng.shuffle(rest)
        ordered = list(dict.fromkeys(first + rest))
        return [a for a in ordered if a not in avoid] + [a for a in ordered if a in avoid]

    async def _connection(self, deadline: float) -> Connection:
        conn = self._conn
        if conn is not None and not conn.closed and not self._should_move(conn):
            return conn
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and not conn.closed:
                if not self._should_move(conn):
                    return conn
                target = self._members[conn.leader or ""]
                moved = await self._try_open(target, deadline)
                if moved is not None:
                    self._retire(conn)
                    return self._adopt(moved)
                self._move_retry_at[target] = trio.current_time() + MOVE_BACKOFF
                return conn
            errors: list[str] = []
            avoid = {conn.address} if conn is not None else set()
            for address in self._candidates(avoid):
                if trio.current_time() >= deadline:
                    break
                try:
                    new = await self._open(address, deadline)
                except UnivrsError as exc:
                    errors.append(str(exc))
                    continue
                return self._adopt(new)
            lost = ConnectionLost(
                "no univrs node reachable ("
                + ("; ".join(errors) or f"tried {', '.join(self._candidates(set()))}")
                + ")"
            )
            lost.outcome_unknown = False  # nothing was sent anywhere
            raise lost

    def _should_move(self, conn: Connection) -> bool:
        if self.stay:
            return False
        leader = conn.leader
        if leader is None or leader == conn.node_id or leader not in self._members:
            return False
        # After a failed attempt, stay where we are for a while (followers forward anyway).
        return trio.current_time() >= self._move_retry_at.get(self._members[leader], 0.0)

    async def _open(self, address: str, deadline: float) -> Connection:
        timeout = max(0.001, min(self.connect_timeout, deadline - trio.current_time()))
        address, secure = split_url(address)
        context = ssl_for(secure, self.ssl_context)
        return await Connection.open(
            self.nursery, address, timeout=timeout, ssl_context=context, token=self.token
        )

    async def _try_open(self, address: str, deadline: float) -> Connection | None:
        try:
            return await self._open(address, deadline)
        except UnivrsError:
            return None

    def _adopt(self, conn: Connection) -> Connection:
        for member, info in conn.hello.members.items():
            if info.get("client"):
                self._members[member] = info["client"]  # type: ignore[assignment]
        self._conn = conn
        return conn

    def _retire(self, conn: Connection) -> None:
        if conn.in_flight == 0:
            conn.close()
        else:
            self._retired.append(conn)

    def _sweep(self) -> None:
        for conn in list(self._retired):
            if conn.in_flight == 0 or conn.closed:
                conn.close()
                self._retired.remove(conn)

    # ---------------------------------------------------------------- calls

    async def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        key: tuple[str, int] | None = None,
        consistency: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
        answer: str | None = None,
    ) -> Any:
        """Run one operation; returns its result document. ``retry`` (default: reads and keyed
        writes) allows retrying after an outcome-unknown failure. ``answer``: "minimal" or
        "full" for a write (default: the client's ``answer``; see ``call_with_meta``)."""
        now = self._clock.current_time()
        deadline = now + (self.timeout if timeout is None else timeout)
        result, _ = await self._call(
            op, {} if args is None else args, key, consistency, deadline, now, retry, answer
        )
        return result

    async def call_with_meta(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        key: tuple[str, int] | None = None,
        consistency: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
        answer: str | None = None,
    ) -> tuple[Any, dict[str, Any] | None]:
        """Like ``call``, also returning the read meta (local reads: how stale; writes: the
        ``index`` they applied at). ``answer`` "minimal": a write of ``OBJECT_WRITES``
        answers ``{"id", "version"}`` (univrs/client/protocol.py; any other write answers
        as it always does); "minimal" on a read, or another value, is ``InvalidArgument``."""
        now = self._clock.current_time()
        deadline = now + (self.timeout if timeout is None else timeout)
        return await self._call(
            op, {} if args is None else args, key, consistency, deadline, now, retry, answer
        )

    async def _call(
        self,
        op: str,
        args: dict[str, Any],
        key: tuple[str, int] | None,
        consistency: str | None,
        deadline: float,
        now: float,
        retry: bool | None,
        answer: str | None,
    ) -> tuple[Any, dict[str, Any] | None]:
        """``call_with_meta``'s body until ``deadline`` (``now``: when it was computed; read
        again after a wait). ``write`` runs it straight (s19-client: a level fewer per write)."""
        is_write = _IS_WRITE.get(op)
        if is_write is None:
            declared = operation(op)
            is_write = declared is None or declared.is_write
            if declared is not None:
                _IS_WRITE[op] = is_write
        if answer is None:
            answer = self.answer if is_write and op in OBJECT_WRITES else None
        elif answer not in ANSWERS or not (is_write or answer == "full"):
            raise InvalidArgument(
                ANSWER_MESSAGE if answer not in ANSWERS else MINIMAL_READ_MESSAGE, field="answer"
            )
        if answer == "full" or op not in OBJECT_WRITES:
            answer = None  # the default: nothing sent
        safe = retry if retry is not None else (key is not None or not is_write)
        clock = self._clock
        pause = 0.01
        attempt = 0
        # Sticky, writes only: an attempt may have applied the command. From then on a failure
        # of a later attempt that merely says *it* did not apply (unavailable, not-leader,
        # session-expired ...) must not reach the caller as "nothing applied".
        maybe_applied = False
        while True:
            if attempt:
                self.retries += 1
            attempt += 1
            conn: Connection | None = None
            try:
                conn = self._conn
                if conn is None or conn.closed or self._should_move(conn):
                    conn = await self._connection(deadline)
                    now = clock.current_time()
                elif attempt > 1:
                    now = clock.current_time()
                remaining = deadline - now
                # The deadline kept by the connection's timer, not a cancel scope per call
                # (``Timeout`` at the deadline: the outcome is unknown).
                return await conn.request(
                    op,
                    args,
                    key=key,
                    consistency=consistency,
                    timeout_ms=max(1, int(remaining * 1000)),
                    deadline=deadline,
                    answer=answer,
                )
            except Unavailable as exc:
                # Unknown outcomes (timeout, outcome-unknown, a connection lost after sending)
                # are retried only when safe (reads, keyed writes); the rest (unavailable,
                # not-leader, not sent) certainly did not apply and are always retried.
                if isinstance(exc, ConnectionLost) and conn is not None and conn is self._conn:
                    conn.close()
                if exc.outcome_unknown:
                    if not safe:
                        raise
                    maybe_applied = maybe_applied or is_write
                elif (
                    self.fail_fast
                    and not maybe_applied
                    and (conn is None or not isinstance(exc, ConnectionLost))
                ):
                    raise  # unreachable, or answered "unavailable": certainly not applied
                elif not isinstance(exc, ConnectionLost):
                    pause = max(pause, min(exc.retry_after, MAX_PAUSE) / 2)
                error: Unavailable = exc
            except (
                SessionExpired,
                StaleSequence,
                NoSpace,
                Unauthenticated,
                PermissionDenied,
            ) as exc:
                # (The quota's and the rights' refusals: made before a retry is proposed.)
                if maybe_applied:  # the retry did not apply; an earlier attempt may have
                    raise _unknown(op, exc) from exc
                raise
            finally:
                if self._retired:
                    self._sweep()
            now = clock.current_time()
            if now >= deadline:
                if maybe_applied and not error.outcome_unknown:
                    raise _unknown(op, error) from error
                raise error
            log.debug("retrying %s after %s", op, error)
            await trio.sleep(min(pause, deadline - now))
            pause = min(pause * 2, MAX_PAUSE)

    async def watch(
        self,
        kinds: list[str] | tuple[str, ...] | str = (),
        *,
        from_revision: int | None = None,
        wait: float = WATCH_WAIT,
        limit: int | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The change events of ``kinds`` (``workloads``, ``instances``, ``nodes``; default
        all) from ``from_revision`` on (default: from now), in revision order, forever::

            async for event in client.watch(["workloads"], from_revision=page["revision"] + 1):
                ...

        Each event is ``{"revision", "type", "kind", "id", "object", "prev"}``. A member that
        fails is replaced by another, resuming after the last revision seen. Raises
        ``Compacted`` when the revision is no longer kept: list again and watch from the
        list's ``revision`` + 1. While no member answers it keeps trying (cancel to stop). To
        leave the loop early, iterate inside ``contextlib.aclosing(client.watch(...))``."""
        names = kinds if isinstance(kinds, str) else ",".join(kinds)
        start = from_revision
        wait_ms = max(0, int(wait * 1000))
        while True:
            args: dict[str, Any] = {"wait_ms": wait_ms}
            if names:
                args["kinds"] = names
            if start is not None:
                args["from_revision"] = start
            if limit is not None:
                args["limit"] = limit
            try:
                page = await self.call("events.poll", args, timeout=wait + self.timeout)
            except PayloadTooLarge:
                # Events of big objects (a workload may hold about 1 MB) past the fast
                # protocol's frame (s15-review B1): ask for half as many, down to one.
                if limit == 1:
                    raise
                limit = max(1, (limit or DEFAULT_EVENTS) // 2)
                continue
            except Unavailable as exc:
                log.info("watch: no member answered (%s); trying again", exc.code)
                await trio.sleep(MAX_PAUSE)
                continue
            except Compacted as exc:
                # This member may have restarted or installed a snapshot since; another one
                # may still keep the revision (their histories differ, their events do not).
                page = await self._poll_elsewhere({**args, "wait_ms": 0}, exc)
            for event in page["events"]:
                yield event
            start = page["revision"] + 1

    async def _poll_elsewhere(self, args: dict[str, Any], compacted: Compacted) -> Any:
        """``events.poll`` on each other known member until one still keeps the revision;
        re-raises ``compacted`` when none does."""
        here = self._conn.address if self._conn is not None else None
        for address in self._candidates({here} if here else set()):
            if address == here:
                continue
            deadline = trio.current_time() + self.timeout
            conn = await self._try_open(address, deadline)
            if conn is None:
                continue
            try:
                with trio.move_on_at(deadline):
                    page, _ = await conn.request(
                        "events.poll", args, timeout_ms=int(self.timeout * 1000)
                    )
                    return page
            except UnivrsError:
                continue
            finally:
                conn.close()
        raise compacted

    async def write(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        answer: str | None = None,
    ) -> Any:
        """Run a write exactly once, with an idempotency key from one of the client's sessions
        (``univrs.client.sessions.SessionPool``). ``answer``: as ``call_with_meta``'s."""
        clock = self._clock
        deadline = clock.current_time() + (self.timeout if timeout is None else timeout)
        plain = {} if args is None else args

        async def keyed(key: tuple[str, int]) -> Any:
            # ``call``'s body: await levels fewer in every write's chain (rounds 17, 19).
            now = clock.current_time()
            at = deadline if deadline - now >= 0.001 else now + 0.001  # one try at least
            result, _ = await self._call(op, plain, key, None, at, now, None, answer)
            return result

        return await self._sessions.write(keyed, deadline)

    async def _open_session(self, deadline: float) -> str:
        timeout = max(0.001, deadline - trio.current_time())
        opened = await self.call("session.open", {}, timeout=timeout, retry=True)
        return str(opened["client_id"])

    async def adopt_session(self, client_id: str, next_seq: int) -> None:
        """Write with an existing session (opened earlier, by this or another process) from
        ``next_seq`` on; the caller guarantees nobody else uses those numbers."""
        self._sessions.adopt(client_id, next_seq)

    async def detach_sessions(self) -> list[tuple[str, int]]:
        """Hand the sessions over (client id, next sequence number), newest last: the client
        forgets them and will not close them."""
        return self._sessions.detach()

    async def aclose(self) -> None:
        """Close the sessions (best effort, briefly) and the connections."""
        sessions = self._sessions.detach()
        with trio.move_on_after(1.0):
            for client_id, _ in sessions:
                try:
                    await self.call("session.close", {"client_id": client_id}, timeout=0.5)
                except UnivrsError:
                    break
        for conn in [self._conn, *self._retired]:
            if conn is not None:
                conn.close()


_IS_WRITE: dict[str, bool] = {}  # a declared op -> whether it is a write, as called


def _unknown(op: str, last: UnivrsError) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"{op}: an earlier attempt may have applied, and the last one failed without telling "
        f"({last.code}: {last.message}); the outcome is unknown"
    )


@asynccontextmanager
async def open_client(
    endpoints: list[str] | str | None = None,
    *,
    api: list[str] | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    fail_fast: bool = False,
    stay: bool = False,
    token: str | None = None,
    answer: str = "full",
) -> AsyncIterator[Client]:
    """A client for the cluster reachable at ``endpoints`` (fast-protocol ``host:port``
    addresses: the nodes' raft listeners) or, failing those, at ``api`` (REST addresses).
    ``ssl_context``: TLS for every connection (see the module docstring). ``fail_fast``,
    ``stay``: see ``Client``; with ``stay``, discovery keeps only the address of the ``api``
    node that answered. ``token``: the API token's secret, for a cluster with auth on
    (docs/security.md). ``answer``: how writes answer by default, "full" or "minimal"
    (``Client.answer``)."""
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e]
    if isinstance(api, str):
        api = [a for a in api.split(",") if a]
    if ssl_context is None and any(split_url(a)[1] for a in [*(endpoints or ()), *(api or ())]):
        ssl_context = ssl.create_default_context()  # https:// given: every member over TLS
    if not endpoints:
        if not api:
            raise ValueError("open_client needs endpoints or api addresses")
        endpoints = await discover(api, timeout=connect_timeout, ssl_context=ssl_context, own=stay)
    async with trio.open_nursery() as nursery:
        client = Client(
            endpoints=list(endpoints),
            nursery=nursery,
            timeout=timeout,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
            fail_fast=fail_fast,
            stay=stay,
            token=token,
            answer=answer,
        )
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            nursery.cancel_scope.cancel()
