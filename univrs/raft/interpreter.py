"""The one interpreter of the Ready contract, shared by every runtime of the core.

The contract (univrs/raft/ready.py) is carried out here once, and executed by the Trio driver
(univrs/runtime/step.py and writer.py), the simulator (univrs/sim/runtime.py) and the core's
transcript harness (tests/raft/harness.py). A rule of the contract lives in this module only;
the runtimes supply the effects: how a message is sent, how storage is written, how the state
machine applies, how a read is answered.

Theory of operation. ``execute(rd, fx)`` walks one Ready in the order of the contract and
calls the runtime's effects (``ReadyEffects``):

1. ``soft_state_changed`` (role, leader, term): the runtime fails the proposals it had not yet
   handed to the core when it stops leading (they were never appended: retryable);
2. ``restore_snapshot``: a snapshot from the leader is queued on the *apply stream* ahead of
   this Ready's committed entries (restore the state machine, fail the proposals it covers
   with an unknown outcome, then report ``applied(meta.index)``); its storage is an
   ``InstallJob`` on the *write queue*, ahead of this Ready's write;
3. ``send`` for each of ``messages``: at once, they claim nothing durable;
4. ``submit_write`` of one ``PersistJob`` (truncate, entries, hard state, and the
   ``messages_after_persist`` that wait for it): whenever the Ready persists something *or*
   has messages that must wait (those then wait for every earlier write: writes are FIFO);
5. ``apply_committed``: the committed entries, in order, on the apply stream (then the
   runtime reports ``applied(last index)``);
6. ``read_ready`` / ``read_dropped`` for the ReadIndex requests released or dropped.

The write queue (``WriteQueue``) is the storage side: a FIFO of install jobs, persist jobs and
the runtime's other storage work (its own snapshots, compaction), which must stay ordered with
them. ``take()`` hands out the oldest item; consecutive persist jobs are merged into one
``MergedWrite`` (group commit: one transaction, one fsync for many Readies). A write that only
moves the commit index of an already durable hard state needs no sync of its own: it is
deferred to the next write that syncs anyway (etcd's ``MustSync``; the commit index can always
be learned again from the leader). Once the runtime has stored a merged write it calls
``written()``, sends the write's ``after_persist`` messages and reports the returned
``Persisted`` to the core with ``report_persisted`` (``persisted_hard_state`` first, then
``persisted(index, term)`` for the last entry); an install is reported with ``installed()``.
A write's entries are not reported while a persist job still queued truncates at or below its
last entry (``written``): the core could not tell them from equal entries a later leader put
back, and the disk loses them first.

Everything here is pure (no I/O, no clock, no randomness): the simulator runs it as is.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import attrs

from univrs.raft.messages import Entry, HardState, Message, SnapshotMeta
from univrs.raft.ready import Ready, SnapshotInstall, SoftState

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class PersistJob:
    """What one Ready asks to make durable, and the messages that must wait for it."""

    hard_state: HardState | None
    truncate_from: int | None
    entries: tuple[Entry, ...]
    after_persist: tuple[Message, ...]


@attrs.frozen(kw_only=True)
class InstallJob:
    """A verified snapshot from the leader to store (replacing the log up to its index by the
    suffix rule of paper Figure 13), ahead of the Ready's own write."""

    meta: SnapshotMeta
    data: bytes


@attrs.frozen(kw_only=True)
class MergedWrite:
    """Several persist jobs folded into one storage transaction (``jobs`` of them).

    ``stores`` is False when there is nothing to write (only messages that waited for earlier
    writes, or a deferred commit-only hard state): the runtime then skips the storage call.
    """

    hard_state: HardState | None
    truncate_from: int | None
    entries: tuple[Entry, ...]
    after_persist: tuple[Message, ...]
    jobs: int = 1

    @property
    def stores(self) -> bool:
        return self.hard_state is not None or self.truncate_from is not None or bool(self.entries)


@attrs.frozen(kw_only=True)
class Persisted:
    """What a completed write made durable, to report to the core (``report_persisted``):
    the last entry written (``index`` 0: none) and the hard state written (None: none)."""

    index: int
    term: int
    hard_state: HardState | None = None


def merge_jobs(jobs: Sequence[PersistJob]) -> MergedWrite:
    """Fold jobs (oldest first) into one write with the same effect as applying them in order.

    A later job's ``truncate_from`` cuts entries an earlier job would have appended; the
    storage call deletes from the smallest truncation point and writes what survives; the
    newest hard state wins.
    """
    if len(jobs) == 1:
        j = jobs[0]
        return MergedWrite(
            hard_state=j.hard_state,
            truncate_from=j.truncate_from,
            entries=j.entries,
            after_persist=j.after_persist,
        )
    hard_state: HardState | None = None
    truncate_from: int | None = None
    entries: list[Entry] = []
    after: list[Message] = []
    for job in jobs:
        if job.truncate_from is not None:
            t = job.truncate_from
            if entries and entries[0].index < t:
                entries = [e for e in entries if e.index < t]
            else:
                entries = []
            truncate_from = t if truncate_from is None else min(truncate_from, t)
        if job.entries:
            if entries and job.entries[0].index != entries[-1].index + 1:
                raise AssertionError(
                    f"persist jobs not contiguous: {job.entries[0].index} after {entries[-1].index}"
                )
            entries.extend(job.entries)
        if job.hard_state is not None:
            hard_state = job.hard_state
        after.extend(job.after_persist)
    return MergedWrite(
        hard_state=hard_state,
        truncate_from=truncate_from,
        entries=tuple(entries),
        after_persist=tuple(after),
        jobs=len(jobs),
    )


@attrs.define(eq=False)
class WriteQueue(Generic[T]):
    """A node's storage work in FIFO order, with group commit (see the module docstring).

    Items are ``PersistJob``, ``InstallJob`` or the runtime's own work (``T``: a snapshot of
    its own, a compaction), which ``take`` hands out alone, in order with the writes. One item
    is in progress at a time: the runtime takes one, does it, reports it, takes the next.
    """

    _items: collections.deque[PersistJob | InstallJob | T] = attrs.field(factory=collections.deque)
    # The newest hard state known durable, and a newer one that differs only in its commit
    # index and waits for the next write that has to sync anyway.
    _durable_hs: HardState | None = None
    _pending_hs: HardState | None = None
    # Queued persist jobs that truncate (``written`` looks at them only when there are some).
    _truncating: int = 0

    def submit(self, item: PersistJob | InstallJob | T) -> None:
        self._items.append(item)
        if isinstance(item, PersistJob) and item.truncate_from is not None:
            self._truncating += 1

    def __len__(self) -> int:
        return len(self._items)

    @property
    def idle(self) -> bool:
        return not self._items

    def take(self) -> MergedWrite | InstallJob | T:
        """The oldest item; consecutive persist jobs come out merged into one write."""
        items = self._items
        head = items.popleft()
        if not isinstance(head, PersistJob):
            return head
        jobs = [head]
        while items and isinstance(items[0], PersistJob):
            jobs.append(items.popleft())  # type: ignore[arg-type]
        if self._truncating:
            self._truncating -= sum(1 for j in jobs if j.truncate_from is not None)
        merged: MergedWrite | None = None
        if len(jobs) == 1:  # (the write of one Ready: built once, below)
            hs, truncate_from, entries = head.hard_state, head.truncate_from, head.entries
        else:
            merged = merge_jobs(jobs)
            hs, truncate_from, entries = merged.hard_state, merged.truncate_from, merged.entries
        write_hs = hs
        syncs = truncate_from is not None or bool(entries)
        if hs is not None and not syncs:
            durable = self._durable_hs
            if (
                durable is not None
                and hs.term == durable.term
                and hs.vote == durable.vote
                and hs.pins == durable.pins
            ):
                # Only the commit index moved: no sync of its own; it rides on the next write.
                # (A new pin syncs, like a term or a vote: messages wait for it, node.py.)
                self._pending_hs = hs
                write_hs = None
        elif hs is None and syncs and self._pending_hs is not None:
            write_hs = self._pending_hs
        if merged is not None:
            return merged if write_hs is hs else attrs.evolve(merged, hard_state=write_hs)
        return MergedWrite(
            hard_state=write_hs,
            truncate_from=truncate_from,
            entries=entries,
            after_persist=head.after_persist,
        )

    def written(self, w: MergedWrite) -> Persisted | None:
        """``w`` (from ``take``) is durable: what to report to the core (None: nothing).

        Send ``w.after_persist`` first, then report (``report_persisted``)."""
        hs = w.hard_state
        if hs is not None:
            self._durable_hs = hs
            self._pending_hs = None
        if w.entries:
            last = w.entries[-1]
            if not self._truncating or not self._cut_later(last.index):
                return Persisted(index=last.index, term=last.term, hard_state=hs)
            # A write still queued deletes this one's last entry: the core's log may hold an
            # entry equal to it again (replaced by one leader, put back by a later one), which
            # ``persisted`` cannot tell from this one, yet the disk loses it first. Withheld:
            # the later writes report what they leave. (Without such an A-B-A the core ignores
            # the report anyway: its log holds another entry there, or none yet.)
        if hs is not None:
            return Persisted(index=0, term=0, hard_state=hs)
        return None

    def _cut_later(self, index: int) -> bool:
        """Does a queued persist job truncate at or below ``index``?"""
        for item in self._items:
            if isinstance(item, PersistJob):
                t = item.truncate_from
                if t is not None and t <= index:
                    return True
        return False

    def clear(self) -> None:
        """A crash: every queued item is lost (the runtime drops the one in progress)."""
        self._items.clear()
        self._pending_hs = None
        self._truncating = 0


def installed(job: InstallJob) -> Persisted:
    """What storing a snapshot from the leader made durable (contract step 0)."""
    return Persisted(index=job.meta.index, term=job.meta.term)


class Reporter(Protocol):
    """The core's side of a durable report (``RaftNode``)."""

    def persisted(self, index: int, term: int) -> None: ...

    def persisted_hard_state(self, hard_state: HardState) -> None: ...


def report_persisted(core: Reporter, p: Persisted) -> None:
    """Tell the core what a completed write made durable (contract step 4): the hard state
    first (it may release messages held until their term is durable), then the last entry."""
    if p.hard_state is not None:
        core.persisted_hard_state(p.hard_state)
    if p.index:
        core.persisted(p.index, p.term)


class ReadyEffects(Protocol):
    """What a runtime does with a Ready; ``execute`` calls these in the contract's order."""

    def soft_state_changed(self, soft: SoftState) -> None:
        """Role, leader or term changed (log it; fail unappended proposals on leadership loss)."""

    def restore_snapshot(self, install: SnapshotInstall, job: InstallJob) -> None:
        """Queue ``job`` on the write queue and ``install`` on the apply stream, ahead of what
        follows in this Ready (restore, fail covered proposals, report ``applied``)."""

    def send(self, msg: Message) -> None:
        """Send a message now."""

    def submit_write(self, job: PersistJob) -> None:
        """Queue ``job`` on the write queue (FIFO behind every earlier item)."""

    def apply_committed(self, entries: tuple[Entry, ...]) -> None:
        """Queue committed entries on the apply stream (apply in order, then report
        ``applied``)."""

    def read_ready(self, ctx: int, index: int) -> None:
        """ReadIndex request ``ctx`` may be served now (applied >= ``index`` already)."""

    def read_dropped(self, ctx: int) -> None:
        """ReadIndex request ``ctx`` could not be confirmed: fail it, retryably."""


def execute(rd: Ready, fx: ReadyEffects) -> None:
    """Carry out one Ready: call ``fx``'s effects in the order of the contract (module
    docstring). The runtime's storage completes later, through ``WriteQueue``."""
    if rd.soft_state is not None:
        fx.soft_state_changed(rd.soft_state)
    install = rd.snapshot
    if install is not None:
        fx.restore_snapshot(install, InstallJob(meta=install.meta, data=install.data))
    if rd.messages:
        send = fx.send
        for m in rd.messages:
            send(m)
    if (
        rd.hard_state is not None
        or rd.truncate_from is not None
        or rd.entries
        or rd.messages_after_persist
    ):
        fx.submit_write(
            PersistJob(
                hard_state=rd.hard_state,
                truncate_from=rd.truncate_from,
                entries=rd.entries,
                after_persist=rd.messages_after_persist,
            )
        )
    if rd.committed:
        fx.apply_committed(rd.committed)
    for rs in rd.reads:
        fx.read_ready(rs.ctx, rs.index)
    for ctx in rd.dropped_reads:
        fx.read_dropped(ctx)
