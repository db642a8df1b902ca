"""The driver's step, run in another task's call while the driver waits idle (mixed into
``RaftRuntime`` through ``StepLoop``, step.py).

Every input reaches the core through the driver's task (step.py). Handing an event to that task
costs a scheduling round: the sender's task goes on to its end, then Trio runs the driver. When
the driver waits idle, with nothing queued or handed to it, its next step is known exactly: the
reports left for it, then the one input, then the flush of the open batch and the Ready. A
caller may then run that step itself, synchronously, in its own task: the same code in the
same order, one task switch less on the write's path. Two callers do:

* a transport reader, for a Raft append, its answer or a heartbeat (``_step_now``, offered
  through ``Inbox.leave``; session 27, heartbeats since session 30: at 64 clients each
  follower gets a commit notice per batch, which woke its driver's task for its step):
  only while the driver waits in its plain ``receive``;
* a client connection's reader, for the proposals of a frame of writes on the leader
  (``hold_proposals`` / ``release_proposals``; session 28). The connection holds the
  proposals its frame hands over (``propose_together_nowait`` keeps them instead of sending
  them) and releases them once the frame is served, so the step, which may apply earlier
  entries and answer this very connection's earlier frames, runs where the connection's
  state is whole: after its intake, never inside it. Also while the driver waits in the open
  batch's gather (at one client, the driver always waits there when the next write comes):
  the step wakes the driver when it ends the gather (to wait in its plain ``receive``
  again); a gather it only kept or moved later is left to the driver's timer (session 31).

A step run this way that fails stores its exception for the driver, which raises it (the node
stops, as if the driver's own step had failed). A condition not met means nothing is taken:
the caller hands its input over as usual.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from univrs.errors import Unavailable
from univrs.raft.interpreter import Persisted
from univrs.raft.messages import AppendEntries, AppendEntriesResponse, Heartbeat, Message
from univrs.runtime.batching import ProposalBatches
from univrs.runtime.capabilities import BatchGate, OwnerGate
from univrs.runtime.checking import SnapshotChecks
from univrs.runtime.effects import ReadyEffects
from univrs.runtime.events import ProposeMany

log = logging.getLogger("univrs.node")

__all__ = ["WAKE", "InlineSteps"]

# What a transport reader may step itself while the driver waits idle (``_step_now``): what
# a leader sends a follower in steady replication (its appends and commit notices) and the
# answers to its appends.
_READER_STEPS = frozenset({AppendEntries, AppendEntriesResponse, Heartbeat})


class _Wake:
    """The driver's nudge: reports wait in ``_persisted``, or a step run outside its task
    needs its loop to look again (a gather began, ended or moved)."""


WAKE = _Wake()


class InlineSteps(ReadyEffects):
    """The driver's step run in a caller's task (module docstring), mixed into
    ``RaftRuntime``, which declares and builds every attribute named here."""

    if not TYPE_CHECKING:  # no instance dict (RaftRuntime is slotted): see step.py
        __slots__ = ()

    _batches: ProposalBatches
    _checks: SnapshotChecks
    _persisted: collections.deque[Persisted]
    _applied_later_index: int
    _wake_sent: bool
    _may_pack: BatchGate
    _may_own: OwnerGate
    reader_steps: bool
    _parked: bool
    _gathering: bool
    _held: list[ProposeMany] | None
    _reader_failure: BaseException | None

    if TYPE_CHECKING:  # StepLoop's (step.py)

        def _take_persisted(self) -> None: ...

        def _step_message(self, msg: Message, at: float) -> None: ...

        def _drain(self) -> object | None: ...

        def _handle(self, ev: object) -> None: ...

        def _process_ready(self) -> None: ...

    def _may_leave(self, msg: Message) -> bool:
        """May the transport keep ``msg`` for the driver's next step instead of waking it
        (the inbox's ``leave``; issue 14, round 19)? Only when the driver waits idle with
        nothing queued or handed to it, nothing else waits for its next step (no report, no
        other message: each was judged against the core without it) and the core says
        stepping it changes nothing before its next input (``RaftNode.
        append_response_may_wait``: at one client, the second follower's ack). The driver
        steps it first at its next step, at the clock it arrived at (``_take_persisted``)."""
        if self._persisted or self._applied_later_index or self.inbox.later:
            return False
        stats = self.inbox.receiver.statistics()
        if stats.current_buffer_used or not stats.tasks_waiting_receive:
            return False
        return self.core.append_response_may_wait(msg)

    def _next_step_is_ours(self) -> bool:
        """Would a step run now be exactly the driver's next one: nothing queued or handed to
        it (an event handed over goes first), no batch just released (its round of the
        scheduler comes first: step.py ``_drive``), no snapshot check in flight?"""
        stats = self.inbox.receiver.statistics()
        checks = self._checks
        return not (
            stats.current_buffer_used
            or not stats.tasks_waiting_receive
            or self._batches.released
            or checks.checking is not None
            or checks.waiting
        )

    def _step_now(self, msg: Message) -> bool:
        """Step ``msg`` now, in the caller's task (a transport reader's), exactly as the
        driver's next step would (True), or not (False: deliver it on the inbox). Only an
        append, its answer or a heartbeat, only while the driver waits idle in its plain
        ``receive`` (``_next_step_is_ours``; docs/runtime.md; sessions 27 and 30)."""
        if not (self._parked and self.reader_steps) or type(msg) not in _READER_STEPS:
            return False
        if not self._next_step_is_ours():
            return False
        self._step_inline(lambda: self._step_message(msg, trio.current_time()))
        return True

    def hold_proposals(self) -> bool:
        """A client connection's reader begins serving a frame: True if the driver waits idle
        (in its plain ``receive`` or in the open batch's gather) and the proposals the frame
        hands over (``propose_together_nowait``) are to be kept until ``release_proposals``,
        which the caller must then call (in a ``finally``) before anything else runs."""
        if (
            self._held is not None
            or not self.reader_steps
            or not (self._parked or self._gathering)
            or not self._next_step_is_ours()
        ):
            return False
        self._held = []
        return True

    def release_proposals(self) -> None:
        """The frame is served: step the proposals it handed over now, in this task, as the
        driver's next step (nothing ran since ``hold_proposals``: the driver still waits
        idle), or, if the frame itself handed the driver something meanwhile (a read), put
        them on the inbox behind it, as ``propose_together_nowait`` does."""
        held, self._held = self._held, None
        if not held:
            return
        if (self._parked or self._gathering) and self._next_step_is_ours():
            gathering = self._gathering

            def take() -> None:
                for event in held:
                    self._handle(event)

            self._step_inline(take, wake=gathering)
            return
        for event in held:
            try:
                self.inbox.sender.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # Not reached: the inbox was empty when the frame began and only that frame's
                # own few events went in since. Nothing was proposed: say so to the writers.
                log.error("a client frame's proposals found the driver's inbox full or closed")
                error = Unavailable("the node cannot take proposals now; retry")
                for proposal in event.proposals:
                    proposal.waiter.fail(error)

    def _step_inline(self, take: Callable[[], None], *, wake: bool = False) -> None:
        """The driver's step around ``take()`` (its input), in the caller's task: the reports
        left for it, the input, the writer's reports, the flush and the Ready. A gather it
        began wakes the driver to time it, and so does one it ended or brought forward while
        the driver waits in it (``wake``); a failure is the driver's to raise: the node
        stops."""
        parked, gathering = self._parked, self._gathering
        self._parked = self._gathering = False  # no step within this one (an offer is refused)
        batches = self._batches
        # The driver waits in the gather until no later than this (``wake``): see below.
        until = batches.gather_until if wake else None
        try:
            if self._persisted or self._applied_later_index or self.inbox.later:
                self._take_persisted()
            take()
            self._drain()  # (only the writer's reports: the inbox was empty)
            now = trio.current_time()
            if not batches.gathering(now):
                batches.flush(self.core, self._applier.pending, self._may_pack, now, self._may_own)
            self._process_ready()
            self._checks.maybe_stop(self.core)
            after = batches.gather_until
            if (
                batches.released
                or (after is not None if not wake else until is None or after is None)
                or (until is not None and after is not None and after < until)
            ):
                # The driver's loop waits for a gather this step began, or leaves one it ended
                # (or brought forward: not done by a frame's proposals), or runs its round. A
                # gather this step only kept or moved later (a frame's proposals joined it)
                # needs no wake-up per frame: at its old deadline the driver finds it still
                # on (``gathering``) and waits again until the new one (session 31).
                self._nudge()
        except BaseException as exc:  # the driver's to raise: the node stops
            self._reader_failure = exc
            self._nudge()
        finally:
            self._parked, self._gathering = parked, gathering

    def _nudge(self) -> None:
        """Wake the driver (one ``WAKE`` at most until it takes the reports)."""
        if not self._wake_sent:
            try:
                self.inbox.sender.send_nowait(WAKE)
                self._wake_sent = True
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # full: the driver is woken anyway; closed: shutting down
