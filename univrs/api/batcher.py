"""Batching on the serving node: a client frame's writes in one hand-off to the runtime
(``FrameWrites``, ``RaftStateStore.submit_many``). Concurrent linearizable reads share
ReadIndex confirmations in univrs/api/coalescer.py (``ReadCoalescer``).

The single-write path (``RaftStateStore.submit``: the attempts, the retry and outcome rules,
forwarding) is univrs/api/attempts.py's (``WriteLoop``); a frame's write whose first attempt
needs another goes on there with the attempts made so far, so the rules are one code. Writes
are batched into log appends by the runtime, not here: the driver gathers concurrent proposals
into one ``propose_many`` with one batch in flight (univrs/runtime/batching.py).

A frame's first attempts on the leader are waited for by a ``FrameWait``: in the frame's task
(``submit_many``), or, for the fast protocol's frames of writes, by nobody (``propose_now``:
the connection's writer settles it when its waiters say they are filled, univrs/api/inline.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from univrs import errors as base
from univrs.api.attempts import WriteLoop
from univrs.api.forward import ForwardAnswer, ForwardCall
from univrs.api.opargs import check_key
from univrs.api.writes import (
    NODE_ITSELF,
    UNKNOWN_MESSAGE,
    Submission,
    WriteAnswer,
    after_unknown,
    check_caught_up,
    expired,
)
from univrs.client.protocol import MAX_HOPS
from univrs.errors import ConnectionLost, NotLeader, OutcomeUnknown, Unavailable, UnivrsError
from univrs.raft.ready import Role, Status
from univrs.runtime.proposals import Outcome, WriteAttempts
from univrs.runtime.waiter import Waiter
from univrs.sm.commands import Envelope
from univrs.sm.errors import failure_to_exception
from univrs.sm.responses import Created, Failure, Response, Success

if TYPE_CHECKING:
    pass

__all__ = ["FrameWait", "FrameWrites", "Submission", "WriteAnswer"]

# The extra answer fields of a write without a leader step: none. Shared by every such write
# of a batch and never changed (the answer is built as ``{**result, **extra}`` when it has
# any): one dict fewer per write.
_NO_EXTRA: dict[str, Any] = {}


@attrs.define(eq=False)
class _Answers:
    """The answers of ``submit_many`` so far, reported in groups as they come."""

    slots: list[WriteAnswer | None]
    report: Callable[[Sequence[tuple[int, WriteAnswer]]], None] | None
    # Answered since the last ``flush`` (``FrameWait.settle`` appends to it as ``set`` does).
    fresh: list[tuple[int, WriteAnswer]] = attrs.field(factory=list)

    def set(self, i: int, answer: WriteAnswer) -> None:
        self.slots[i] = answer
        self.fresh.append((i, answer))

    def flush(self) -> None:
        if self.fresh and self.report is not None:
            self.report(self.fresh)
        self.fresh = []


@attrs.define(eq=False)
class _Attempts:
    """The ``WriteAttempts`` of ``submit_many``'s writes by index, each made when first asked
    for: most writes end with their first attempt, and need none."""

    writes: Sequence[Submission]
    _made: dict[int, WriteAttempts] = attrs.field(factory=dict)

    def __getitem__(self, i: int) -> WriteAttempts:
        made = self._made.get(i)
        if made is None:
            made = self._made[i] = WriteAttempts(keyed=self.writes[i].key is not None)
        return made


@attrs.define(eq=False)
class FrameWrites:
    """``RaftStateStore.submit_many``: a client frame's writes, their first attempts together."""

    store: WriteLoop  # the node's RaftStateStore (univrs/api/store.py)

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
        code. On a follower that knows the leader the writes' first attempts go to it as one
        hop (``Forwarder.call_many``), each outcome handled as ``attempt_write`` handles a
        forwarded attempt's (one that needs another continues on the per-write path, as
        above); with no leader known every write takes the per-write path (it waits for a
        leader). ``answered`` (if given) is called with
        the (index, answer) of the writes answered since its last call, as they come (a
        write's deadline does not wait for the others')."""
        answers = _Answers([None] * len(writes), answered)
        attempts = _Attempts(writes)
        runtime = self.store.node.runtime
        # The writes that continue on the per-write path: (index, after an attempt?).
        later: list[tuple[int, bool]] = []
        batch: list[tuple[int, Envelope, dict[str, Any]]] = []
        # On a follower: the leader, its address and the writes forwarded to it as one hop.
        forward: tuple[str, str, list[int]] | None = None
        # The role from the status as last built (its role and leader are always current): no
        # rebuild of the core's status per frame on the leader, where the driver steps often.
        status = runtime.view.last_status()
        if status.role is not Role.LEADER:
            forward = self._forwardable(runtime.status(), writes, answers, later)
        else:
            batch = self._leader_batch(writes, answers)
        answers.flush()

        def go_on(i: int, retry: bool, hint: str | None = None) -> None:  # write i alone, now
            nursery.start_soon(self._continue, writes[i], retry, attempts[i], answers, i, hint)

        async with trio.open_nursery() as nursery:
            for i, retry in later:
                go_on(i, retry)
            if batch:
                await self._propose_batch(writes, batch, attempts, answers, go_on)
            if forward is not None:
                await self._forward_batch(*forward, writes, attempts, answers, go_on)
        slots = answers.slots
        assert all(a is not None for a in slots)
        return slots  # type: ignore[return-value]

    def _leader_batch(
        self, writes: Sequence[Submission], answers: _Answers, keys_checked: bool = False
    ) -> list[tuple[int, Envelope, dict[str, Any]]]:
        """On the leader: the writes of a frame to propose (index, envelope, extra answer
        fields); the others answered in ``answers`` (a bad key, the deadline passed, a leader
        step with nothing to write, the quota), not flushed. ``keys_checked``: the caller
        checked every write's key with ``check_key`` (``propose_now``'s)."""
        batch: list[tuple[int, Envelope, dict[str, Any]]] = []
        now = trio.current_time()
        runtime = self.store.node.runtime
        sm = runtime.sm
        # The core's term, read for the first write with a leader step only: ``status()``
        # rebuilds the status once per driver step (every peer's progress), and a frame of
        # other writes needs none of it.
        term: int | None = None
        # The quota's alarm read once for the frame (``check_quota`` refuses only while it is
        # raised, and only a write that does not free space): s18-ingress.
        quota = self.store.quota
        full = quota is not None and quota.alarm
        store = self.store
        append = batch.append
        for i, sub in enumerate(writes):
            write = sub.write
            try:
                if not keys_checked:
                    check_key(sub.key)
                if now >= sub.deadline:
                    raise expired(False)
                proposed = write.envelope
                if write.leader_step is None:
                    if full and not write.allowed_when_full:
                        store.check_quota(write)
                    append((i, proposed, _NO_EXTRA))
                    continue
                if term is None:
                    term = runtime.status().term
                check_caught_up(sm, term)
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
                store.check_quota(write)
            except Exception as exc:  # its answer (or a bug, reported as such upstream)
                answers.set(i, exc)
                continue
            append((i, proposed, extra))
        return batch

    def _forwardable(
        self,
        status: Status,
        writes: Sequence[Submission],
        answers: _Answers,
        later: list[tuple[int, bool]],
    ) -> tuple[str, str, list[int]] | None:
        """On a follower: (leader, its address, the writes of ``submit_many`` to forward to it
        as one hop), the others added to ``later`` (the per-write path decides them: no
        known leader, a forwarded request, the node's own write) or answered (a bad key, the
        deadline passed)."""
        leader = status.leader
        address = None if leader is None else self.store.leader_address(status, leader)
        if leader is None or leader == status.id or address is None:
            later.extend((i, False) for i in range(len(writes)))
            return None
        now = trio.current_time()
        chosen: list[int] = []
        for i, sub in enumerate(writes):
            if sub.hops >= MAX_HOPS or sub.write.caller is NODE_ITSELF:
                later.append((i, False))  # answered not-leader there, as ``submit`` does
                continue
            try:
                check_key(sub.key)
            except Exception as exc:
                answers.set(i, exc)
                continue
            if now >= sub.deadline:
                answers.set(i, expired(False))
                continue
            chosen.append(i)
        answers.flush()
        return (leader, address, chosen) if chosen else None

    async def _forward_batch(
        self,
        leader: str,
        address: str,
        chosen: list[int],
        writes: Sequence[Submission],
        attempts: _Attempts,
        answers: _Answers,
        go_on: Callable[..., None],
    ) -> None:
        """A follower's first attempt of a frame's writes ``chosen`` (``submit_many``): one
        hop to the leader (``Forwarder.call_many``), then each write's outcome as
        ``attempt_write`` handles a forwarded one's."""
        calls = [
            ForwardCall(
                w.write.op, w.write.args, w.key, w.deadline, w.write.caller, w.write.minimal
            )
            for w in (writes[i] for i in chosen)
        ]
        reported: set[int] = set()

        def report(settled: list[tuple[int, ForwardAnswer]]) -> None:
            for k, answer in settled:
                reported.add(k)
                self._forwarded(chosen[k], answer, leader, address, attempts, answers, go_on)
            answers.flush()

        try:
            await self.store.forwarder.call_many(address, calls, report)
        except Exception as exc:  # a bug: the writes not answered yet report it
            for k, i in enumerate(chosen):
                if k not in reported:
                    answers.set(i, exc)
            answers.flush()

    def _forwarded(
        self,
        i: int,
        answer: ForwardAnswer,
        leader: str,
        address: str,
        attempts: _Attempts,
        answers: _Answers,
        go_on: Callable[..., None],
    ) -> None:
        """Write ``i``'s forwarded attempt ended with ``answer``: its answer, or it goes on
        alone (the rules of ``attempt_write`` for a forwarded attempt)."""
        if not isinstance(answer, UnivrsError):
            self.store.count_forward("ok")
            result, meta = answer
            answers.set(i, (result, meta or {}))
            return
        exc = answer
        self.store.count_forward(exc.code)
        attempt = attempts[i]
        if isinstance(exc, ConnectionLost):
            if exc.outcome_unknown and not attempt.failed(Outcome.UNKNOWN):
                answers.set(
                    i,
                    OutcomeUnknown(
                        f"{UNKNOWN_MESSAGE} (the connection to the leader at {address} broke "
                        "after the write was sent)"
                    ),
                )
                return
            go_on(i, True)  # let our own view of the leader catch up, then again
            return
        if not isinstance(exc, Unavailable) or exc.outcome_unknown:
            # An answer (not found, conflict ...) or an unknown outcome.
            answers.set(i, after_unknown(exc) if attempt.refusal_is_unknown() else exc)
            return
        if isinstance(exc, NotLeader) and exc.leader_hint not in (None, leader):
            go_on(i, False, exc.leader_hint)  # it is not the leader (any more): follow its hint
            return
        go_on(i, True)  # nothing applied: retry when the view moved

    def propose_now(
        self,
        writes: Sequence[Submission],
        answered: Callable[[Sequence[tuple[int, WriteAnswer]]], None],
        spawn: Callable[..., None],
        keys_checked: bool = False,
    ) -> FrameWait | None:
        """``submit_many`` on the leader without awaiting: the first attempts handed to the
        runtime in one hand-off (``propose_together_nowait``), and a ``FrameWait`` for their
        outcomes (None: every write answered already). Nothing waits here: the caller has
        the waiters tell it when they are filled (``FrameWait.watch``), and calls ``settle``
        then and at ``deadline()``, and ``abandon`` if it stops. A write that needs another
        attempt (and a full inbox's hand-off) goes on in a task, ``spawn(fn, *args)`` (the
        caller's nursery). The rules are ``submit_many``'s: the same code. The caller checked
        that this node leads (``runtime.view.last_status()``). ``keys_checked``: the caller
        checked every write's key with ``check_key`` (``ApiService.start_writes``: each one
        built by ``WriteBuilder.build``, which checks it; a key is a tuple of a str and an
        int, the same answer twice), so it is not checked again here."""
        answers = _Answers([None] * len(writes), answered)
        attempts = _Attempts(writes)
        batch = self._leader_batch(writes, answers, keys_checked)
        answers.flush()

        def go_on(i: int, retry: bool, hint: str | None = None) -> None:  # write i alone, now
            spawn(self._continue, writes[i], retry, attempts[i], answers, i, hint)

        if not batch:
            return None
        runtime = self.store.node.runtime
        try:
            waiters, unsent = runtime.propose_together_nowait([e for _, e, _ in batch])
        except base.NotLeader:
            for i, _, _ in batch:
                attempts[i].failed(Outcome.NOT_APPLIED)
                go_on(i, True)
            return None
        wait = FrameWait(self, writes, batch, waiters, attempts, answers, go_on)
        if unsent is not None:  # a full inbox: handed over when it has room
            spawn(_hand_over, runtime.inbox.sender, unsent)
        return wait

    async def _propose_batch(
        self,
        writes: Sequence[Submission],
        batch: list[tuple[int, Envelope, dict[str, Any]]],
        attempts: _Attempts,
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
        wait = FrameWait(self, writes, batch, waiters, attempts, answers, go_on)
        try:
            while wait.pending:
                # One bare cancel scope per distinct deadline (a frame's requests share theirs).
                with trio.CancelScope(deadline=wait.deadline()):
                    for k in wait.pending:
                        if not waiters[k].done:
                            await waiters[k].settled()
                wait.settle(trio.current_time())
        finally:
            wait.abandon()

    def _settle_answer(
        self,
        sub: Submission,
        waiter: Waiter[Response],
        extra: dict[str, Any],
        i: int,
        attempts: _Attempts,
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
        hint: str | None = None,
    ) -> None:
        """The rest of write ``i`` of ``submit_many`` on the per-write path: ``submit``'s rules
        with the attempts made so far (``retry``: after a first attempt that needs another,
        which pauses first as ``attempt_write`` does; ``hint``: the leader a node named when
        it refused a forwarded attempt)."""
        try:
            if retry:
                await self.store.settle(sub.deadline)
            answer: WriteAnswer = await self.store.attempt_write(
                sub.write, sub.key, sub.deadline, sub.hops, attempts, hint=hint
            )
        except UnivrsError as exc:
            answer = after_unknown(exc) if attempts.refusal_is_unknown() else exc
        except Exception as exc:  # a bug: reported as such by the caller
            answer = exc
        answers.set(i, answer)
        answers.flush()


async def _hand_over(sender: Any, event: Any) -> None:
    """``propose_now``'s hand-off to a full inbox, when it has room (``inbox.sender.send``)."""
    await sender.send(event)


@attrs.define(eq=False)
class FrameWait:
    """The first attempts of a frame's writes, proposed together on the leader, until each is
    answered: ``settle(now)`` answers those whose waiter is filled (each outcome as
    ``attempt_write`` handles it: an answer, or another attempt in a task) and those whose
    deadline passed (``expired``: maybe applied; the waiter is failed, so a proposal not yet
    handed to the core is skipped); ``pending`` is what is left. ``_propose_batch`` waits on
    one in a task; the fast protocol's connection has the waiters tell it (``watch``)."""

    frames: FrameWrites
    writes: Sequence[Submission]
    batch: list[tuple[int, Envelope, dict[str, Any]]]
    waiters: list[Waiter[Response]]
    attempts: _Attempts
    answers: _Answers
    go_on: Callable[..., None]
    pending: list[int] = attrs.field(init=False)  # positions in ``batch`` not answered

    def __attrs_post_init__(self) -> None:
        self.pending = list(range(len(self.batch)))

    def watch(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` as each waiter is filled (in the filling task: cheap, never raising)."""
        for waiter in self.waiters:
            waiter.notify(fn)

    def deadline(self) -> float:
        """The earliest deadline of the writes still pending (inf: none)."""
        writes, batch = self.writes, self.batch
        return min((writes[batch[k][0]].deadline for k in self.pending), default=math.inf)

    def settle(self, now: float) -> None:
        """Answer the pending writes whose waiter is filled or whose deadline passed.

        A write applied with an answer to render and no extra fields (the common one) is
        answered here, as ``_settle_answer`` would answer it (its render called, its answer
        ``(result, {"index": version})``, a render that raises answered with its exception):
        one call and one ``_Answers.set`` less per write (session 30). Every other filled
        waiter (an error, a ``Failure``, no render, extra fields) goes to ``_settle_answer``."""
        waiting = []
        writes, batch, waiters, answers = self.writes, self.batch, self.waiters, self.answers
        frames = self.frames
        sm = frames.store.node.runtime.sm
        slots, fresh = answers.slots, answers.fresh
        for k in self.pending:
            i, _, extra = batch[k]
            waiter = waiters[k]
            if waiter.done:
                render = writes[i].write.render
                # (The waiter's fields read directly: ``result()`` without its call.)
                if waiter._error is None and not extra and render is not None:
                    response = waiter._value
                    if type(response) is Success or type(response) is Created:
                        try:
                            result = render(response, sm)
                            answer: WriteAnswer = (result, {"index": response.version})
                        except Exception as exc:
                            answer = exc
                        slots[i] = answer
                        fresh.append((i, answer))
                        continue
                frames._settle_answer(
                    writes[i], waiter, extra, i, self.attempts, answers, self.go_on
                )
            elif now >= writes[i].deadline:
                answers.set(i, expired(True))
                waiters[k].fail(base.OutcomeUnknown("abandoned by its caller"))
            else:
                waiting.append(k)
        answers.flush()
        self.pending = waiting

    def abandon(self) -> None:
        """Stop waiting (deadline or cancellation): as ``RaftRuntime.propose`` does."""
        for waiter in self.waiters:
            if not waiter.done:
                waiter.fail(base.OutcomeUnknown("abandoned by its caller"))
