"""The storage writer: group commit of the core's persist requests.

Every Ready that asks to persist something becomes a ``PersistJob``. The writer takes *all* jobs
queued since its last write, merges them in order into one storage call (one LMDB write
transaction, one fsync), and only then sends the messages that depended on that state
(``messages_after_persist``: vote grants, append acks) and reports ``persisted`` to the driver.
With many proposals in flight this is one fsync per batch, not per entry.

Merging keeps the meaning of the sequence: a later job's ``truncate_from`` cuts entries an
earlier job would have appended; the storage call deletes from the smallest truncation point
and writes what survives; the newest hard state wins.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from univrs.raft.messages import Entry, HardState, Message, SnapshotMeta
from univrs.runtime.waiter import Waiter


@attrs.frozen(kw_only=True)
class PersistJob:
    """What one Ready asks to make durable, and the messages that must wait for it."""

    hard_state: HardState | None
    truncate_from: int | None
    entries: tuple[Entry, ...]
    after_persist: tuple[Message, ...]


@attrs.frozen(kw_only=True)
class InstallJob:
    """A verified snapshot from the leader to store (replacing the log up to its index)."""

    meta: SnapshotMeta
    data: bytes


@attrs.frozen(kw_only=True)
class StorageTask:
    """Other storage work (the node's own snapshot, compaction) run in FIFO order with the
    writes, so it never races an install or an append; the result goes to ``waiter``."""

    fn: Callable[[], Any]
    waiter: Waiter[Any]


@attrs.frozen(kw_only=True)
class MergedWrite:
    """Several jobs folded into one storage call."""

    hard_state: HardState | None
    truncate_from: int | None
    entries: tuple[Entry, ...]
    after_persist: tuple[Message, ...]


def merge_jobs(jobs: Sequence[PersistJob]) -> MergedWrite:
    """Fold jobs (oldest first) into one write with the same effect as applying them in order."""
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
            if entries:
                assert job.entries[0].index == entries[-1].index + 1, "persist jobs not contiguous"
            entries.extend(job.entries)
        if job.hard_state is not None:
            hard_state = job.hard_state
        after.extend(job.after_persist)
    return MergedWrite(
        hard_state=hard_state,
        truncate_from=truncate_from,
        entries=tuple(entries),
        after_persist=tuple(after),
    )


@attrs.define(eq=False)
class StorageWriter:
    """Runs in its own task; the driver hands it jobs with ``submit`` (never blocks)."""

    # (hard_state, truncate_from, entries) -> None; blocking, one synced transaction.
    write: Callable[..., None]
    send: Callable[[Message], None]
    # (index, term) of the last durable entry (0, 0 if the write held none) and the hard state
    # it made durable (None if none): the core learns both (persisted, persisted_hard_state).
    on_persisted: Callable[[int, int, HardState | None], Awaitable[None]]
    observe_fsync: Callable[[float], None] = lambda _seconds: None
    in_thread: bool = True  # False only for in-memory storage in tests (no blocking I/O)
    # (meta, data) -> None; blocking, durable: stores a snapshot and drops the log it covers.
    install: Callable[[SnapshotMeta, bytes], None] | None = None
    _queue: collections.deque[PersistJob | InstallJob | StorageTask] = attrs.field(
        factory=collections.deque
    )
    _wakeup: trio.Event = attrs.field(factory=trio.Event)
    writes: int = 0
    jobs_written: int = 0
    # The newest hard state known durable, and a newer one that differs only in its commit
    # index and waits for the next write that has to sync anyway.
    _durable_hs: HardState | None = None
    _pending_hs: HardState | None = None

    def submit(self, job: PersistJob | InstallJob | StorageTask) -> None:
        self._queue.append(job)
        self._wakeup.set()

    @property
    def idle(self) -> bool:
        return not self._queue

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while self._queue:
                head = self._queue[0]
                if isinstance(head, InstallJob):
                    self._queue.popleft()
                    await self._install(head)
                    continue
                if isinstance(head, StorageTask):
                    self._queue.popleft()
                    await self._task(head)
                    continue
                jobs: list[PersistJob] = []
                while self._queue and isinstance(self._queue[0], PersistJob):
                    jobs.append(self._queue.popleft())  # type: ignore[arg-type]
                await self._write(jobs)

    async def _task(self, task: StorageTask) -> None:
        result: list[Any] = []
        try:
            await self._run_blocking(lambda: result.append(task.fn()))
        except Exception as exc:  # handed to the caller, who decides
            task.waiter.fail(exc)
            return
        task.waiter.set(result[0])

    async def _run_blocking(self, fn: Callable[[], None]) -> None:
        if self.in_thread:
            # Not cancellable: a started transaction finishes (and syncs) before shutdown.
            await trio.to_thread.run_sync(fn)
        else:
            fn()
            await trio.lowlevel.checkpoint()

    async def _install(self, job: InstallJob) -> None:
        assert self.install is not None, "a snapshot arrived but the writer cannot store one"
        install = self.install
        await self._run_blocking(lambda: install(job.meta, job.data))
        self.writes += 1
        await self.on_persisted(job.meta.index, job.meta.term, None)

    async def _write(self, jobs: list[PersistJob]) -> None:
        merged = merge_jobs(jobs)
        hs = merged.hard_state
        if hs is not None and not merged.entries and merged.truncate_from is None:
            durable = self._durable_hs
            if durable is not None and (hs.term, hs.vote) == (durable.term, durable.vote):
                # Only the commit index moved: it needs no fsync of its own (it can always be
                # learned again from the leader; etcd's MustSync). It rides on the next write.
                self._pending_hs = hs
                hs = None
        if hs is None and self._pending_hs is not None and (merged.entries or merged.truncate_from):
            hs = self._pending_hs
        if hs is not None or merged.truncate_from is not None or merged.entries:
            start = trio.current_time()

            def write() -> None:
                self.write(
                    hard_state=hs, truncate_from=merged.truncate_from, entries=merged.entries
                )

            await self._run_blocking(write)
            if hs is not None:
                self._durable_hs = hs
                self._pending_hs = None
            self.observe_fsync(trio.current_time() - start)
            self.writes += 1
        self.jobs_written += len(jobs)
        for msg in merged.after_persist:
            self.send(msg)
        if merged.entries:
            last = merged.entries[-1]
            await self.on_persisted(last.index, last.term, hs)
        elif hs is not None:
            await self.on_persisted(0, 0, hs)
