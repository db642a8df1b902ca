"""The driver's step loop: the one task that owns the Raft core (``StepLoop._drive``).

``RaftRuntime`` (driver.py) is built whole and offers the proposal path (``propose``,
``propose_together``, ``read_index``, ``call``: events put on the inbox); this module is the
other side of the inbox, mixed into it: the loop that takes those events, steps the core and
carries out each Ready.

Theory of operation. Every input to the core arrives as an event on one bounded memory channel
(the ``Inbox``, events.py): Raft messages from the transport (put there by the transport's
reader tasks), ticks (a ticker task), proposals and read requests from the API and ``applied``
reports from the apply loop; the storage writer's ``persisted`` reports wait in ``_persisted``
(in order), and one wake-up event on the channel says they are there (none for a report that
may wait for the next step, nor for a follower's apply report left for it: round 16,
``_on_persisted``, ``_applied_later``); a leader's acknowledgement that changes nothing until
its next input is left beside the channel by the transport's reader (the inbox's ``later``:
round 19, ``_may_leave``) and stepped first at the next step. The driver drains
whatever is queued, feeds it to the core, proposes the waiting proposals as one batch (below),
then takes the core's Ready and hands it to the one interpreter of its contract
(univrs/raft/interpreter.py ``execute``, shared with the simulator), which calls the driver's
effects in the contract's order:

* persist parts + ``messages_after_persist``  -> the storage writer (group commit, then sends);
* a snapshot from the leader                  -> the snapshotter (store, then restore);
  (its last chunk is checked first in a worker thread while the core steps every other
  event, and stepped when the check is done, or dropped if the check was stopped because
  the chunk could complete nothing any more: checking.py)
* ``messages``                                -> the transport, at once;
* ``committed``                               -> the apply loop (in order), or applied on
  this step when small and nothing else is queued (``apply_committed``);
* ``reads`` / ``dropped_reads``               -> the waiting readers.

Ticks come from a ticker task (ticks.py) as events too, so the driver waits on its channel with no
deadline of its own (a cancel scope per loop iteration cost more than the ticks).

Proposal batching (batching.py): at most ``proposal_depth`` batches (1 by default) are
appended and not yet applied here; proposals that arrive meanwhile wait in the open batch,
which goes as one ``propose_many`` once the batch in flight applies (after one scheduling
round: ``_drive``), or at the end of the step it arrived in when there is room.

``status()`` (the ``RuntimeView``) is rebuilt lazily. The driver rebuilds it itself only
after a step that can change role, leader, term, commit, applied or the membership: role,
leader and term come with a Ready's soft state, term and commit with its hard state, the
membership with its entries, truncation or snapshot, ``applied`` with an ``Applied`` report;
a ``call`` may do anything. ``wait_changed`` fires only when role, leader, term or a
membership changed, never for commit or apply progress alone; a caller waiting for an index
uses ``wait_applied`` (a threshold, woken by the step that takes in the apply loop's report
that reaches it).

Nothing but the driver's step calls the core. While the driver waits idle with nothing before
it, a transport reader may run that step itself for a Raft append or its answer (session 27),
and a client connection's reader for the proposals of a frame of writes (session 28): the
same step, in the reader's task, one task switch less (inline_steps.py).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from univrs.raft.interpreter import Persisted, execute, report_persisted
from univrs.raft.messages import (
    EntryKind,
    HardState,
    Membership,
    Message,
    SnapshotMeta,
)
from univrs.raft.node import RaftNode
from univrs.raft.ready import Role, SoftState
from univrs.runtime.applier import Applier
from univrs.runtime.batching import ProposalBatches
from univrs.runtime.capabilities import BatchGate, LeaseGate, OwnerGate
from univrs.runtime.checking import CHECKED, SnapshotChecks
from univrs.runtime.effects import APPLY_ON_STEP_BYTES
from univrs.runtime.events import TICK, Applied, Call, Inbox, Propose, ProposeMany, Read
from univrs.runtime.inline_steps import WAKE, InlineSteps
from univrs.runtime.ports import Metrics, StateBackend, Transport
from univrs.runtime.snapshots import SnapshotChecker, precheck_due
from univrs.runtime.snapshotter import Snapshotter
from univrs.runtime.stamps import LogClock
from univrs.runtime.ticks import LeaseClock
from univrs.runtime.view import RuntimeView
from univrs.runtime.waiter import Waiter
from univrs.runtime.writer import StorageWriter

log = logging.getLogger("univrs.node")

__all__ = ["APPLY_ON_STEP_BYTES", "MAX_CONTACTS", "StepLoop"]


# Senders whose last contact is kept beyond the members' (``RaftRuntime.last_contact``): past
# it, every id but the members' is forgotten (s13-audit: a peer reconnecting under a new
# made-up id each time grew the map by an entry per id, for the node's lifetime).
MAX_CONTACTS = 1024


class StepLoop(InlineSteps):
    """The driver task, mixed into ``RaftRuntime`` (driver.py), which declares and builds
    every attribute named here; the Ready's effects are ``ReadyEffects`` (effects.py), the
    step run in another task's call while the driver waits idle ``InlineSteps``
    (inline_steps.py)."""

    if not TYPE_CHECKING:  # no instance dict (RaftRuntime is slotted); mypy would check the
        __slots__ = ()  # mixin's assignments against this empty tuple, not RaftRuntime's slots

    core: RaftNode
    transport: Transport
    metrics: Metrics
    view: RuntimeView
    inbox: Inbox
    state_backend: StateBackend
    on_membership: Callable[[dict[str, str]], None]
    _writer: StorageWriter
    _applier: Applier
    _snapshots: Snapshotter
    _batches: ProposalBatches
    _reads: dict[int, Waiter[int]]
    _next_ctx: int
    _last_contact: dict[str, float]
    _soft: SoftState | None
    _peers: dict[str, str] | None
    _step_dirty: bool
    _moved: bool
    _clock: LeaseClock
    _persisted: collections.deque[Persisted]
    _wake_sent: bool
    _applied_later_index: int
    _may_pack: BatchGate
    _may_own: OwnerGate
    _stamps: LogClock | None
    _may_lease: LeaseGate
    _applied_on_step: int
    _outgoing: list[Message] | None
    _checks: SnapshotChecks
    reader_steps: bool
    _parked: bool
    _gathering: bool
    _held: list[ProposeMany] | None
    _reader_failure: BaseException | None

    @property
    def applied_membership(self) -> Membership:
        """The configuration of the applied log (may lag ``status().membership``)."""
        return self.view.applied_membership

    # ------------------------------------------------------------------ the step loop

    async def _drive(self) -> None:
        recv = self.inbox.receiver
        checks = self._checks
        self._step_dirty = True
        self._process_ready()  # the start-up Ready (committed entries to replay, etc.)
        held: object | None = None  # an event _drain stopped at (it needs a precheck first)
        async with trio.open_nursery() as nursery:  # the snapshot check in flight (checking.py)
            while True:
                if held is None:
                    held = checks.next_waiting()
                if held is not None:
                    ev = held
                elif self._batches.gather_until is None:
                    self._parked = True  # a reader may run the step meanwhile (inline_steps.py)
                    try:
                        ev = await recv.receive()
                    finally:
                        self._parked = False
                    if self._reader_failure is not None:
                        raise self._reader_failure  # a step run in another task failed
                else:  # the open batch gathers its proposers (batching.py): until then
                    ev = None
                    self._gathering = True  # a client frame may step its proposals meanwhile
                    try:
                        with trio.move_on_at(self._batches.gather_until):
                            ev = await recv.receive()
                    finally:
                        self._gathering = False
                    if self._reader_failure is not None:
                        raise self._reader_failure  # a step run in another task failed
                if precheck_due(ev, self.core) and (
                    checks.wait_behind(ev) or await checks.begin(self.core, ev, nursery)
                ):
                    ev = None  # stepped once its check is done (``CHECKED``), not now
                if ev is not None:
                    if self._persisted or self._applied_later_index or self.inbox.later:
                        self._take_persisted()  # reports left for this step, before its input
                    self._handle(ev)
                held = self._drain()
                batches = self._batches
                if batches.released and batches.open and held is None:
                    # The batch in flight just applied and woke its proposers: let every task
                    # runnable now (those proposers, API readers with new requests) run once
                    # before the open batch goes, so that it goes whole (one scheduling round,
                    # measured to keep the batches as large as the API's batcher made them).
                    self._process_ready()
                    await trio.lowlevel.checkpoint()
                    held = self._drain()
                now = trio.current_time()
                if batches.released:
                    batches.released = False
                    batches.gather(now)  # wait for the proposers it answered, within bounds
                if held is not None:
                    batches.stop_gathering()  # a snapshot's check comes next: no waiting
                if not batches.gathering(now):
                    batches.flush(
                        self.core, self._applier.pending, self._may_pack, now, self._may_own
                    )
                self._process_ready()
                checks.maybe_stop(self.core)  # a check whose chunk can complete nothing

    def _drain(self) -> object | None:
        """Handle every event queued now (the writer's reports first); stop at (and return)
        one that needs a precheck (one that arrives while a check is in flight waits behind
        it instead: checking.py)."""
        self._take_persisted()
        recv = self.inbox.receiver
        while True:
            try:
                ev = recv.receive_nowait()
            except trio.WouldBlock:
                return None
            if precheck_due(ev, self.core):
                if self._checks.wait_behind(ev):
                    continue
                return ev
            self._handle(ev)

    def _forget_contacts(self) -> None:
        """Keep the last contacts of the members (the applied and the newest configuration)
        only: the map is bounded by ``MAX_CONTACTS`` plus the members."""
        members = self.applied_membership.members | self.view.last_status().membership.members
        self._last_contact = {n: t for n, t in self._last_contact.items() if n in members}

    def _take_persisted(self) -> None:
        """Give the core the messages left for this step (``_may_leave``: they came before
        any report waiting here), the writer's reports, in order (contract step 4), and the
        apply loop's report left for this step (``_applied_later``)."""
        self._wake_sent = False
        later = self.inbox.later
        while later:
            msg, at = later.popleft()
            self._step_message(msg, at)
        reports = self._persisted
        while reports:
            report_persisted(self.core, reports.popleft())
        if self._applied_later_index:
            index, self._applied_later_index = self._applied_later_index, 0
            self._handle(Applied(index))

    def _handle(self, ev: object) -> None:
        if ev is WAKE:
            self._take_persisted()
        elif isinstance(ev, Message):
            self._step_message(ev, trio.current_time())
        elif isinstance(ev, Propose):
            self._batches.open.append(ev)
        elif isinstance(ev, ProposeMany):
            self._batches.open.extend(ev.proposals)
        elif ev is CHECKED:  # the snapshot's check is done: its last chunk goes in now
            msg, stopped = self._checks.checked()
            if not stopped:  # else it can complete nothing (checking.py): dropped
                self._handle(msg)
            check = self.core.snapshot_check
            if isinstance(check, SnapshotChecker):
                check.discard(msg.meta)  # superseded meanwhile: the core did not take it
        elif ev is TICK:
            if self.core.config.read_lease:
                self._clock.catch_up(self.core)
            else:
                self.core.tick()
        elif isinstance(ev, Applied):
            if self.view.membership_applied:
                self._step_dirty = True  # wait_changed fires for it (view.py ``refresh``)
            else:
                self._moved = True  # rebuilt at the next look (``_finish_step``)
            self._batches.applied(ev.index, trio.current_time())  # may release a batch
            self.core.applied(ev.index)
            self.view.note_applied(ev.index)  # wakes wait_applied at its threshold only
        elif isinstance(ev, Read):
            ctx = self._next_ctx
            self._next_ctx += 1
            self._reads[ctx] = ev.waiter
            lease = ev.lease
            if lease:
                self._clock.catch_up(self.core)
                if self.core.role() is Role.LEADER and not self._may_lease():
                    lease = False  # a member's vote hold is too short: a ReadIndex read
            self.core.read_index(ctx, lease=lease)
        elif isinstance(ev, Call):
            self._step_dirty = True
            try:
                ev.waiter.set(ev.fn(self.core))
            except AssertionError:
                raise  # a bug in the core: the node must stop, not carry on
            except Exception as exc:  # reported to the caller, e.g. NotLeader
                ev.waiter.fail(exc)
        else:
            raise AssertionError(f"unknown driver event {ev!r}")

    def _step_message(self, msg: Message, at: float) -> None:
        """Step ``msg``, which arrived at trio time ``at`` (now, or a message left for this
        step: ``_may_leave``)."""
        contacts = self._last_contact
        contacts[msg.src] = at
        if len(contacts) > MAX_CONTACTS:
            self._forget_contacts()
        if self.core.config.read_lease:
            # Step it on a caught-up clock: a follower dates its last contact with the
            # leader by it, and after a stall the core's clock is behind until the next
            # tick event, before the leader even sent this message (s13-audit2 S3). A message
            # left for this step is stepped at the clock it arrived at: as if stepped then.
            self._clock.catch_up(self.core, at)
        self.core.step(msg)

    def _process_ready(self) -> None:
        self._take_ready()
        while self._applied_on_step:  # committed entries applied on this step (below)
            index, self._applied_on_step = self._applied_on_step, 0
            self._handle(Applied(index))  # as the apply loop would report it, minus a hop
            # Its proposers run before the next step anyway (no scheduling round for them);
            # the open batch gathers them as after any batch (batching.py).
            self._batches.released = False
            self._batches.gather(trio.current_time())
            self._take_ready()
        self._finish_step()

    def _take_ready(self) -> None:
        if self.core.has_ready():
            rd = self.core.ready()
            config_changed = rd.snapshot is not None or any(
                e.kind is EntryKind.CONFIG for e in rd.entries
            )
            hs = rd.hard_state
            if config_changed or rd.soft_state is not None or rd.truncate_from is not None:
                self._step_dirty = True
            elif hs is not None and not self._step_dirty:
                built = self.view.last_built()  # (its term, vote and pins are current)
                if (
                    hs.term == built.term
                    and hs.vote == built.vote
                    and hs.pins == built.pinned
                    and not self.view.membership_applied
                ):
                    self._moved = True  # only the commit moved: ``_finish_step``
                else:
                    self._step_dirty = True
            if hs is not None and hs.term != self.view.last_built().term:
                log.info("term changed", extra={"term": hs.term})
            if config_changed:
                # Tell the transport the new members' addresses before this Ready's messages
                # go out: the leader's first append to a member just added must not be
                # dropped for want of its address (it would wait for the next heartbeat).
                self._refresh_status()
            self._outgoing = []  # ``send`` collects the Ready's messages for ``_send_out``
            try:
                execute(rd, self)
            finally:  # (a Ready with no write; and nothing is ever left behind)
                out, self._outgoing = self._outgoing, None
                if out:
                    self._send_together(out)

    def _finish_step(self) -> None:
        if self._step_dirty:
            self._step_dirty = self._moved = False
            self._refresh_status()
        elif self._moved:
            # Only the commit or the applied index moved (no role, leader, term, vote, pins or
            # membership, applied or appended: ``_take_ready``, ``_handle``): nothing
            # ``wait_changed`` watches, so the status is rebuilt at the next look, not at
            # every step (each follower's append and commit notice; session 30).
            self._moved = False
            self.view.mark_moved()
        else:
            self.view.mark_stale()  # e.g. last index, persisted, peers' progress

    def _refresh_status(self) -> None:
        status = self.view.refresh()
        peers = {**dict(self.applied_membership.addresses), **dict(status.membership.addresses)}
        if peers != self._peers:
            self._peers = peers
            self.on_membership(peers)

    # ---------------------------------------------- the writer's and the apply loop's reports

    def _on_persisted(self, index: int, term: int, hard_state: HardState | None) -> None:
        # Called by the storage writer on the Trio loop, outside the driver's task: keep the
        # report (in order) and wake the driver. A full inbox needs no wake-up of its own: the
        # driver takes the reports at every step, before the events. Nor does a report that
        # changes nothing the core does before its next input (``RaftNode.
        # persist_report_may_wait``, read-only: a follower's acks went out with the write's
        # completion; a leader whose own report commits nothing): its next step takes it,
        # before that input (issue 14, round 16: one driver step less per write).
        self._persisted.append(Persisted(index=index, term=term, hard_state=hard_state))
        if not self._wake_sent and (
            # (a message left for the next step was judged without this report: wake)
            self.inbox.later or not self.core.persist_report_may_wait(index, hard_state)
        ):
            try:
                self.inbox.sender.send_nowait(WAKE)
                self._wake_sent = True
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # shutting down

    def _applied_later(self, index: int) -> bool:
        """The apply loop's report of ``index``, offered instead of an ``Applied`` event: a
        follower takes it in at its driver's next step, before that step's input (the next
        append or commit notice, the writer's completion, or a tick: ticks come while the
        node runs, so it waits one tick at most), not at a step of its own (issue 14, round
        16: while a write was in flight; round 19: whenever, for at 64 clients the apply of a
        batch usually ends with the writer idle, and its report cost each follower a driver
        step per batch). Only when nothing waits on the core's applied index (no ReadIndex
        read, no batch in flight: a leader's) and no new applied membership is to be
        announced (``wait_changed``). The ``wait_applied`` waiters are woken now; the core
        and ``status()`` learn it then."""
        if (
            self.core.role() is not Role.FOLLOWER
            or self._reads
            or self._batches.in_flight
            or self.view.membership_applied
        ):
            return False
        self._applied_later_index = max(self._applied_later_index, index)
        self.view.note_applied(index)
        return True

    def _after_apply(self) -> None:
        self._observe_stamp()
        self._snapshots.maybe_snapshot()

    def _on_restored(self, meta: SnapshotMeta) -> None:
        self._observe_stamp()
        self._snapshots.restored(meta)

    def log_clock(self) -> LogClock:
        """The time this node stamps into the entries it proposes (stamps.py): the log's own
        clock, advanced by trio's monotonic clock, never by the wall clock's jumps."""
        stamps = self._stamps
        if stamps is None:
            stamps = self._stamps = LogClock.starting(
                self._applier.sm.clock_ms, trio.current_time(), int(time.time() * 1000)
            )
        return stamps

    def _observe_stamp(self) -> None:
        """The log clock learns the newest stamp applied (stamps.py): a follower's reading
        follows its leader's, and a new leader continues from it."""
        clock, applied = self._stamps, self._applier.sm.clock_ms
        if clock is None:
            if applied > 0:
                self.log_clock()  # made from the state machine's clock_ms: nothing to learn
        else:
            clock.observe(applied, trio.current_time())
