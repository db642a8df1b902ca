"""The storage writer: the Trio task that works through the node's write queue.

The write queue (univrs/raft/interpreter.py ``WriteQueue``, shared with the simulator) holds
every Ready's ``PersistJob``, the leader's snapshots to install (``InstallJob``) and other
storage work (``StorageTask``: the node's own snapshots, compaction) in FIFO order. The writer
takes the consecutive persist jobs at the head of the queue (up to the next install or
storage task) as one merged write (one LMDB write
transaction, one fsync: group commit), and only then sends the messages that depended on that
state (``messages_after_persist``: vote grants, append acks) and reports ``persisted`` to the
driver. With many proposals in flight this is one fsync per batch, not per entry. Which hard
state needs a sync of its own, and what each write reports, is the queue's rule, not ours.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from univrs.raft.interpreter import (
    InstallJob,
    MergedWrite,
    PersistJob,
    WriteQueue,
    installed,
    merge_jobs,
)
from univrs.raft.messages import HardState, Message, SnapshotMeta
from univrs.runtime.ports import AppendLog
from univrs.runtime.waiter import Waiter

__all__ = ["InstallJob", "MergedWrite", "PersistJob", "StorageTask", "StorageWriter", "merge_jobs"]


@attrs.frozen(kw_only=True)
class StorageTask:
    """Other storage work (the node's own snapshot, compaction) run in FIFO order with the
    writes, so it never races an install or an append; the result goes to ``waiter``."""

    fn: Callable[[], Any]
    waiter: Waiter[Any]


@attrs.define(eq=False)
class StorageWriter:
    """Runs in its own task; the driver hands it jobs with ``submit`` (never blocks)."""

    # Blocking, one synced transaction (``LogStorage.append``).
    write: AppendLog
    send: Callable[[Message], None]
    # (index, term) of the last durable entry (0, 0 if the write held none) and the hard state
    # it made durable (None if none): the core learns both (persisted, persisted_hard_state).
    on_persisted: Callable[[int, int, HardState | None], Awaitable[None]]
    observe_fsync: Callable[[float], None] = lambda _seconds: None
    in_thread: bool = True  # False only for in-memory storage in tests (no blocking I/O)
    # (meta, data) -> None; blocking, durable: stores a snapshot and drops the log it covers.
    install: Callable[[SnapshotMeta, bytes], None] | None = None
    _queue: WriteQueue[StorageTask] = attrs.field(factory=WriteQueue)
    _wakeup: trio.Event = attrs.field(factory=trio.Event)
    writes: int = 0
    jobs_written: int = 0

    def submit(self, job: PersistJob | InstallJob | StorageTask) -> None:
        self._queue.submit(job)
        self._wakeup.set()

    @property
    def idle(self) -> bool:
        return self._queue.idle

    async def run(self) -> None:
        queue = self._queue
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while not queue.idle:
                item = queue.take()
                if isinstance(item, MergedWrite):
                    await self._write(item)
                elif isinstance(item, InstallJob):
                    await self._install(item)
                else:
                    await self._task(item)

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
        p = installed(job)
        await self.on_persisted(p.index, p.term, p.hard_state)

    async def _write(self, merged: MergedWrite) -> None:
        if merged.stores:
            start = trio.current_time()

            def write() -> None:
                self.write(
                    hard_state=merged.hard_state,
                    truncate_from=merged.truncate_from,
                    entries=merged.entries,
                )

            await self._run_blocking(write)
            self.observe_fsync(trio.current_time() - start)
            self.writes += 1
        self.jobs_written += merged.jobs
        report = self._queue.written(merged)
        for msg in merged.after_persist:
            self.send(msg)
        if report is not None:
            await self.on_persisted(report.index, report.term, report.hard_state)
