"""The Ready's effects (univrs/raft/interpreter.py ``execute`` calls them in the contract's
order), mixed into ``RaftRuntime`` (driver.py) through ``StepLoop`` (step.py): what the driver's
step does with a Ready's role change, snapshot, write, messages, committed entries and reads.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

from univrs.errors import NotLeader, Unavailable
from univrs.raft.interpreter import InstallJob, Persisted, PersistJob
from univrs.raft.messages import Entry, Message
from univrs.raft.node import RaftNode
from univrs.raft.ready import Role, SnapshotInstall, SoftState
from univrs.runtime.applier import Applier
from univrs.runtime.batching import ProposalBatches
from univrs.runtime.events import Inbox
from univrs.runtime.ports import MEMORY_STATE, Metrics, StateBackend, Transport
from univrs.runtime.snapshotter import Snapshotter
from univrs.runtime.waiter import Waiter
from univrs.runtime.writer import StorageWriter

log = logging.getLogger("univrs.node")

__all__ = ["APPLY_ON_STEP_BYTES", "ReadyEffects"]

# Committed entries of at most this many bytes may apply on the driver's step.
APPLY_ON_STEP_BYTES = 1024


class ReadyEffects:
    """The effects of a Ready (``univrs.raft.interpreter.ReadyEffects``), mixed into
    ``RaftRuntime``, which declares and builds every attribute named here."""

    if not TYPE_CHECKING:  # no instance dict (RaftRuntime is slotted): see step.py
        __slots__ = ()

    core: RaftNode
    transport: Transport
    metrics: Metrics
    inbox: Inbox
    state_backend: StateBackend
    _writer: StorageWriter
    _applier: Applier
    _snapshots: Snapshotter
    _batches: ProposalBatches
    _reads: dict[int, Waiter[int]]
    _soft: SoftState | None
    _persisted: collections.deque[Persisted]
    _applied_on_step: int
    _outgoing: list[Message] | None

    def soft_state_changed(self, soft: SoftState) -> None:
        old = self._soft
        self._soft = soft
        if old is None or old.role != soft.role:
            log.info(
                "role changed",
                extra={"role": soft.role.value, "term": soft.term, "leader": soft.leader},
            )
            if soft.role is Role.CANDIDATE:
                self.metrics.elections.inc()
            if old is not None and old.role is Role.LEADER:
                self._batches.fail_open(NotLeader(soft.leader))
            self._batches.clear_flight()  # a new leadership starts with nothing in flight
        if old is None or old.leader != soft.leader:
            log.info("leader changed", extra={"leader": soft.leader, "term": soft.term})
            if soft.leader is not None:
                self.metrics.leader_changes.inc()

    def restore_snapshot(self, install: SnapshotInstall, job: InstallJob) -> None:
        # Stored before anything else of this Ready, restored before later entries apply.
        self._snapshots.install(install, job)

    def submit_write(self, job: PersistJob) -> None:
        # The Ready's messages (sent just before: interpreter.execute) are written first, from
        # this step, before the write's thread takes the GIL to stage it (s17-lat1). A small
        # write then runs here, at once (session 27: ``StorageWriter.submit(now=True)``): its
        # acks leave before the rest of this Ready (a follower's apply of what the append
        # committed), and its report waits in ``_persisted`` for a later step.
        self._send_out()
        self._writer.submit(job, now=True)

    def send(self, msg: Message) -> None:
        out = self._outgoing
        if out is None:
            self.transport.send(msg)
        else:
            out.append(msg)

    def _send_out(self) -> None:
        """The Ready's messages so far, together: written from this step where the
        transport can (``Transport.send_now``), not by its links' tasks a round later."""
        out = self._outgoing
        if out:
            self._outgoing = []
            self._send_together(out)

    def _send_together(self, out: list[Message]) -> None:
        # With more events waiting for this task (under load), the links' tasks write after
        # its next steps, one frame for what those steps queued too (fewer frames, writes and
        # wake-ups of the peers' readers); with none, the frames go from this step.
        if self._more_waiting():
            for msg in out:
                self.transport.send(msg)
        else:
            self.transport.send_now(out)

    def _more_waiting(self) -> bool:
        """Whether the driver has more to do right after this step: events in its inbox or
        a writer's report (under load; at one client, nothing)."""
        return bool(self._persisted or self.inbox.receiver.statistics().current_buffer_used)

    def apply_committed(self, entries: tuple[Entry, ...]) -> None:
        # A small commit with nothing else going on applies on this step: no hand-off to the
        # apply loop and back (docs/runtime.md, "Applying on the driver's step"). A leader's
        # persistent state waits for an idle writer (a conservative choice, not a need: under
        # load its commits go to the loop as before); a follower's does not, since at one
        # client its commit arrives with the next append, whose write this very step started
        # (s18-fixed: the apply loop's step per write on every follower), when nothing else
        # waits for the driver: under load the loop applies what several steps committed in
        # one state transaction, as before. The state's transaction never waits for the log's
        # flush (its own environment, not synced).
        if (
            sum(len(e.data) for e in entries) <= APPLY_ON_STEP_BYTES
            and not self._batches.open
            and (
                self.state_backend is MEMORY_STATE
                or self._writer.idle
                or (self.core.role() is Role.FOLLOWER and not self._more_waiting())
            )
            and self._applier.apply_now(entries)
        ):
            self._applied_on_step = self._applier.applied_index
            return
        self._applier.enqueue(entries)

    def read_ready(self, ctx: int, index: int) -> None:
        read = self._reads.pop(ctx, None)
        if read is not None:
            read.set(index)

    def read_dropped(self, ctx: int) -> None:
        read = self._reads.pop(ctx, None)
        if read is not None:
            read.fail(Unavailable("the read could not be confirmed by a leader; retry"))
