"""The storage writer: works through the node's write queue on one long-lived worker thread.

The write queue (univrs/raft/interpreter.py ``WriteQueue``, shared with the simulator) holds
every Ready's ``PersistJob``, the leader's snapshots to install (``InstallJob``) and other
storage work (``StorageTask``: the node's own snapshots, compaction) in FIFO order. The writer
takes the consecutive persist jobs at the head of the queue (up to the next install or
storage task) as one merged write (one LMDB write transaction, one fsync: group commit), and
only then sends the messages that depended on that state (``messages_after_persist``: vote
grants, append acks) and reports ``persisted`` to the driver. With many proposals in flight
this is one fsync per batch, not per entry. Which hard state needs a sync of its own, and what
each write reports, is the queue's rule, not ours.

Theory of operation (issue 14: the fsync hand-off). One item is in progress at a time. The
blocking call (the synced transaction, a snapshot's install, a storage task) runs on the
writer's own worker thread (``_Worker``), started once and fed through a queue, rather than a
``trio.to_thread.run_sync`` hand-off per group commit (a thread-cache lookup, a capacity
limiter, a cancel scope and a task to wake each time: 66 against 41 us of CPU and 243 against
181 us of wall time per hand-off, measured). When the call returns, the thread hands the
completion back to the Trio loop (``TrioToken.run_sync_soon``), where, in this order:

1. the write queue learns the write is durable (``WriteQueue.written``);
2. the write's ``after_persist`` messages go to the transport (``send``: queued, never awaited);
3. the ``Persisted`` report goes to the driver (``on_persisted``, synchronous: the driver
   keeps it and is woken, unless it is a follower's report that may wait for its next step:
   step.py ``_on_persisted``);
4. the next item of the queue starts at once.

Nothing of this runs before the call that made the state durable has returned: an ack, a vote
grant or a persisted report never precedes its fsync (tests/runtime/test_writer.py holds the
writer to that, and shows the check catches a writer that sends first). Nor is anything
acknowledged from the worker thread itself: the thread only runs the blocking call.

A snapshot from the leader whose storage can write it in two parts (``stage``; univrs/storage/
snapshot_install.py) has its file written from the moment it is queued, in a thread of its own
off the queue; its item waits for the file when it reaches the head, then only switches the
record (one small transaction). Nothing queued behind it waits for a transaction of the
snapshot's size (docs/state-at-scale.md, fourteenth increment); on shutdown the file is
cancelled after its piece in progress and its thread joined.

A failing write is fatal (the node cannot go on with an unknown durable state): ``run``
re-raises it, which stops the runtime, as before. A failing ``StorageTask`` goes to its
waiter. On shutdown (``run`` cancelled) a call in progress finishes (a started transaction
commits and syncs) before ``run`` returns, so storage is never closed under a running
transaction; work still queued is dropped, as a crash would.

``in_thread=False`` (in-memory storage in tests) runs each call on the Trio loop instead, from
a ``run_sync_soon`` callback: the same order and the same asynchrony, no thread.

Small writes on the loop (issue 14, session 24: ``inline_bytes``, the node setting
``raft.inline_write_bytes``). A write of entries of at most ``inline_bytes`` bytes in all (an
entry counted ``ENTRY_OVERHEAD`` bytes more than its data), with no truncation, runs its
synced transaction on the Trio loop itself, not on the worker thread. At one client every
write is such a write, and the thread's hand-offs cost more than the write: the thread must be
woken, take the GIL from the loop (which holds it until it blocks), run, and hand the
completion back through the loop's wake-up socket; on two busy cores each of those waits for a
core (docs/performance.md, "Round 24"). On the loop the write runs at once inside the driver's
``submit(now=True)``, in the step that produced it (session 27: right after that step's
messages went out and before the rest of its Ready, such as a follower's apply of what the
same append committed; the ack leaves as soon as the write returns), and its completion
follows at once, still inside that call: the acks go to the transport and the report to
``on_persisted``, which only keeps it and wakes the driver for a later step (step.py
``_on_persisted``): the core never learns of a write inside the step that submitted it. A
small write the queue starts otherwise (after an earlier item completes) runs from a
``run_sync_soon`` callback, as before session 27.

The loop is blocked meanwhile (py-lmdb releases the GIL in the commit; nothing else on the
node needs it then), so only small writes go there, and only while that stays short:

* a write (on either path) that took longer than ``inline_max_seconds`` sends the next writes
  to the thread until one is quick again: a stalling disk blocks the loop for one write, not
  for every one;
* the write on the loop never waits for another writer of the store (a staged snapshot's
  piece holding the store's write turn, the start records) nor grows the map (which waits
  for every reader of the store): it is the storage's ``write_nowait``, which refuses
  (``WouldWait``, nothing written) where it would wait, and then the same write runs on the
  thread, which may wait.

The order is the same on both paths: nothing is acknowledged before the call returned. A
write still queued on the loop when the writer stops is dropped, as a crash would drop it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import trio

from univrs.errors import WouldWait
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

# A write's entries run on the loop only while writes take at most this long (seconds).
INLINE_MAX_SECONDS = 0.005
# Bytes an entry counts for beyond its data (its key, term and kind), for ``inline_bytes``.
ENTRY_OVERHEAD = 64

__all__ = [
    "InstallJob",
    "MergedWrite",
    "PersistJob",
    "StagedInstall",
    "StorageTask",
    "StorageWriter",
    "merge_jobs",
]


@attrs.frozen
class _Result:
    """What a blocking call returned (``error`` None) or raised."""

    value: Any = None
    error: BaseException | None = None


def _capture(fn: Callable[[], Any]) -> tuple[_Result, float]:
    """Run ``fn``; its result and how long it took (seconds)."""
    start = time.perf_counter()
    try:
        result = _Result(fn())
    except BaseException as exc:  # handed to the Trio loop, which decides
        result = _Result(error=exc)
    return result, time.perf_counter() - start


# A completion: the call's result and how long the call itself took (seconds).
_Done = Callable[[_Result, float], None]


@attrs.frozen(kw_only=True)
class StorageTask:
    """Other storage work (the node's own snapshot, compaction) run in FIFO order with the
    writes, so it never races an install or an append; the result goes to ``waiter``."""

    fn: Callable[[], Any]
    waiter: Waiter[Any]


class StagedInstall(Protocol):
    """A snapshot from the leader stored in two parts (univrs/storage/snapshot_install.py
    ``InstallFile``): its data written off the writer's queue, then its record switched as
    the install's item of the queue."""

    def write_file(self) -> None: ...

    def switch(self) -> None: ...

    def cancel(self) -> None: ...


@attrs.define(eq=False)
class _Staging:
    """An install whose file is being written off the queue (``StorageWriter.stage``)."""

    save: StagedInstall
    thread: threading.Thread | None = None
    result: _Result | None = None  # set when the file is written (or failed)
    waiting: bool = False  # its item reached the head of the queue and waits for the file


class _Worker:
    """The writer's one long-lived thread: runs blocking calls in order, one at a time, and
    hands each completion back to the Trio loop of ``token``."""

    def __init__(self, token: trio.lowlevel.TrioToken, name: str) -> None:
        self._token = token
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], _Done] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], Any], done: _Done) -> None:
        self._jobs.put((fn, done))

    def stop(self) -> None:
        """Let the thread finish the call in progress (if any), then exit."""
        self._jobs.put(None)

    def join(self) -> None:
        self._thread.join()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, done = job
            result, seconds = _capture(fn)
            try:
                self._token.run_sync_soon(done, result, seconds)
            except trio.RunFinishedError:
                return  # the loop is gone: nobody is left to tell


@attrs.define(eq=False)
class StorageWriter:
    """The driver hands it jobs with ``submit`` (never blocks); ``run`` is its task (it owns
    the worker thread's lifetime and raises a failed write)."""

    # Blocking, one synced transaction (``LogStorage.append``).
    write: AppendLog
    send: Callable[[Message], None]
    # (index, term) of the last durable entry (0, 0 if the write held none) and the hard state
    # it made durable (None if none): the core learns both (persisted, persisted_hard_state).
    # Called on the Trio loop, outside any task of the driver or (a small write started by
    # ``submit(now=True)``) inside the driver's step: it must only record and wake.
    on_persisted: Callable[[int, int, HardState | None], None]
    observe_fsync: Callable[[float], None] = lambda _seconds: None
    # Sends a write's ``after_persist`` messages together, written at once where the
    # transport can (``Transport.send_now``, s17-lat1); None: one ``send`` each.
    send_now: Callable[[Sequence[Message]], None] | None = None
    in_thread: bool = True  # False only for in-memory storage in tests (no blocking I/O)
    # Writes of entries up to this many bytes run on the loop, not the thread (0: never; see
    # the module docstring), while writes take at most ``inline_max_seconds``.
    inline_bytes: int = 0
    inline_max_seconds: float = INLINE_MAX_SECONDS
    # The same write as ``write``, refusing to wait (``WouldWait``, nothing written) for
    # another writer or a map growth: a small write runs it on the loop, and runs ``write``
    # on the thread when it refuses. None: every write on the thread.
    write_nowait: AppendLog | None = None
    # (meta, data) -> None; blocking, durable: stores a snapshot and drops the log it covers.
    install: Callable[[SnapshotMeta, bytes], None] | None = None
    _queue: WriteQueue[StorageTask] = attrs.field(factory=WriteQueue)
    _token: trio.lowlevel.TrioToken | None = attrs.field(default=None, init=False)
    _worker: _Worker | None = attrs.field(default=None, init=False)
    _busy: bool = attrs.field(default=False, init=False)  # an item is in progress
    # The item in progress is a write whose completion calls ``on_persisted``.
    _reporting: bool = attrs.field(default=False, init=False)
    _stopped: bool = attrs.field(default=False, init=False)
    _failure: BaseException | None = attrs.field(default=None, init=False)
    _failed: trio.Event = attrs.field(factory=trio.Event, init=False)
    # ``submit(now=True)`` is starting the queue: a small write runs in that call.
    _now: bool = attrs.field(default=False, init=False)
    # The last write took longer than ``inline_max_seconds``: the next go to the thread.
    _slow: bool = attrs.field(default=False, init=False)
    _install_done: dict[int, Callable[[], None]] = attrs.field(factory=dict, init=False)
    # Installs whose data is written off the queue (``stage``), by id of their job.
    _staged: dict[int, _Staging] = attrs.field(factory=dict, init=False)
    writes: int = 0
    jobs_written: int = 0

    def when_stored(self, job: InstallJob, fn: Callable[[], None]) -> None:
        """Call ``fn`` on the loop once ``job`` (to be submitted next) is stored (the apply
        loop adopts a leader's snapshot into a persistent state only then)."""
        self._install_done[id(job)] = fn

    def stage(self, job: InstallJob, save: StagedInstall) -> None:
        """Store ``job`` (to be submitted next) through ``save``: its file is written from now
        on, in a thread of its own, off the queue (the items before it go on meanwhile); its
        item in the queue waits for the file, then only switches the record (one small
        transaction), so nothing queued behind it waits for a transaction of the snapshot's
        size (docs/state-at-scale.md, fourteenth increment)."""
        staging = _Staging(save)
        self._staged[id(job)] = staging
        token = trio.lowlevel.current_trio_token()

        def write() -> None:
            result, _ = _capture(save.write_file)
            # The loop may be gone (the node stopped): nothing to report to then.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(lambda: self._file_written(job, staging, result))

        if not self.in_thread:
            token.run_sync_soon(write)
            return
        staging.thread = threading.Thread(target=write, name="univrs-snapshot-install", daemon=True)
        staging.thread.start()

    def _file_written(self, job: InstallJob, staging: _Staging, result: _Result) -> None:
        staging.result = result
        if staging.waiting and not self._stopped:
            staging.waiting = False
            self._switch_install(job, staging)

    def submit(self, job: PersistJob | InstallJob | StorageTask, *, now: bool = False) -> None:
        """Queue ``job`` behind everything submitted before; start it if the writer is idle.

        ``now`` (the driver's step, effects.py ``submit_write``): a small write this starts runs
        at once, inside this call, not from a callback once the caller's step ends: when
        ``submit`` returns, its transaction has returned, its acks are sent and its report is
        handed to ``on_persisted`` (which only records and wakes). The caller must be fine
        with both happening inside its own call (see the module docstring)."""
        self._queue.submit(job)
        if not self._busy:
            self._now = now
            try:
                self._start_next()
            finally:
                self._now = False

    @property
    def idle(self) -> bool:
        return self._queue.idle and not self._busy

    @property
    def reports_soon(self) -> bool:
        """A write is in progress whose completion will call ``on_persisted`` (unless the
        writer fails, which stops the node)."""
        return self._reporting and not self._stopped

    async def run(self) -> None:
        """Until cancelled: re-raise a failed write (fatal). On cancellation, let the call in
        progress finish before returning."""
        try:
            await self._failed.wait()
            assert self._failure is not None
            raise self._failure
        finally:
            self._stopped = True
            worker, self._worker = self._worker, None
            staged, self._staged = list(self._staged.values()), {}
            for staging in staged:
                staging.save.cancel()  # stops after the piece in progress
            if worker is not None:
                worker.stop()
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(worker.join)
            for staging in staged:
                thread = staging.thread
                if thread is not None:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(thread.join)

    # ------------------------------------------------------------------ on the Trio loop

    def _start_next(self) -> None:
        """Start the oldest queued item (writes with nothing to store complete at once)."""
        q = self._queue
        while not self._busy and not q.idle and not self._stopped:
            item = q.take()
            if isinstance(item, MergedWrite):
                if item.stores:
                    self._start_write(item)
                else:  # only messages that waited for earlier (durable) writes
                    self._written(item)
            elif isinstance(item, InstallJob):
                self._start_install(item)
            else:
                self._start_task(item)

    def _start_write(self, merged: MergedWrite) -> None:
        # ``WriteQueue.written`` reports a write that holds entries or a hard state.
        self._reporting = bool(merged.entries) or merged.hard_state is not None

        def write_with(append: AppendLog) -> Callable[[], None]:
            return lambda: append(
                hard_state=merged.hard_state,
                truncate_from=merged.truncate_from,
                entries=merged.entries,
            )

        nowait = self.write_nowait
        here = write_with(nowait) if nowait is not None and self._small(merged) else None
        self._call(
            write_with(self.write),
            lambda result, seconds: self._wrote(merged, result, seconds),
            here=here,
        )

    def _small(self, merged: MergedWrite) -> bool:
        """Does ``merged`` run on the loop (see the module docstring)?"""
        limit = self.inline_bytes
        if limit <= 0 or self._slow or merged.truncate_from is not None:
            return False
        size = 0
        for entry in merged.entries:
            size += len(entry.data) + ENTRY_OVERHEAD
            if size > limit:
                return False
        return True

    def _start_install(self, job: InstallJob) -> None:
        staging = self._staged.get(id(job))
        if staging is not None:
            if staging.result is None:  # its file is still being written: wait for it
                self._busy = True
                staging.waiting = True
            else:
                self._switch_install(job, staging)
            return
        install = self.install
        assert install is not None, "a snapshot arrived but the writer cannot store one"
        self._call(
            lambda: install(job.meta, job.data), lambda result, _s: self._installed(job, result)
        )

    def _switch_install(self, job: InstallJob, staging: _Staging) -> None:
        """The staged install's item: its file is written; switch the record (one small
        transaction in the writer's thread), or fail as a failed install does."""
        assert staging.result is not None
        self._staged.pop(id(job), None)
        if staging.result.error is not None:
            self._busy = True  # as if it had run: ``_installed`` stops the writer
            self._installed(job, staging.result)
            return
        self._call(staging.save.switch, lambda result, _s: self._installed(job, result))

    def _start_task(self, task: StorageTask) -> None:
        self._call(task.fn, lambda result, _s: self._task_done(task, result))

    def _call(
        self, fn: Callable[[], Any], done: _Done, *, here: Callable[[], Any] | None = None
    ) -> None:
        """Run ``fn`` on the worker thread (or on the loop when there is no thread), then
        ``done(result, seconds)`` on the loop. ``here``: run it on the loop first, and ``fn``
        on the thread only if it refuses to wait (``WouldWait``: it wrote nothing)."""
        self._busy = True
        token = self._token
        if token is None:
            token = self._token = trio.lowlevel.current_trio_token()

        def guarded(result: _Result, seconds: float) -> None:
            try:
                done(result, seconds)
            except BaseException as exc:  # a run_sync_soon callback must never raise into trio
                self._fail(exc)

        if not self.in_thread:
            token.run_sync_soon(lambda: guarded(*_capture(fn)))
            return
        if here is not None:

            def on_the_loop() -> None:
                if self._stopped:
                    return  # dropped, as a crash drops a queued write
                result, seconds = _capture(here)
                if isinstance(result.error, WouldWait):
                    self._on_thread(token, fn, guarded)  # there it may wait
                    return
                guarded(result, seconds)

            if self._now:  # started by the driver's step: run it there (``submit``)
                self._now = False  # one write: what starts after it is called back
                on_the_loop()
            else:
                token.run_sync_soon(on_the_loop)
            return
        self._on_thread(token, fn, guarded)

    def _on_thread(
        self, token: trio.lowlevel.TrioToken, fn: Callable[[], Any], done: _Done
    ) -> None:
        if self._worker is None:
            self._worker = _Worker(token, "univrs-storage-writer")
        self._worker.run(fn, done)

    def _wrote(self, merged: MergedWrite, result: _Result, seconds: float) -> None:
        self._reporting = False
        self._slow = seconds > self.inline_max_seconds
        if self._check(result):
            self.observe_fsync(seconds)
            self.writes += 1
            self._written(merged)
            self._next()

    def _written(self, merged: MergedWrite) -> None:
        """``merged`` is durable: the queue learns it, then the acks go, then the report."""
        self.jobs_written += merged.jobs
        report = self._queue.written(merged)
        if self.send_now is not None:
            self.send_now(merged.after_persist)  # the acks leave now, not a round later
        else:
            for msg in merged.after_persist:
                self.send(msg)
        if report is not None:
            self.on_persisted(report.index, report.term, report.hard_state)

    def _installed(self, job: InstallJob, result: _Result) -> None:
        if self._check(result):
            self.writes += 1
            p = installed(job)
            self.on_persisted(p.index, p.term, p.hard_state)
            done = self._install_done.pop(id(job), None)
            if done is not None:
                done()
            self._next()

    def _task_done(self, task: StorageTask, result: _Result) -> None:
        if result.error is not None:
            task.waiter.fail(result.error)  # handed to the caller, who decides
        else:
            task.waiter.set(result.value)
        self._next()

    def _check(self, result: _Result) -> bool:
        """A failed write or install stops the writer and is raised by ``run``."""
        if result.error is not None:
            self._fail(result.error)
            return False
        return True

    def _next(self) -> None:
        self._busy = False
        self._start_next()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._stopped = True
        self._failed.set()
