"""Batching on the serving node: a client frame's writes in one hand-off to the runtime
(``FrameWrites``, ``RaftStateStore.submit_many``), and few ReadIndex confirmations for many
concurrent linearizable reads (``ReadCoalescer``).

The single-write path (``RaftStateStore.submit``: the attempts, the retry and outcome rules,
forwarding) is univrs/api/store.py's; a frame's write whose first attempt needs another goes
on there with the attempts made so far, so the rules are one code. Writes are batched into log
appends by the runtime, not here: the driver gathers concurrent proposals into one
``propose_many`` with one batch in flight (univrs/runtime/driver.py, "Proposal batching").
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from univrs import errors as base
from univrs.api.opargs import check_key
from univrs.api.writes import UNKNOWN_MESSAGE, Submission, WriteAnswer, after_unknown, expired
from univrs.errors import OutcomeUnknown, UnivrsError
from univrs.raft.ready import Role
from univrs.runtime.proposals import Outcome, WriteAttempts
from univrs.runtime.waiter import Waiter
from univrs.sm.commands import Envelope
from univrs.sm.errors import failure_to_exception
from univrs.sm.responses import Failure, Response, Success

if TYPE_CHECKING:
    from univrs.api.writes import Write
    from univrs.service.node import NodeHandle

__all__ = ["FrameWrites", "ReadCoalescer", "Submission", "WriteAnswer"]


@attrs.define(eq=False)
class _Answers:
    """The answers of ``submit_many`` so far, reported in groups as they come."""

    slots: list[WriteAnswer | None]
    report: Callable[[Sequence[tuple[int, WriteAnswer]]], None] | None
    _fresh: list[tuple[int, WriteAnswer]] = attrs.field(factory=list)

    def set(self, i: int, answer: WriteAnswer) -> None:
        self.slots[i] = answer
        self._fresh.append((i, answer))

    def flush(self) -> None:
        if self._fresh and self.report is not None:
            self.report(self._fresh)
        self._fresh = []


class _Store(Protocol):
    """What ``FrameWrites`` uses of its ``RaftStateStore`` (univrs/api/store.py, which imports
    this module)."""

    node: NodeHandle

    async def attempt_write(
        self,
        write: Write,
        key: tuple[str, int] | None,
        deadline: float,
        hops: int,
        attempts: WriteAttempts,
    ) -> tuple[Any, dict[str, Any]]: ...

    def check_quota(self, write: Write) -> None: ...

    async def settle(self, deadline: float) -> None: ...


@attrs.define(eq=False)
class FrameWrites:
    """``RaftStateStore.submit_many``: a client frame's writes, their first attempts together."""

    store: _Store

    async def submit_many(
        self,
        writes: Sequence[Submission],
        answered: Callable[[Sequence[tuple[int, WriteAnswer]]], None] | None = None,
    ) -> list[WriteAnswer]:
        """Run several writes (a client frame's) at once: each one's answer, in order, as
        ``submit`` would give it ((result, meta) or the exception it would raise).

        On the leader the first attempt of every write goes to the runtime in one hand-off
        (``RaftRuntime.propose_together``: one inbox event, one driver wake-up) and is waited for
        under one cancel scope per distinct deadline; each write's outcome is then handled as
        ``attempt_write`` handles its own: a write that needs another attempt (``NotLeader``,
        ``ProposalDropped``, a keyed ``OutcomeUnknown``) continues on the per-write path with
        its ``WriteAttempts`` carried over, so the retry and outcome-unknown rules are the same
        code. On a follower (or mid-election) every write takes the per-write path (it is
        forwarded, or waits for a leader) concurrently. ``answered`` (if given) is called with
        the (index, answer) of the writes answered since its last call, as they come (a
        write's deadline does not wait for the others')."""
        answers = _Answers([None] * len(writes), answered)
        attempts = [WriteAttempts(keyed=w.key is not None) for w in writes]
        runtime = self.store.node.runtime
        # The writes that continue on the per-write path: (index, after an attempt?).
        later: list[tuple[int, bool]] = []
        batch: list[tuple[int, Envelope, dict[str, Any]]] = []
        if runtime.status().role is not Role.LEADER:
            later = [(i, False) for i in range(len(writes))]
        else:
            now = trio.current_time()
            sm = runtime.sm
            for i, sub in enumerate(writes):
                write = sub.write
                try:
                    check_key(sub.key)
                    if now >= sub.deadline:
                        raise expired(False)
                    extra: dict[str, Any] = {}
                    proposed = write.envelope
                    if write.leader_step is not None:
                        step, extra = write.leader_step(sm)
                        if step is None:  # nothing to write: rendered from the state here
                            applied = sm.last_applied_index
                            done = Success(version=applied)
                            if write.render is None:
                                answers.set(i, (done, {"index": applied}))
                            else:
                                result = {**write.render(done, sm), **extra}
                                answers.set(i, (result, {"index": applied}))
                            continue
                        proposed = attrs.evolve(proposed, command=step)
                    self.store.check_quota(write)
                except Exception as exc:  # its answer (or a bug, reported as such upstream)
                    answers.set(i, exc)
                    continue
                batch.append((i, proposed, extra))
        answers.flush()

        def go_on(i: int, retry: bool) -> None:  # continue write i alone, now
            nursery.start_soon(self._continue, writes[i], retry, attempts[i], answers, i)

        async with trio.open_nursery() as nursery:
            for i, retry in later:
                go_on(i, retry)
            if batch:
                await self._propose_batch(writes, batch, attempts, answers, go_on)
        slots = answers.slots
        assert all(a is not None for a in slots)
        return slots  # type: ignore[return-value]

    async def _propose_batch(
        self,
        writes: Sequence[Submission],
        batch: list[tuple[int, Envelope, dict[str, Any]]],
        attempts: list[WriteAttempts],
        answers: _Answers,
        go_on: Callable[[int, bool], None],
    ) -> None:
        """The leader's first attempt of ``batch`` (``submit_many``): one hand-off, then each
        write's outcome as ``attempt_write`` handles it."""
        runtime = self.store.node.runtime
        try:
            waiters = await runtime.propose_together([envelope for _, envelope, _ in batch])
        except base.NotLeader:  # lost the leadership since the status was read
            for i, _, _ in batch:
                attempts[i].failed(Outcome.NOT_APPLIED)
                go_on(i, True)
            return
        pending = list(range(len(batch)))
        try:
            while pending:
                earliest = min(writes[batch[k][0]].deadline for k in pending)
                # One bare cancel scope per distinct deadline (a frame's requests share theirs).
                with trio.CancelScope(deadline=earliest):
                    for k in pending:
                        if not waiters[k].done:
                            await waiters[k].settled()
                now = trio.current_time()
                waiting = []
                for k in pending:
                    i, _, extra = batch[k]
                    if waiters[k].done:
                        self._settle_answer(
                            writes[i], waiters[k], extra, i, attempts, answers, go_on
                        )
                    elif now >= writes[i].deadline:
                        answers.set(i, expired(True))
                        waiters[k].fail(base.OutcomeUnknown("abandoned by its caller"))
                    else:
                        waiting.append(k)
                answers.flush()
                pending = waiting
        finally:
            # Abandoned (deadline or cancellation): as ``RaftRuntime.propose`` does.
            for waiter in waiters:
                waiter.fail(base.OutcomeUnknown("abandoned by its caller"))

    def _settle_answer(
        self,
        sub: Submission,
        waiter: Waiter[Response],
        extra: dict[str, Any],
        i: int,
        attempts: list[WriteAttempts],
        answers: _Answers,
        go_on: Callable[[int, bool], None],
    ) -> None:
        """One write's answer from its filled waiter (the outcome rules of ``attempt_write``)."""
        write = sub.write
        sm = self.store.node.runtime.sm
        try:
            try:
                response = waiter.result()
            except (base.NotLeader, base.ProposalDropped):
                attempts[i].failed(Outcome.NOT_APPLIED)
                go_on(i, True)
                return
            except base.OutcomeUnknown as exc:
                if not attempts[i].failed(Outcome.UNKNOWN):
                    raise OutcomeUnknown(f"{UNKNOWN_MESSAGE} ({exc})") from None
                go_on(i, True)
                return
            if write.render is None:
                index = sm.last_applied_index  # a Failure has no version
                answers.set(i, (response, {"index": getattr(response, "version", index)}))
                return
            if isinstance(response, Failure):
                raise failure_to_exception(response)
            result = write.render(response, sm)
            if extra:
                result = {**result, **extra}
            answers.set(i, (result, {"index": response.version}))
        except Exception as exc:
            answers.set(i, exc)

    async def _continue(
        self,
        sub: Submission,
        retry: bool,
        attempts: WriteAttempts,
        answers: _Answers,
        i: int,
    ) -> None:
        """The rest of write ``i`` of ``submit_many`` on the per-write path: ``submit``'s rules
        with the attempts made so far (``retry``: after a first attempt that needs another,
        which pauses first as ``attempt_write`` does)."""
        try:
            if retry:
                await self.store.settle(sub.deadline)
            answer: WriteAnswer = await self.store.attempt_write(
                sub.write, sub.key, sub.deadline, sub.hops, attempts
            )
        except UnivrsError as exc:
            answer = after_unknown(exc) if attempts.refusal_is_unknown() else exc
        except Exception as exc:  # a bug: reported as such by the caller
            answer = exc
        answers.set(i, answer)
        answers.flush()


@attrs.define(eq=False)
class _Round:
    done: trio.Event = attrs.field(factory=trio.Event)
    started: bool = False  # read_index was called: later readers must wait for the next round
    index: int = 0
    error: Exception | None = None


@attrs.define(eq=False)
class ReadCoalescer:
    """Shares ReadIndex confirmations between concurrent linearizable reads.

    A read may only use a confirmation *requested after it arrived* (one requested earlier may
    have had its heartbeat round answered before the read existed). So one request is in flight
    at a time, driven by a task in ``nursery`` (never by a reader, whose deadline may cancel
    it); reads arriving meanwhile wait for the next request, which starts when the current one
    finishes and serves all of them: about two confirmations per round trip, however many
    readers (Raft dissertation 6.4, batching read-only requests).
    """

    nursery: trio.Nursery
    read_index: Callable[[], Awaitable[int]]
    _running: _Round | None = None
    _next: _Round | None = None
    requests: int = 0  # statistics: read_index calls made

    async def wait(self) -> int:
        """A read index confirmed after this call began (or the error confirming it raised)."""
        running = self._running
        if running is not None and not running.started:
            chosen = running  # its request is not made yet: it will be after this arrival
        else:
            if self._next is None:
                self._next = _Round()
            chosen = self._next
            if running is None:
                self._start()
        await chosen.done.wait()
        if chosen.error is not None:
            raise copy.copy(chosen.error)
        return chosen.index

    def _start(self) -> None:
        chosen, self._next = self._next, None
        assert chosen is not None
        self._running = chosen
        self.nursery.start_soon(self._drive, chosen)

    async def _drive(self, chosen: _Round) -> None:
        try:
            chosen.started = True
            self.requests += 1
            chosen.index = await self.read_index()
        except Exception as exc:  # handed to every reader of this round
            chosen.error = exc
        finally:
            chosen.done.set()
            self._running = None
            if self._next is not None:
                self._start()
