"""The attempts of one write on a node, whatever its role (``WriteLoop.attempt_write``): the
loop that ``RaftStateStore.submit`` runs (univrs/api/store.py), and that a frame's write whose
first attempt needs another continues on (univrs/api/batcher.py), so the rules are one code.

On the leader an attempt proposes the command to the runtime and waits until it applied here;
on a follower that knows the leader it forwards the request over the fast protocol
(``Forwarder``, ``hops=1``); with no known leader it waits at most ``leader_wait`` seconds for
one, then answers ``unavailable``.

Retrying inside the loop is done only when it cannot apply a command twice (docs/api.md,
"Write outcomes"): the attempt certainly did not apply (``NotLeader`` before proposing,
``ProposalDropped``: refused by the core or its entry replaced by a different one, a request
not sent, a forwarded request refused with ``not-leader``/``unavailable``), or the request
carries an idempotency key (the state machine's session answers a duplicate with the first
response, Raft dissertation 6.3). An attempt that may have applied (``OutcomeUnknown`` from the
runtime: its entry was covered by a snapshot; the connection to the leader broke after
sending) ends a keyless write at once with ``outcome-unknown``, and its deadline with
``timeout``. Once an attempt may have applied, a later refusal (no leader, not the leader,
``session-expired``) is answered as ``outcome-unknown`` too: it only says that the *later*
attempt did not apply.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs import errors as base
from univrs.api.auth import ANONYMOUS, Caller
from univrs.api.writes import (
    NO_LEADER_MESSAGE,
    UNKNOWN_MESSAGE,
    Write,
    check_caught_up,
    expired,
)
from univrs.api.writes import (
    NODE_ITSELF as _NODE_ITSELF,
)
from univrs.client.protocol import MAX_HOPS
from univrs.errors import (
    ConnectionLost,
    NoSpace,
    NotLeader,
    OutcomeUnknown,
    Unavailable,
    UnivrsError,
)
from univrs.raft.ready import Role, Status
from univrs.runtime.proposals import Outcome, WriteAttempts
from univrs.sm.errors import failure_to_exception
from univrs.sm.responses import Failure, Success

if TYPE_CHECKING:
    from univrs.api.forward import Forwarder
    from univrs.api.limits import Quota
    from univrs.api.metrics import ApiMetrics
    from univrs.service.node import NodeHandle

LEADER_WAIT = 3.0  # how long a request waits for an election before answering 503
RETRY_PAUSE = 0.02  # between attempts that failed for a transient reason

__all__ = ["LEADER_WAIT", "RETRY_PAUSE", "WriteLoop"]


class WriteLoop:
    """The write attempts of ``RaftStateStore`` (a base class: the fields below are the
    store's; see the module docstring for the rules)."""

    __slots__ = ()  # the store is an attrs class with slots

    node: NodeHandle
    forwarder: Forwarder
    metrics: ApiMetrics | None
    leader_wait: float
    quota: Quota | None

    async def attempt_write(
        self,
        write: Write,
        key: tuple[str, int] | None,
        deadline: float,
        hops: int,
        attempts: WriteAttempts,
        caller: Caller = ANONYMOUS,
        *,
        hint: str | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """The attempts of ``submit``; ``attempts`` (univrs/runtime/proposals.py, the rules the
        simulator runs too) notes as soon as an attempt may have applied the command. A
        keyless write is then not retried (its error says the outcome is unknown); a keyed one
        is, because the state machine answers a retried key with the first response."""
        runtime = self.node.runtime
        envelope = write.envelope
        while True:
            if trio.current_time() >= deadline:
                raise expired(attempts.maybe_applied)
            status = runtime.status()
            if status.role is Role.LEADER:
                extra: dict[str, Any] = {}
                proposed = envelope
                if write.leader_step is not None:
                    # A write the leader may answer itself (a heartbeat of a live node).
                    check_caught_up(runtime.sm, status.term)
                    step, extra = write.leader_step(runtime.sm)
                    if step is None:  # nothing to write: rendered from the state here
                        applied = runtime.sm.revision
                        done = Success(version=applied)
                        if write.render is None:
                            return done, {"index": applied}
                        return {**write.render(done, runtime.sm), **extra}, {"index": applied}
                    proposed = attrs.evolve(envelope, command=step)
                self.check_quota(write)
                try:
                    # A bare CancelScope: trio.fail_at's generator wrapper costs more, per write.
                    with trio.CancelScope(deadline=deadline) as scope:
                        response = await runtime.propose(proposed)
                    if scope.cancelled_caught:
                        raise expired(True)
                except (base.NotLeader, base.ProposalDropped):
                    # This attempt certainly did not apply: refused before reaching the log,
                    # or its entry was replaced by a different entry at its index.
                    attempts.failed(Outcome.NOT_APPLIED)
                    await self.settle(deadline)
                    continue
                except base.OutcomeUnknown as exc:
                    # Appended, then covered by a snapshot from a new leader: it may have
                    # applied. Only a keyed write may go again (the session dedups it).
                    if not attempts.failed(Outcome.UNKNOWN):
                        raise OutcomeUnknown(f"{UNKNOWN_MESSAGE} ({exc})") from None
                    await self.settle(deadline)
                    continue
                if write.render is None:
                    index = runtime.sm.revision  # a Failure has no version
                    return response, {"index": getattr(response, "version", index)}
                if isinstance(response, Failure):
                    raise failure_to_exception(response)
                result = write.render(response, runtime.sm)
                if extra:
                    result = {**result, **extra}
                return result, {"index": response.version}
            if hops >= MAX_HOPS:
                raise NotLeader(leader=status.leader)
            leader = hint or status.leader
            hint = None
            if leader is None:
                await self._wait_for_leader(deadline)
                continue
            if leader == status.id:  # our view is mid-change: let the driver catch up
                await self.settle(deadline)
                continue
            if write.caller is _NODE_ITSELF:
                raise NotLeader(
                    leader,
                    message="with auth on, this node's own write runs on the leader only (a "
                    "node has no token of its own to forward it with): in-process callers act "
                    "for a caller (RaftStateStore.acting_for) whose token the leader checks",
                )
            address = self.leader_address(status, leader)
            if address is None:
                raise Unavailable(f"the address of the leader {leader!r} is unknown")
            try:
                result, meta = await self.forwarder.call(
                    address, write.op, write.args, key, deadline, write.caller, write.minimal
                )
            except UnivrsError as exc:
                self.count_forward(exc.code)
                if isinstance(exc, ConnectionLost):
                    if exc.outcome_unknown and not attempts.failed(Outcome.UNKNOWN):
                        # Sent, then the connection broke: a keyless write is not resent.
                        raise OutcomeUnknown(
                            f"{UNKNOWN_MESSAGE} (the connection to the leader at {address} "
                            "broke after the write was sent)"
                        ) from None
                    await self.settle(deadline)  # let our own view of the leader catch up
                    continue
                if not isinstance(exc, Unavailable) or exc.outcome_unknown:
                    raise  # an answer (not found, conflict ...) or an unknown outcome
                if isinstance(exc, NotLeader) and exc.leader_hint not in (None, leader):
                    # The node we took for the leader is not (any more): follow its hint.
                    hint = exc.leader_hint
                    continue
                await self.settle(deadline)  # nothing applied: retry when the view moved
                continue
            self.count_forward("ok")
            return result, meta or {}

    def leader_address(self, status: Status, leader: str) -> str | None:
        """Where to forward to ``leader``: its raft address (the fast protocol shares the
        listener), with this node's ``[raft.dial]`` override applied, as its raft links."""
        address = status.membership.address_of(leader)
        if address is not None:
            address = self.node.config.dial_addresses({leader: address})[leader]
        return address

    def check_quota(self, write: Write) -> None:
        """Refuse a write that does not free space while the NOSPACE alarm is raised."""
        if self.quota is None or write.allowed_when_full or not self.quota.alarm:
            return
        raise NoSpace(
            f"the storage quota is exceeded ({self.quota.in_use()} bytes in use, "
            f"limits.quota_backend_bytes = {self.quota.limit}): writes are refused until space "
            "is freed; deletes still work, and a snapshot (`univrs cluster snapshot`) compacts "
            "the log"
        )

    def count_forward(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.forwarded.inc(1, outcome)

    async def settle(self, deadline: float) -> None:
        """Pause briefly (until the node's view changes, at most RETRY_PAUSE)."""
        with trio.move_on_at(min(deadline, trio.current_time() + RETRY_PAUSE)):
            await self.node.runtime.wait_changed()

    async def _wait_for_leader(self, deadline: float) -> None:
        """Return once a leader is known; raise Unavailable after ``leader_wait`` or at the
        deadline."""
        runtime = self.node.runtime
        give_up = min(deadline, trio.current_time() + self.leader_wait)
        with trio.move_on_at(give_up):
            while runtime.status().leader is None:
                await runtime.wait_changed()
            return
        raise Unavailable(NO_LEADER_MESSAGE, retry_after=max(1.0, math.ceil(self.leader_wait / 2)))
