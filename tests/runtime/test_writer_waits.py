"""The storage writer's acknowledgements that depend on an *earlier* item of its queue (s26
durability audit): nothing leaves before the state it claims is durable, even when the job
that carries the claim has nothing of its own to store, or sits behind a leader's snapshot
whose file is still being written.

* A follower re-acknowledges entries it already holds (a duplicate or retried append) and
  answers a commit: its Ready carries ``messages_after_persist`` and at most a commit-only
  hard state, which the write queue does not sync (``WriteQueue.take``). The acks must still
  wait for the write in flight that holds those entries (FIFO), on the thread and on the loop.
* A snapshot from the leader is stored in two parts (``StorageWriter.stage``): its file off
  the queue, then its record switched as the install's item. The ``InstallSnapshotResponse``
  that says "installed" (core: compaction.py ``_snapshot_answer``) and the acks of the
  entries after it are in persist jobs queued behind that item: they wait for the switch,
  not just for their own writes.

Each check is shown to catch a writer that breaks the order (the mutants below), as
tests/runtime/test_writer.py does for the acks of a job's own write.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial

import trio

from tests.runtime.test_writer import (
    WAIT,
    BlockingStore,
    RecordingStore,
    TimedStore,
    ack,
    acks_follow_fsync,
    inline_writer,
    job,
    make,
    wait_until,
    written,
)
from univrs.raft.interpreter import InstallJob
from univrs.raft.messages import (
    Entry,
    HardState,
    InstallSnapshotResponse,
    Membership,
    Message,
    SnapshotMeta,
)
from univrs.runtime.writer import PersistJob, StorageTask, StorageWriter

# ---------------------------------------------------------------- acks with nothing to store


class AcksWhatAppendsNothing(StorageWriter):
    """A mutant: a job that appends nothing (no entries, no truncation) is acknowledged when
    it is submitted, as if an ack that adds no entry had nothing to wait for."""

    def submit(self, job: PersistJob | InstallJob | StorageTask, *, now: bool = False) -> None:
        if isinstance(job, PersistJob) and not job.entries and job.truncate_from is None:
            for msg in job.after_persist:
                self.send(msg)
            job = PersistJob(
                hard_state=job.hard_state, truncate_from=None, entries=(), after_persist=()
            )
        super().submit(job, now=now)


def reacks() -> list[PersistJob]:
    """What a follower's Readies hand the writer while entries 1-2 are being written: a
    duplicate append's ack (nothing to store), then a commit's (a commit-only hard state,
    which the queue defers to the next synced write)."""
    return [
        PersistJob(hard_state=None, truncate_from=None, entries=(), after_persist=(ack(2),)),
        PersistJob(
            hard_state=HardState(term=2, commit=2),
            truncate_from=None,
            entries=(),
            after_persist=(ack(2),),
        ),
    ]


async def reack_behind_a_thread_write(cls: type[StorageWriter]) -> BlockingStore:
    store = BlockingStore()
    writer = make(cls, store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit(job(1, 2, hs=HardState(term=2), after=(ack(2),)))
        await wait_until(store.started.is_set, "the first write to start")
        for later in reacks():
            writer.submit(later)
        for _ in range(20):  # the write is still in its fsync: nothing may be claimed
            await trio.lowlevel.checkpoint()
        store.record("released", None)
        store.release.set()
        await wait_until(partial(written, writer, 3), "the three jobs to be written")
        nursery.cancel_scope.cancel()
    return store


async def reack_behind_a_loop_write(cls: type[StorageWriter]) -> TimedStore:
    store = TimedStore()
    store.delays = [0.02]
    writer = inline_writer(cls, store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        # All in one step: the first write runs on the loop once this step ends; the others
        # wait for it in the queue.
        writer.submit(job(1, 2, hs=HardState(term=2), after=(ack(2),)))
        for later in reacks():
            writer.submit(later)
        await wait_until(partial(written, writer, 3), "the three jobs to be written")
        nursery.cancel_scope.cancel()
    return store


async def test_an_ack_with_nothing_to_store_waits_for_the_write_in_flight() -> None:
    store = await reack_behind_a_thread_write(StorageWriter)
    assert acks_follow_fsync(store.events) == []
    kinds = [kind for kind, _ in store.events]
    assert kinds[0] == "released"
    # One synced write: the re-acks and the commit-only hard state stored nothing of their own.
    assert kinds.count("durable") == 1 and kinds.count("send") == 3


async def test_an_ack_with_nothing_to_store_waits_for_the_write_on_the_loop() -> None:
    store = await reack_behind_a_loop_write(StorageWriter)
    assert store.threads == [threading.get_ident()]  # the write ran on the loop
    assert acks_follow_fsync(store.events) == []
    assert [kind for kind, _ in store.events][:2] == ["durable", "send"]


async def test_the_checks_catch_a_writer_that_acks_what_appends_nothing_at_once() -> None:
    for problems in (
        acks_follow_fsync((await reack_behind_a_thread_write(AcksWhatAppendsNothing)).events),
        acks_follow_fsync((await reack_behind_a_loop_write(AcksWhatAppendsNothing)).events),
    ):
        assert problems == ["ack of 2 before it was durable (0)"] * 2, problems


# ---------------------------------------------------------------- behind a staged install

META = SnapshotMeta(index=60, term=2, membership=Membership(voters=frozenset({"a", "b"})))
SIZE = 4096


class HeldFile:
    """A leader's snapshot stored in two parts (``StagedInstall``): ``write_file`` blocks until
    released (a large file on a slow disk), ``switch`` records the install durable."""

    def __init__(self, store: RecordingStore) -> None:
        self.store = store
        self.started = threading.Event()
        self.release = threading.Event()
        self.switched = False

    def write_file(self) -> None:
        self.started.set()
        assert self.release.wait(WAIT), "never released"

    def switch(self) -> None:
        self.store.record("durable", (META.index, 0))
        self.store.record("switched", META.index)
        self.switched = True

    def cancel(self) -> None:
        self.release.set()


class SkipsAWaitingInstall(StorageWriter):
    """A mutant: an install whose file is still being written lets the items behind it go on
    (switched later, when its file is written), as if only the snapshot's own report
    depended on it."""

    def _start_install(self, job: InstallJob) -> None:
        staging = self._staged.get(id(job))
        if staging is not None and staging.result is None:
            staging.waiting = True  # ``_file_written`` switches it
            return  # not busy: ``_start_next`` takes the next item
        super()._start_install(job)


def installed_answer() -> InstallSnapshotResponse:
    return InstallSnapshotResponse(
        term=2, src="b", dst="a", snapshot_index=META.index, offset=SIZE, success=True
    )


def claims_follow_install(events: Sequence[tuple[str, object]]) -> list[str]:
    """What was sent or reported before the snapshot's record was switched."""
    problems: list[str] = []
    switched = False
    for kind, what in events:
        if kind == "switched":
            switched = True
        elif kind in ("send", "persisted") and not switched:
            problems.append(f"{kind} {what!r} before the snapshot was installed")
    return problems


async def answer_behind_a_staged_install(
    cls: type[StorageWriter], *, claims: bool = False
) -> RecordingStore:
    """The snapshot's file held while an answer and an append wait behind its install, then
    released. ``claims``: ``cls`` is a mutant expected to send before the release, waited for
    (with a deadline) rather than given a fixed number of checkpoints, which a loaded machine's
    storage thread could outlast."""
    store = TimedStore()
    writer = cls(
        write=store.append,
        send=lambda msg: store.record("send", msg),
        on_persisted=lambda index, _term, _hs: store.record("persisted", index),
        in_thread=True,
    )
    held = HeldFile(store)
    install = InstallJob(meta=META, data=b"s" * SIZE)
    answers: tuple[Message, ...] = (installed_answer(),)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        # The Ready of the snapshot's last chunk: its install (staged), then its write (the
        # new commit index) with the "installed" answer; then the next append's.
        writer.stage(install, held)
        writer.submit(install)
        writer.submit(
            PersistJob(
                hard_state=HardState(term=2, commit=META.index),
                truncate_from=None,
                entries=(),
                after_persist=answers,
            )
        )
        writer.submit(
            PersistJob(
                hard_state=None,
                truncate_from=None,
                entries=(Entry(index=61, term=2),),
                after_persist=(ack(61),),
            )
        )
        await wait_until(held.started.is_set, "the snapshot's file to be written")
        if claims:
            await wait_until(
                lambda: any(kind == "send" for kind, _ in store.events), "the mutant's send"
            )
        for _ in range(20):  # its file is being written: nothing behind it may be claimed
            await trio.lowlevel.checkpoint()
        store.record("file released", None)
        held.release.set()
        await wait_until(
            lambda: held.switched and writer.jobs_written == 2, "the install and the writes"
        )
        nursery.cancel_scope.cancel()
    return store


async def test_the_installed_answer_waits_for_the_switch_of_a_staged_install() -> None:
    store = await answer_behind_a_staged_install(StorageWriter)
    assert claims_follow_install(store.events) == []
    kinds = [kind for kind, _ in store.events]
    assert kinds[:4] == ["file released", "durable", "switched", "persisted"], kinds
    sent = [what for kind, what in store.events if kind == "send"]
    assert sent == [installed_answer(), ack(61)]
    assert acks_follow_fsync(store.events) == []


async def test_the_check_catches_a_writer_that_passes_a_waiting_install() -> None:
    store = await answer_behind_a_staged_install(SkipsAWaitingInstall, claims=True)
    problems = claims_follow_install(store.events)
    assert any("send InstallSnapshotResponse" in p for p in problems), problems
