"""The cluster state on a node: ``RaftStateStore``, writes through the leader and reads at a
chosen consistency, on any node (``ApiService``, univrs/api/service.py, is the REST and
fast-protocol adapter over it; ``univrs.api.forward`` carries a follower's writes).

Theory of operation. ``RaftStateStore`` is the node's one ``StateStore`` (univrs/sm/store.py):
the typed methods (``create_workload``, ``scale_workload`` ...) that the reconciler and
in-process callers use, and ``submit``/``read_at``, which ``ApiService.execute(name, args,
...)`` (the one entry point of both the REST API and the fast client protocol) calls after
checking the operation's arguments and building its command. It works on any node, whatever
its role; every request has a deadline. A ``StateStore`` write on a follower travels to the
leader as the operation whose ``build`` gives the same command back
(``univrs.api.forward.request_of``) and returns once this node applied it too (so a local read
reflects it); a command fenced by a term (the reconciler's) is never forwarded.

Callers. ``execute`` first authorizes the caller for the operation's role
(``univrs.api.auth``: 401/403 when auth is on), rate-limits ``session.open`` per caller and
stamps the session with the caller's identity as its owner (``univrs.api.limits``,
``univrs.sm.sessions``). A forwarded request carries the caller's token and address, and the
leader checks them again. On the leader, a write that would not free space is refused with
``no-space`` while the storage quota's NOSPACE alarm is raised.

Writes. The operation's ``build`` checks the arguments and assigns ids (uuid4 hex) *here, on
the serving node, before proposing*. Then, until the deadline:

* on the leader: propose the command (an ``Envelope`` carrying the idempotency key, if any)
  to the runtime (which batches concurrent proposals into one log append) and wait until it
  is applied here; render the result from this node's state;
* on a follower that knows the leader: forward the already-built request over the fast
  protocol to the leader (``Forwarder``: one shared connection, many requests in flight) with
  ``hops=1``; a node never forwards a forwarded request again, it answers ``not-leader``;
* with no known leader: wait for one for at most ``leader_wait`` seconds, then answer
  ``unavailable`` (503, Retry-After), never hang.

The retry and outcome rules of the attempts are univrs/api/attempts.py's (``WriteLoop``).

``submit_many`` runs a fast-protocol frame's writes (``FrameWrites``, univrs/api/batcher.py):
on the leader their first attempts go to the runtime in one hand-off
(``RaftRuntime.propose_together``) and are waited for together; on a follower they go to the
leader as one hop (``Forwarder.call_many``: one frame); a write whose attempt needs another
continues alone on ``submit``'s loop (``attempt_write``) with the attempts made so far, so the
rules above hold per write. The types and outcome messages both share are
univrs/api/writes.py's.

The result of a write is the object as it is on the executing node right after the write
applied (a later write may already show), with ``meta["index"]``: the log index the write
itself was applied at (for a retried key: the first application's).

Reads. ``linearizable`` (the default) waits for a ReadIndex confirmation (dissertation 6.4;
concurrent reads share one, ``ReadCoalescer``; a follower's read is confirmed by the leader and
served here); ``lease`` (only with ``[raft] read_lease``, refused otherwise) is answered by a
leader that holds its read lease without a heartbeat round (docs/performance.md, "Lease
reads": it is linearizable only while clocks drift less than ``lease_drift_ms``), on a
follower or without a lease it is a ``linearizable`` read; ``local`` reads this replica's
applied state at once. The result carries
``meta``: the node, its applied and commit index, how many committed entries it has not
applied yet, and how long ago it last heard from the leader (``LeaderContact``): what the
leader committed since then may be missing too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs import errors as base
from univrs.api.attempts import LEADER_WAIT, WriteLoop
from univrs.api.auth import ANONYMOUS, CATCH_UP_SECONDS, Authority, Caller
from univrs.api.batcher import FrameWait, FrameWrites
from univrs.api.coalescer import ReadCoalescer
from univrs.api.contact import LeaderContact
from univrs.api.forward import Forwarder, request_of
from univrs.api.limits import ConnectionLimiter, Quota, RateLimiter
from univrs.api.metrics import ApiMetrics
from univrs.api.opargs import check_key
from univrs.api.ops import handler
from univrs.api.writes import (
    NO_LEADER_MESSAGE,
    Submission,
    Write,
    WriteAnswer,
    after_unknown,
)
from univrs.api.writes import (
    NODE_ITSELF as _NODE_ITSELF,
)
from univrs.client.protocol import CONSISTENCY_MESSAGE, LEASE_OFF_MESSAGE, MAX_HOPS
from univrs.errors import (
    InvalidArgument,
    Timeout,
    Unavailable,
    UnivrsError,
)
from univrs.raft.ready import Role
from univrs.runtime.proposals import WriteAttempts
from univrs.sm.commands import (
    Command,
    CreateInstance,
    CreateWorkload,
    Envelope,
    OpenSession,
    RegisterNode,
)
from univrs.sm.events import Event, ObjectKind
from univrs.sm.responses import Created, Failure, Response, Success
from univrs.sm.state import ClusterStateMachine
from univrs.sm.store import ReadConsistency, StateStore

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.api")

DEFAULT_TIMEOUT = 10.0  # seconds a request may take, unless it asks for less
MAX_TIMEOUT = 60.0
POLL_LIMIT = 1000  # events a watch poll renders at least (whole revisions) once under way
FIRST_POLL_LIMIT = 1  # ... and on its first poll (RaftStateStore.watch)
__all__ = [
    "CallerStateStore",
    "LeaderContact",
    "RaftStateStore",
    "Submission",
    "Write",
    "WriteAnswer",
]


@attrs.define(eq=False)
class RaftStateStore(WriteLoop, StateStore):
    """The cluster state on this node, whichever its role: the ``StateStore`` that the REST
    API and the fast protocol (through ``ApiService``), the reconciler and in-process callers
    use (see the module docstring for the write and read rules)."""

    node: NodeHandle
    forwarder: Forwarder
    reads: ReadCoalescer = attrs.field(init=False)
    lease_reads: ReadCoalescer = attrs.field(init=False)  # the same for lease reads
    contact: LeaderContact = attrs.field(init=False)
    _frames: FrameWrites = attrs.field(init=False)
    metrics: ApiMetrics | None = attrs.field(init=False, default=None)
    timeout: float = DEFAULT_TIMEOUT
    leader_wait: float = LEADER_WAIT
    authority: Authority = attrs.field(init=False)
    session_opens: RateLimiter = attrs.field(init=False)
    quota: Quota | None = attrs.field(init=False, default=None)
    fast_connections: ConnectionLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        config = self.node.config
        # A token this node does not know yet: catch up with the leader as a linearizable read
        # does (waiting for a leader, sharing ReadIndex rounds), then look again.
        self.authority = Authority(
            self.node,
            catch_up=lambda: self._read_barrier(trio.current_time() + CATCH_UP_SECONDS),
        )
        self.fast_connections = ConnectionLimiter(
            config.max_connections_per_address, "fast protocol"
        )
        self.session_opens = RateLimiter(
            rate=config.session_open_rate, burst=config.session_open_burst
        )
        storage = getattr(self.node, "storage", None)
        if storage is not None:
            self.quota = Quota(storage, config.quota_backend_bytes)
        runtime = self.node.runtime
        # Rounds handed to the driver without a task where the runtime offers it
        # (univrs/api/coalescer.py ``ReadCoalescer.hand_off``).
        nowait = getattr(runtime, "read_index_nowait", None)
        self.reads = ReadCoalescer(
            self.forwarder.nursery,
            runtime.read_index,
            None if nowait is None else functools.partial(nowait, lease=False),
        )
        self.lease_reads = ReadCoalescer(
            self.forwarder.nursery,
            lambda: runtime.read_index(lease=True),
            None if nowait is None else functools.partial(nowait, lease=True),
        )
        self._frames = FrameWrites(self)
        self.contact = LeaderContact(self.node)  # read when asked: no task (contact.py)
        registry = getattr(self.node.metrics, "registry", None)
        if registry is not None:
            self.metrics = ApiMetrics.register(
                registry,
                proposal_batches=lambda: self.node.runtime.statistics().proposal_batches,
                proposals=lambda: self.node.runtime.statistics().proposals,
                read_confirmations=lambda: self.reads.requests,
            )
            quota = self.quota
            if quota is not None:
                registry.gauge(
                    "univrs_storage_quota_alarm",
                    "1 while this node's NOSPACE alarm is raised (storage in use above "
                    "limits.quota_backend_bytes: writes refused), else 0.",
                    callback=lambda: [((), float(quota.alarm))],
                )
                registry.gauge(
                    "univrs_storage_quota_bytes",
                    "This node's storage quota (limits.quota_backend_bytes).",
                    callback=lambda: [((), float(quota.limit))],
                )

    # ---------------------------------------------------------------- the StateStore hooks

    def acting_for(self, caller: Caller) -> CallerStateStore:
        """This store as ``caller``: every write and read is authorized for the caller's token
        like the API's (the operation's role), and a write a follower forwards carries that
        token, which the leader checks again."""
        return CallerStateStore(store=self, caller=caller)

    async def execute(
        self, command: Command | Envelope, *, caller: Caller | None = None
    ) -> Response:
        """Apply ``command`` through the leader (proposed here, or forwarded) within
        ``timeout``; return once this node applied it, so a local read reflects it. Besides
        a ``Failure`` it may raise the product's errors (no leader, a deadline, a refusal the
        leader answered).

        ``caller`` (``acting_for``): the write is authorized here for the caller's token and
        forwarded with it. None: the node's own write (the reconciler, liveness), trusted on
        the leader; with auth on, a follower refuses to forward it (``not-leader``): the node has
        no token of its own, and forwarding never raises anyone's rights."""
        envelope = command if isinstance(command, Envelope) else Envelope(command=command)
        key = None
        if envelope.client_id is not None and envelope.seq is not None:
            key = (envelope.client_id, envelope.seq)
        deadline = trio.current_time() + self.timeout
        args: dict[str, Any] = {}
        if _fenced(envelope.command):
            op = ""  # a leader's decision is never forwarded: NotLeader elsewhere
        else:
            op, args = request_of(envelope.command)
        if caller is not None:
            role = handler(op).required_role if op else "admin"
            await self.authority.authorize_fresh(
                caller, role, op or type(envelope.command).__name__
            )
        elif self.authority.enabled and op:
            caller = _NODE_ITSELF
        result, meta = await self.submit(
            Write(envelope=envelope, op=op, args=args, caller=caller or ANONYMOUS),
            key,
            deadline,
            hops=0 if op else MAX_HOPS,
        )
        if isinstance(result, Success | Created | Failure):
            return result
        index = int(meta["index"])  # forwarded: the leader applied it at this index
        await self._applied(index, deadline)
        created = envelope.command
        if isinstance(created, OpenSession):
            return Created(id=str(result["client_id"]), version=index)
        if isinstance(created, RegisterNode):
            return Created(id=created.info.id, version=index)
        if isinstance(created, CreateWorkload | CreateInstance):
            return Created(id=created.id, version=index)
        return Success(version=index)

    async def read_state(self, consistency: ReadConsistency) -> ClusterStateMachine:
        """This node's state machine, once a read of it is ``consistency`` (a linearizable
        one is confirmed by the leader, within ``timeout``)."""
        if consistency is ReadConsistency.LINEARIZABLE:
            await self._read_barrier(trio.current_time() + self.timeout)
        return self.node.runtime.sm

    async def watch(
        self, kinds: frozenset[ObjectKind] = frozenset(ObjectKind), from_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        """The events of ``kinds`` applied on this node from ``from_revision`` on (default:
        the next one), in order, forever; ``Compacted`` when the revision is no longer kept
        here (read the state again and watch from its ``revision`` + 1).

        The first poll asks for one event (``FIRST_POLL_LIMIT``), so it renders only the
        first revision holding a change of ``kinds``; the next ones ask for 1,000. A caller
        that wants only to hear of a change (the reconciler waits for one event, then reads
        the state) has the leader render one revision per wake, not every revision applied
        meanwhile (docs/performance.md, "Round 12 (s12-cpu2)")."""
        hub = self.node.runtime.watch_hub
        start = hub.revision + 1 if from_revision is None else from_revision
        limit = FIRST_POLL_LIMIT
        with hub.watcher():
            while True:
                events, through = await hub.poll(kinds, start, limit=limit, wait=60.0)
                limit = POLL_LIMIT
                for event in events:
                    yield event
                start = through + 1

    async def _applied(self, index: int, deadline: float) -> None:
        runtime = self.node.runtime
        with trio.move_on_at(deadline) as scope:
            # Versions are revisions, not log indexes (a batch entry holds several): wait on
            # the watch history's revision (the state machine's), woken by applies only.
            await runtime.watch_hub.wait_beyond(index - 1)
        if scope.cancelled_caught:
            raise Timeout(
                f"the write applied at index {index} on the leader but not yet on this node"
            )

    # ---------------------------------------------------------------- writes

    async def submit(
        self,
        write: Write,
        key: tuple[str, int] | None,
        deadline: float,
        hops: int = 0,
    ) -> tuple[Any, dict[str, Any]]:
        """Run one write until ``deadline``: (its result, {"index": the log index it applied
        at}). See the module docstring for the retry rules."""
        check_key(key)
        attempts = WriteAttempts(keyed=key is not None)
        try:
            return await self.attempt_write(write, key, deadline, hops, attempts)
        except UnivrsError as exc:
            answer = after_unknown(exc) if attempts.refusal_is_unknown() else exc
            if answer is exc:
                raise
            raise answer from exc

    async def submit_many(
        self,
        writes: Sequence[Submission],
        answered: Callable[[Sequence[tuple[int, WriteAnswer]]], None] | None = None,
    ) -> list[WriteAnswer]:
        """Run several writes (a client frame's) at once: each one's answer, in order, as
        ``submit`` would give it ((result, meta) or the exception it would raise); on the
        leader their first attempts go to the runtime in one hand-off, on a follower to the
        leader as one hop (``FrameWrites``, univrs/api/batcher.py). ``answered`` (if given) is
        called with the (index, answer) of the writes answered since its last call, as they
        come."""
        return await self._frames.submit_many(writes, answered)

    def leads(self) -> bool:
        """Does this node lead, by the status as last built (its role is always current;
        nothing rebuilt)?"""
        return self.node.runtime.view.last_status().role is Role.LEADER

    def propose_now(
        self,
        writes: Sequence[Submission],
        answered: Callable[[Sequence[tuple[int, WriteAnswer]]], None],
        spawn: Callable[..., None],
        keys_checked: bool = False,
    ) -> FrameWait | None:
        """``submit_many`` on the leader without awaiting (``FrameWrites.propose_now``,
        univrs/api/batcher.py): the writes' first attempts handed to the runtime, and what is
        left to wait for (None: nothing). ``keys_checked``: every write's key was checked
        (``check_key``) by the caller."""
        return self._frames.propose_now(writes, answered, spawn, keys_checked)

    # ---------------------------------------------------------------- reads

    async def read_at(self, consistency: str, deadline: float) -> ClusterStateMachine:
        """The state to read at ``consistency`` (``linearizable``, ``lease`` or ``local``), by
        ``deadline``."""
        if consistency == "linearizable":
            await self._read_barrier(deadline)
        elif consistency == "lease":
            if not self.node.runtime.core.config.read_lease:
                raise InvalidArgument(LEASE_OFF_MESSAGE, field="consistency")
            await self._read_barrier(deadline, lease=True)
        elif consistency != "local":
            raise InvalidArgument(CONSISTENCY_MESSAGE, field="consistency")
        return self.node.runtime.sm

    async def _read_barrier(self, deadline: float, *, lease: bool = False) -> None:
        runtime = self.node.runtime
        coalescer = self.lease_reads if lease else self.reads
        while True:
            # The last built status: its leader is always current (the driver refreshes it
            # after every step that changes it), and nothing is rebuilt per read.
            if runtime.view.last_status().leader is None:
                await self._wait_for_leader(deadline)
            with trio.CancelScope(deadline=deadline) as scope:
                try:
                    await coalescer.wait()
                    return
                except base.Unavailable:
                    pass  # dropped: leadership could not be confirmed; retry below
            if scope.cancelled_caught:
                raise Unavailable(
                    "no leader confirmed the read before its deadline; retry", retry_after=1.0
                )
            if trio.current_time() >= deadline:
                raise Unavailable(NO_LEADER_MESSAGE, retry_after=1.0)
            await self.settle(deadline)

    def meta(self, consistency: str) -> dict[str, Any]:
        """How fresh a read served now is (see the module docstring); from the last built
        status (id, leader and commit are always current in it: univrs/runtime/view.py), not
        rebuilt with every peer's progress once per driver step for the reads' sake."""
        status = self.node.runtime.view.last_status()
        applied = self.node.runtime.sm.last_applied_index
        return {
            "node": status.id,
            "consistency": consistency,
            "leader": status.leader,
            "applied_index": applied,
            "commit_index": status.commit,
            "behind": max(0, status.commit - applied),
            "leader_contact_ms": self.contact.ms_since(status),
        }


@attrs.define(eq=False)
class CallerStateStore(StateStore):
    """The node's ``RaftStateStore`` acting for one caller (``RaftStateStore.acting_for``):
    the ``StateStore`` an in-process consumer that serves someone (the node's MCP endpoint,
    an embedding application) uses, so its writes and reads are authorized as the same
    request through the API would be, on any node."""

    store: RaftStateStore
    caller: Caller

    async def execute(self, command: Command | Envelope) -> Response:
        return await self.store.execute(command, caller=self.caller)

    async def read_state(self, consistency: ReadConsistency) -> ClusterStateMachine:
        await self.store.authority.authorize_fresh(
            self.caller, "read", "a read of the cluster state"
        )
        return await self.store.read_state(consistency)

    def watch(
        self, kinds: frozenset[ObjectKind] = frozenset(ObjectKind), from_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        self.store.authority.authorize(self.caller, "read", "a watch")
        return self.store.watch(kinds, from_revision)


def _fenced(command: Command) -> bool:
    return getattr(command, "fence_term", None) is not None
