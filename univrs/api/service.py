"""``ApiService``: the operations of the REST API and the fast client protocol, by name, over
the node's ``RaftStateStore`` (univrs/api/store.py).

Theory of operation. ``execute(name, args, ...)`` is the one entry point of both the REST API
and the fast protocol (and of the node's MCP endpoint, univrs/api/mcp.py): it checks the
operation's arguments and builds its command (``univrs.api.ops``), then has the store run the
write (``RaftStateStore.submit``, through the leader) or reads the state at the requested
consistency (``read_at``), and renders the result document. The write and read rules, retries
and deadlines are the store's (univrs/api/store.py). ``execute_many`` is the same for the
requests of one fast-protocol frame, paid per frame where it can be (one identification per
caller, one hand-off of the writes to the runtime, one ReadIndex wait for the reads), with
every answer, error and rule still per request (docs/api.md, "Per frame, not per request").
A frame's reads are rendered and answered by the layer ``ApiService`` extends, ``FrameReads``
(univrs/api/frame_reads.py).

Callers. ``execute`` first authorizes the caller for the operation's role
(``univrs.api.auth``: 401/403 when auth is on), rate-limits ``session.open`` per caller and
stamps the session with the caller's identity as its owner (``univrs.api.limits``,
``univrs.sm.sessions``). A forwarded request carries the caller's token and address, and the
leader checks them again. On the leader, a write that would not free space is refused with
``no-space`` while the storage quota's NOSPACE alarm is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs.api.answers import WorkloadAnswers
from univrs.api.auth import ANONYMOUS, Caller, Identity
from univrs.api.batcher import FrameWait
from univrs.api.budget import AnswerBudget, AnswerPool
from univrs.api.building import WriteBuilder
from univrs.api.frame_reads import FrameReads, Job
from univrs.api.limits import ConnectionLimiter, Quota
from univrs.api.metrics import ApiMetrics
from univrs.api.opargs import minimal_answer
from univrs.api.ops import HANDLERS, MAX_LIMIT, Handler, handler
from univrs.api.rendered import RenderCache
from univrs.api.store import MAX_TIMEOUT, RaftStateStore, Submission, Write, WriteAnswer
from univrs.api.watch import poll_events
from univrs.client.protocol import CONSISTENCIES, CONSISTENCY_MESSAGE, LEASE_OFF_MESSAGE
from univrs.errors import InvalidArgument, Unauthenticated, UnivrsError
from univrs.metrics import Counter
from univrs.service.declare import PUBLIC

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

__all__ = ["MAX_LIMIT", "WRITE_OPS", "ApiService", "Job"]

# The operations ``start_writes`` takes (the fast protocol splits a frame's writes off: fast.py).
WRITE_OPS = frozenset(name for name, op in HANDLERS.items() if op.is_write)


@attrs.define(eq=False)
class ApiService(FrameReads):
    """Runs the operations of the REST API and the fast protocol, by name, over a
    ``RaftStateStore``: it checks the arguments, builds the command, renders the result and
    counts; the store executes (see the module docstring)."""

    store: RaftStateStore
    _rendered: RenderCache = attrs.field(init=False, factory=RenderCache)
    _answers: WorkloadAnswers = attrs.field(init=False, factory=WorkloadAnswers)
    # Answer bytes held by all fast-protocol connections (univrs/api/budget.py).
    answer_pool: AnswerPool = attrs.field(init=False, factory=AnswerPool)
    # The request counters' label sets, looked up once (a lookup costs more than the increment).
    _counters: dict[tuple[str, str], Counter] = attrs.field(init=False, factory=dict)

    @property
    def node(self) -> NodeHandle:
        return self.store.node

    @property
    def metrics(self) -> ApiMetrics | None:
        return self.store.metrics

    @property
    def quota(self) -> Quota | None:
        return self.store.quota

    @property
    def fast_connections(self) -> ConnectionLimiter:
        return self.store.fast_connections

    async def execute(
        self,
        name: str,
        args: dict[str, Any],
        *,
        key: tuple[str, int] | None = None,
        consistency: str | None = None,
        timeout: float | None = None,
        hops: int = 0,
        caller: Caller = ANONYMOUS,
        encoded: bool = False,
        answer: str | None = None,
    ) -> tuple[Any, dict[str, Any] | None]:
        """Run operation ``name`` for ``caller``: (result document, read meta or None).
        Raises UnivrsError (``unauthenticated`` and ``permission-denied`` first).
        ``encoded`` (the fast protocol): parts of the result may be ``protocol.Encoded``
        (a watch poll's events). ``answer``: "minimal" or "full" (``opargs.minimal_answer``)."""
        op = handler(name)
        start = trio.current_time()
        limit = self.store.timeout if timeout is None else min(timeout, MAX_TIMEOUT)
        deadline = start + max(limit, 0.001)
        outcome = "ok"
        metrics = self.store.metrics
        try:
            store = self.store
            identity = await store.authority.authorize_fresh(caller, op.required_role, op.name)
            minimal = minimal_answer(answer, op.name, op.is_write)
            if op.watch:  # served from this node's event history, at any consistency
                return await poll_events(self.node, args, deadline, encoded=encoded), None
            if op.is_write:
                if op.name == "session.open":
                    store.session_opens.take(identity.key, "session opens")
                return await self._write(
                    op, args, key, deadline, hops, caller, identity.key, minimal
                )
            assert op.read is not None
            how = consistency or "linearizable"
            state = await self.store.read_at(how, deadline)
            return op.read(args, state), self.store.meta(how)
        except UnivrsError as exc:
            outcome = exc.code
            raise
        finally:
            if metrics is not None:
                metrics.requests.inc(1, op.name, outcome)
            if metrics is not None and not op.watch:  # a long poll is not a read's latency
                histogram = metrics.write_seconds if op.is_write else metrics.read_seconds
                histogram.observe(trio.current_time() - start)

    async def execute_many(
        self,
        jobs: Sequence[Job],
        answered: Callable[[Sequence[Job]], None],
        *,
        encoded: bool = False,
        budget: AnswerBudget | None = None,
    ) -> None:
        """Run the requests of one client frame together: each ``Job`` gets the answer
        ``execute`` would give it (``result`` and ``meta``, or ``error``), and ``answered`` is
        called with the jobs answered so far, as groups complete (a frame's reads, the first
        attempt of its writes, each write that needed more).

        Paid per frame, not per request: the caller is identified once per distinct caller
        (then permitted per operation's role), the writes are built in one pass and proposed
        together (``RaftStateStore.submit_many``: one hand-off to the runtime), the
        linearizable reads wait for one ReadIndex confirmation and are rendered with one
        ``meta`` per consistency (a one-object read's document once per state revision, shared
        by every read of it: univrs/api/rendered.py), and the request counters are bumped once
        per (operation, outcome). Every rule stays per request: an error answers its own
        request only. Watch polls (long polls) must not be given here (``execute`` them one
        each). ``encoded`` (the fast protocol): a workload write's result is its document
        already encoded (``protocol.Encoded``, the same bytes: univrs/api/answers.py), and so
        is every read's. ``budget`` (the fast protocol's connection, univrs/api/budget.py): the
        reads are rendered only while it has room, answered in groups, and wait for room
        between them (the answered jobs' bytes are charged by ``answered``)."""
        start = trio.current_time()
        identified = await self._identify_callers(jobs)
        writes, submissions, reads = self._check_frame(jobs, identified, start, answered, encoded)
        if writes and reads:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writes, writes, submissions, start, answered)
                nursery.start_soon(self._reads, reads, start, answered, encoded, budget)
        elif writes:
            await self._writes(writes, submissions, start, answered)
        elif reads:
            await self._reads(reads, start, answered, encoded, budget)

    async def _identify_callers(
        self, jobs: Sequence[Job]
    ) -> dict[Caller, Identity | Unauthenticated]:
        """Each distinct caller of a frame identified once (its identity, or the
        ``Unauthenticated`` to answer its requests that need a token with). As
        ``authorize_fresh`` does for one request: if a caller's well-formed token is unknown
        here and one of its requests needs a token, this node catches up with its leader
        once for the whole frame (within the bounds of ``Authority.catch_up_for``) and looks
        those callers up again."""
        authority = self.store.authority
        identified, known = self._identify_each(jobs)
        if known:
            return identified  # every caller known (one check per caller, not per request)
        unknown = {
            job.caller
            for job in jobs
            if isinstance(identified[job.caller], Unauthenticated)
            and _needs_token(job.name)
            and authority.may_learn(job.caller)
        }
        if unknown:
            refused = await authority.catch_up_for(unknown)
            for caller in unknown:
                try:
                    identified[caller] = (
                        refused[caller] if caller in refused else (authority.identify(caller))
                    )
                except Unauthenticated as exc:
                    identified[caller] = exc
        return identified

    def start_writes(
        self,
        jobs: Sequence[Job],
        answered: Callable[[Sequence[Job]], None],
        spawn: Callable[..., None],
    ) -> tuple[bool, FrameWait | None]:
        """``execute_many`` for a frame of writes on the leader, without awaiting (for the
        fast protocol's reader: no task per frame). (False, None): it cannot (not the leader,
        not only known writes, a caller not identified here); else (True, what is left to
        wait for, ``RaftStateStore.propose_now``: None if nothing). ``execute_many``'s checks
        and answers; ``spawn`` starts a write that needs another attempt."""
        store = self.store
        if not store.leads():
            return False, None
        for job in jobs:
            op = HANDLERS.get(job.name)
            if op is None or not op.is_write:
                return False, None
            job.op = op
        identified, known = self._identify_each(jobs)
        if not known:
            return False, None  # execute_many may catch up with the leader first
        start = trio.current_time()
        writes, submissions, _ = self._check_frame(jobs, identified, start, answered, True)
        if not writes:
            return True, None
        done = self._writes_answered(writes, start, answered)
        # Every submission's key was checked by ``WriteBuilder.build`` (``check_key``).
        return True, store.propose_now(submissions, done, spawn, keys_checked=True)

    def _identify_each(
        self, jobs: Sequence[Job]
    ) -> tuple[dict[Caller, Identity | Unauthenticated], bool]:
        """Each distinct caller of a frame identified once, here (its identity, or the
        ``Unauthenticated`` it raised), and whether every one of them was known."""
        identify = self.store.authority.identify
        identified: dict[Caller, Identity | Unauthenticated] = {}
        known = True
        last = None  # the previous job's caller, identified: a frame's requests share one
        for job in jobs:
            caller = job.caller
            if caller is last or caller in identified:
                continue
            try:
                identified[caller] = identify(caller)
            except Unauthenticated as exc:
                identified[caller] = exc
                known = False
            last = caller
        return identified, known

    def _check_frame(
        self,
        jobs: Sequence[Job],
        identified: dict[Caller, Identity | Unauthenticated],
        start: float,
        answered: Callable[[Sequence[Job]], None],
        encoded: bool,
    ) -> tuple[list[Job], list[Submission], list[Job]]:
        """The checks of ``execute_many`` and ``start_writes``, per job of a frame: its
        operation looked up (unless ``start_writes`` did), its deadline set, its caller
        permitted; a write's arguments checked and the write built (its ``Submission``), a
        read's consistency checked. (The writes, their submissions, the reads); a job that
        fails a check is answered here (counted and handed to ``answered``).

        A frame as a vector (s18-ingress): what its jobs share is worked out once, not per
        job: the deadline of each distinct timeout, the permission of each run of jobs of
        one caller and operation (``permit``'s answer depends on nothing else), the state
        the session-owner checks read, and per operation and caller what ``_build_write``
        decides from them alone (``WriteBuilder``, univrs/api/building.py). Every check still
        runs for every job (its arguments, its key, its session's owner); a job that fails
        one is answered alone, and a permission refused is asked again for the next job."""
        store = self.store
        authority = store.authority
        writes: list[Job] = []
        submissions: list[Submission] = []
        reads: list[Job] = []
        failed: list[Job] = []
        timeout = store.timeout
        deadlines: dict[float | None, float] = {}
        permitted: tuple[Caller, Handler, Identity] | None = None  # the last permit given
        builders: dict[tuple[int, int, str], WriteBuilder] = {}  # the jobs hold op, caller
        sm = self.node.runtime.sm
        new_submission = Submission
        for job in jobs:
            try:
                op = job.op
                if op is None:
                    op = job.op = handler(job.name)
                deadline = deadlines.get(job.timeout)
                if deadline is None:
                    # ``min(job.timeout, MAX_TIMEOUT)`` and ``max(limit, 0.001)`` as their
                    # conditional expressions (the same value: each returns its first
                    # argument unless the second is strictly beyond it); most jobs of a frame
                    # have a timeout of their own (a client's time left).
                    limit = job.timeout
                    if limit is None:
                        limit = timeout
                    elif limit > MAX_TIMEOUT:
                        limit = MAX_TIMEOUT
                    deadline = deadlines[job.timeout] = start + (0.001 if limit < 0.001 else limit)
                job.deadline = deadline
                caller = job.caller
                if permitted is not None and permitted[0] is caller and permitted[1] is op:
                    identity = permitted[2]
                else:
                    identity = authority.permit(
                        caller, identified[caller], op.required_role, op.name
                    )
                    permitted = (caller, op, identity)
                if op.is_write:  # (a watch poll never is)
                    if op.name == "session.open":
                        store.session_opens.take(identity.key, "session opens")
                    # (By identity: an attrs class hashes field by field, in Python.)
                    ident = (id(op), id(caller), identity.key)
                    builder = builders.get(ident)
                    if builder is None:
                        builder = builders[ident] = WriteBuilder(
                            self.node, self._answers, op, caller, identity.key, encoded, sm
                        )
                    write = builder.build(
                        job.args, job.key, minimal_answer(job.answer, op.name, True)
                    )
                    submissions.append(new_submission(write, job.key, deadline, job.hops))
                    writes.append(job)
                elif op.watch:
                    raise AssertionError("execute_many got a watch poll: execute it alone")
                else:
                    minimal_answer(job.answer, op.name, False)  # "minimal": refused
                    how = job.consistency or "linearizable"
                    if how not in CONSISTENCIES:
                        raise InvalidArgument(CONSISTENCY_MESSAGE, field="consistency")
                    if how == "lease" and not self.node.runtime.core.config.read_lease:
                        raise InvalidArgument(LEASE_OFF_MESSAGE, field="consistency")
                    job.consistency = how
                    reads.append(job)
            except Exception as exc:  # this request's answer (or a bug: reported upstream)
                job.error = exc
                failed.append(job)
        if failed:
            self._count(failed, start)
            answered(failed)
        return writes, submissions, reads

    def _writes_answered(
        self, jobs: list[Job], start: float, answered: Callable[[Sequence[Job]], None]
    ) -> Callable[[Sequence[tuple[int, WriteAnswer]]], None]:
        """``submit_many``'s report for ``jobs``: each answer into its job, counted, and the
        jobs handed to ``answered``."""

        def done(group: Sequence[tuple[int, WriteAnswer]]) -> None:
            finished = []
            for i, answer in group:
                job = jobs[i]
                if isinstance(answer, Exception):
                    job.error = answer
                else:
                    job.result, job.meta = answer
                finished.append(job)
            self._count(finished, start)
            answered(finished)

        return done

    async def _writes(
        self,
        jobs: list[Job],
        submissions: list[Submission],
        start: float,
        answered: Callable[[Sequence[Job]], None],
    ) -> None:
        await self.store.submit_many(submissions, self._writes_answered(jobs, start, answered))

    def _count(self, jobs: Sequence[Job], start: float) -> None:
        """The request metrics of answered jobs: one counter increment per (operation,
        outcome), one latency observation per request."""
        metrics = self.store.metrics
        if metrics is None:
            return
        counts: dict[tuple[str, str], int] = {}
        writes = reads = 0

        def add(op: Handler, outcome: str, n: int) -> None:
            nonlocal writes, reads
            counts[op.name, outcome] = counts.get((op.name, outcome), 0) + n
            if op.is_write:
                writes += n
            else:
                reads += n

        # A run of jobs of one operation answered "ok" (a frame's writes, usually all of
        # them) is counted by its length, added when it ends: the same counts, in the same
        # order of first appearance (session 30).
        run_op: Handler | None = None
        run = 0
        for job in jobs:
            op = job.op
            if op is None:  # an unknown operation: not a label (execute counts none)
                continue
            error = job.error
            if error is None and op is run_op:
                run += 1
                continue
            if run_op is not None:
                add(run_op, "ok", run)
                run_op = None
            if error is None:
                run_op, run = op, 1
            else:
                add(op, getattr(error, "code", "internal"), 1)
        if run_op is not None:
            add(run_op, "ok", run)
        elapsed = trio.current_time() - start  # the same for every request answered now
        if writes:
            metrics.write_seconds.observe_many(elapsed, writes)
        if reads:
            metrics.read_seconds.observe_many(elapsed, reads)
        counters = self._counters
        for labels, n in counts.items():
            counter = counters.get(labels)
            if counter is None:
                counter = counters[labels] = metrics.requests.labels(*labels)
            counter.inc(n)

    def _build_write(
        self,
        op: Handler,
        args: dict[str, Any],
        key: tuple[str, int] | None,
        caller: Caller,
        owner: str,
        encoded: bool = False,
        minimal: bool = False,
    ) -> Write:
        """Check a write's arguments and build it (its command, envelope and renderer;
        ``encoded``: a workload's document rendered as ``protocol.Encoded``, for the fast
        protocol; ``minimal``: ``ops.render_minimal``'s answer, ``{"id", "version"}``)."""
        node = self.node
        return WriteBuilder(node, self._answers, op, caller, owner, encoded, node.runtime.sm).build(
            args, key, minimal
        )

    async def _write(
        self,
        op: Handler,
        args: dict[str, Any],
        key: tuple[str, int] | None,
        deadline: float,
        hops: int,
        caller: Caller = ANONYMOUS,
        owner: str = "",
        minimal: bool = False,
    ) -> tuple[Any, dict[str, Any]]:
        """(result, {"index": the log index the write was applied at})."""
        write = self._build_write(op, args, key, caller, owner, minimal=minimal)
        return await self.store.submit(write, key, deadline, hops)


def _needs_token(name: str) -> bool:
    """Does operation ``name`` (if it exists) need a valid token when auth is on?"""
    op = HANDLERS.get(name)
    return op is not None and op.required_role != PUBLIC
