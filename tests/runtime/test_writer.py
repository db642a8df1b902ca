"""The storage writer, on its worker thread or (a small write) on the loop: nothing is
acknowledged before it is durable.

A blocking ``write`` stands in for the synced LMDB transaction; it records when the data
becomes durable (when it returns), and the writer's ``send`` and ``on_persisted`` record what
they claim. ``acks_follow_fsync`` checks every claim against the durable records before it;
the mutant writer (it sends the acknowledgements as soon as a job is submitted, the ordering
the Ready contract forbids) shows the check catches the wrong order.
"""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

import pytest
import trio

from univrs.errors import WouldWait
from univrs.raft.messages import (
    AppendEntriesResponse,
    Entry,
    HardState,
    Message,
    RequestVoteResponse,
)
from univrs.runtime.writer import InstallJob, PersistJob, StorageTask, StorageWriter
from univrs.storage.log_store import LogStore

WAIT = 30.0


async def wait_until(predicate: Callable[[], object], what: str) -> None:
    """Poll ``predicate`` (real time: the writer's thread runs on its own) until it holds."""
    with trio.fail_after(WAIT):
        while not predicate():
            await trio.sleep(0.005)
    assert predicate(), what


class RecordingStore:
    """The events of a test's writer, in order, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, object]] = []

    def record(self, kind: str, what: object) -> None:
        with self.lock:
            self.events.append((kind, what))

    def durable(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """The transaction (and its fsync) returned."""
        last = entries[-1].index if entries else 0
        term = hard_state.term if hard_state is not None else 0
        self.record("durable", (last, term))


class BlockingStore(RecordingStore):
    """A storage ``append`` that blocks until released; a record per durable write."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_with: Exception | None = None

    def append(
        self, *, hard_state: HardState | None, truncate_from: int | None, entries: Sequence[Entry]
    ) -> None:
        self.started.set()
        assert self.release.wait(WAIT), "never released"
        if self.fail_with is not None:
            raise self.fail_with
        self.durable(hard_state, entries)


def acks_follow_fsync(events: Sequence[tuple[str, object]]) -> list[str]:
    """What in ``events`` was claimed before it was durable (empty: nothing)."""
    durable_index, durable_term = 0, 0
    problems = []
    for kind, what in events:
        if kind == "durable":
            assert isinstance(what, tuple)
            durable_index = max(durable_index, what[0])
            durable_term = max(durable_term, what[1])
        elif kind == "send" and isinstance(what, AppendEntriesResponse):
            if what.index > durable_index:
                problems.append(f"ack of {what.index} before it was durable ({durable_index})")
        elif kind == "send" and isinstance(what, RequestVoteResponse):
            if what.term > durable_term:
                problems.append(f"vote in term {what.term} before the term was durable")
        elif kind == "persisted":
            assert isinstance(what, int)
            if what > durable_index:
                problems.append(f"persisted {what} reported before it was durable")
    return problems


def ack(index: int) -> AppendEntriesResponse:
    return AppendEntriesResponse(term=2, src="b", dst="a", success=True, index=index)


def job(*indexes: int, hs: HardState | None = None, after: tuple[Message, ...] = ()) -> PersistJob:
    entries = tuple(Entry(index=i, term=2) for i in indexes)
    return PersistJob(hard_state=hs, truncate_from=None, entries=entries, after_persist=after)


class SendsFirst(StorageWriter):
    """A mutant: acknowledges a job when it is submitted, before its write."""

    def submit(self, job: PersistJob | InstallJob | StorageTask, *, now: bool = False) -> None:
        if isinstance(job, PersistJob):
            for msg in job.after_persist:
                self.send(msg)
            job = PersistJob(
                hard_state=job.hard_state,
                truncate_from=job.truncate_from,
                entries=job.entries,
                after_persist=(),
            )
        super().submit(job, now=now)


def make(cls: type[StorageWriter], store: BlockingStore) -> StorageWriter:
    return cls(
        write=store.append,
        send=lambda msg: store.record("send", msg),
        on_persisted=lambda index, _term, _hs: store.record("persisted", index),
        in_thread=True,
    )


async def run_two_jobs(cls: type[StorageWriter]) -> BlockingStore:
    """Job 1 (entries 1-2, a vote and an ack) is being written when job 2 (entry 3, its
    ack) arrives; then the disk is released."""
    store = BlockingStore()
    writer = make(cls, store)
    vote = RequestVoteResponse(term=2, src="b", dst="a", granted=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit(job(1, 2, hs=HardState(term=2, vote="a"), after=(vote, ack(2))))
        await wait_until(store.started.is_set, "the first write to start")
        writer.submit(job(3, after=(ack(3),)))
        # The first write is still in its fsync: nothing may have been claimed yet.
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        store.record("released", None)
        store.release.set()
        await wait_until(lambda: writer.jobs_written == 2, "both jobs to be written")
        nursery.cancel_scope.cancel()
    return store


async def test_nothing_is_acknowledged_or_reported_before_its_write_returns() -> None:
    store = await run_two_jobs(StorageWriter)
    assert acks_follow_fsync(store.events) == []
    kinds = [kind for kind, _ in store.events]
    assert kinds[0] == "released"  # nothing at all went out while the write was blocked
    assert kinds.count("durable") == 2 and kinds.count("send") == 3
    # Group commit: job 2 waited for job 1 and was written on its own, after it.
    assert [what for kind, what in store.events if kind == "persisted"] == [2, 3]


async def test_the_check_catches_a_writer_that_acknowledges_first() -> None:
    store = await run_two_jobs(SendsFirst)
    problems = acks_follow_fsync(store.events)
    assert problems and any("vote in term 2" in p for p in problems), problems
    assert any("ack of 3" in p for p in problems), problems


async def test_a_failed_write_stops_the_writer_and_acknowledges_nothing() -> None:
    store = BlockingStore()
    store.fail_with = OSError("disk gone")
    store.release.set()
    writer = make(StorageWriter, store)
    with pytest.raises(ExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            writer.submit(job(1, after=(ack(1),)))
            writer.submit(job(2, after=(ack(2),)))
    assert raised.group_contains(OSError, match="disk gone")
    assert store.events == []  # no ack, no report, and the second job never started


async def test_shutdown_waits_for_the_write_in_progress() -> None:
    """Cancelling the writer lets a started transaction finish (storage is closed after the
    runtime stops, never under a running write)."""
    store = BlockingStore()
    writer = make(StorageWriter, store)
    returned = trio.Event()
    scope = trio.CancelScope()

    async def run_writer() -> None:
        with scope:
            await writer.run()
        returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_writer)
        writer.submit(job(1, after=(ack(1),)))
        await wait_until(store.started.is_set, "the write to start")
        scope.cancel()
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        assert not returned.is_set()  # still waiting for the write
        store.release.set()
        with trio.fail_after(WAIT):
            await returned.wait()
    assert ("durable", (1, 0)) in store.events


# ---------------------------------------------------------------- small writes on the loop


class TimedStore(RecordingStore):
    """A storage ``append`` that returns after ``delay`` seconds (a real sleep: the fsync),
    recording which thread ran it and when it became durable."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []
        self.delays: list[float] = []  # the next writes' delays, first first (then 0)
        self.refusals: list[bool] = []  # the next ``append_nowait`` calls: refuse? (then no)

    def append(
        self, *, hard_state: HardState | None, truncate_from: int | None, entries: Sequence[Entry]
    ) -> None:
        self.threads.append(threading.get_ident())
        delay = self.delays.pop(0) if self.delays else 0.0
        if delay:
            time.sleep(delay)
        self.durable(hard_state, entries)

    def append_nowait(
        self, *, hard_state: HardState | None, truncate_from: int | None, entries: Sequence[Entry]
    ) -> None:
        """``append``, or ``WouldWait`` with nothing written when told to refuse."""
        if self.refusals and self.refusals.pop(0):
            self.record("refused", threading.get_ident())
            raise WouldWait("another writer holds the lock")
        self.append(hard_state=hard_state, truncate_from=truncate_from, entries=entries)


def data_job(index: int, size: int, *, truncate: int | None = None) -> PersistJob:
    """Entry ``index`` carrying ``size`` bytes, acknowledged after its write."""
    entry = Entry(index=index, term=2, data=b"x" * size)
    return PersistJob(
        hard_state=None, truncate_from=truncate, entries=(entry,), after_persist=(ack(index),)
    )


def inline_writer(
    cls: type[StorageWriter], store: TimedStore, *, max_seconds: float = 5.0
) -> StorageWriter:
    return cls(
        write=store.append,
        send=lambda msg: store.record("send", msg),
        on_persisted=lambda index, _term, _hs: store.record("persisted", index),
        in_thread=True,
        inline_bytes=1000,
        inline_max_seconds=max_seconds,
        write_nowait=store.append_nowait,
    )


def written(writer: StorageWriter, n: int) -> bool:
    return writer.jobs_written == n


async def write_all(writer: StorageWriter, jobs: Sequence[PersistJob]) -> None:
    """Submit ``jobs`` one after the other, each once the one before it is written."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for n, one in enumerate(jobs, start=1):
            writer.submit(one)
            await wait_until(partial(written, writer, n), f"job {n} to be written")
        nursery.cancel_scope.cancel()


async def test_a_small_write_runs_on_the_loop_and_is_acknowledged_after_it_returns() -> None:
    store = TimedStore()
    store.delays = [0.02]  # a fsync long enough that an early ack would show
    await write_all(inline_writer(StorageWriter, store), [data_job(1, 900)])
    assert store.threads == [threading.get_ident()]  # this test's thread runs the loop
    assert acks_follow_fsync(store.events) == []
    assert [kind for kind, _ in store.events] == ["durable", "send", "persisted"]


async def test_the_check_catches_an_inline_writer_that_acknowledges_first() -> None:
    store = TimedStore()
    await write_all(inline_writer(SendsFirst, store), [data_job(1, 900)])
    assert store.threads == [threading.get_ident()]
    assert acks_follow_fsync(store.events) == ["ack of 1 before it was durable (0)"]


async def test_a_small_write_submitted_now_is_durable_acked_and_reported_in_the_call() -> None:
    """``submit(now=True)`` (the driver's step, session 27): the small write runs inside the
    call, and its ack and report follow its return, still inside it."""
    store = TimedStore()
    store.delays = [0.02]
    writer = inline_writer(StorageWriter, store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit(data_job(1, 900), now=True)
        assert [kind for kind, _ in store.events] == ["durable", "send", "persisted"]
        assert store.threads == [threading.get_ident()] and writer.idle
        nursery.cancel_scope.cancel()
    assert acks_follow_fsync(store.events) == []


async def test_the_check_catches_a_writer_submitted_now_that_acknowledges_first() -> None:
    store = TimedStore()
    writer = inline_writer(SendsFirst, store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit(data_job(1, 900), now=True)
        nursery.cancel_scope.cancel()
    assert acks_follow_fsync(store.events) == ["ack of 1 before it was durable (0)"]


async def test_submitted_now_a_write_that_is_not_small_or_must_wait_is_called_back() -> None:
    """``now`` changes only a small write the call itself starts: a large write still goes
    to the thread, a write queued behind one in progress starts when that one completes
    (from its callback, not inside a later ``submit``), and a small write the storage
    refuses runs again on the thread; each is acknowledged after its own write."""
    store = TimedStore()
    store.delays = [0.2]  # the large write: long enough for the next submit to find it busy
    store.refusals = [False, True]  # job 2 on the loop; job 3 refused there
    writer = inline_writer(StorageWriter, store)
    loop = threading.get_ident()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit(data_job(1, 937), now=True)  # over inline_bytes: the thread
        writer.submit(data_job(2, 10), now=True)  # queued behind it
        assert not any(kind == "durable" for kind, _ in store.events)
        await wait_until(partial(written, writer, 2), "jobs 1 and 2 to be written")
        writer.submit(data_job(3, 10), now=True)  # refused on the loop: the thread
        assert [kind for kind, _ in store.events][-1] == "refused"
        await wait_until(partial(written, writer, 3), "job 3 to be written")
        nursery.cancel_scope.cancel()
    assert [t == loop for t in store.threads] == [False, True, False]
    assert acks_follow_fsync(store.events) == []


async def test_larger_writes_and_truncations_run_on_the_thread() -> None:
    store = TimedStore()
    # 1000 bytes at most, an entry counted 64 bytes over its data: 936 fits, 937 does not.
    jobs = [data_job(1, 936), data_job(2, 937), data_job(3, 10, truncate=3), data_job(4, 10)]
    await write_all(inline_writer(StorageWriter, store), jobs)
    loop = threading.get_ident()
    assert [t == loop for t in store.threads] == [True, False, False, True]
    assert acks_follow_fsync(store.events) == []


async def test_a_slow_write_sends_the_next_ones_to_the_thread_until_one_is_quick() -> None:
    """A stalling disk blocks the loop for one write, not for each: after a write that took
    longer than ``inline_max_seconds`` small writes go to the thread, and once one of them
    is quick they run on the loop again."""
    store = TimedStore()
    store.delays = [0.3, 0.3, 0.0, 0.0]
    writer = inline_writer(StorageWriter, store, max_seconds=0.1)
    await write_all(writer, [data_job(i, 10) for i in range(1, 6)])
    loop = threading.get_ident()
    # slow on the loop; then slow on the thread; quick on the thread; then the loop again
    assert [t == loop for t in store.threads] == [True, False, False, True, True]
    assert acks_follow_fsync(store.events) == []


async def test_no_write_runs_on_the_loop_when_inline_bytes_is_zero() -> None:
    store = TimedStore()
    writer = StorageWriter(
        write=store.append,
        send=lambda msg: store.record("send", msg),
        on_persisted=lambda index, _term, _hs: store.record("persisted", index),
        in_thread=True,
        write_nowait=store.append_nowait,
    )
    await write_all(writer, [data_job(1, 1)])
    assert store.threads and store.threads[0] != threading.get_ident()


async def test_a_write_that_would_wait_for_another_writer_runs_on_the_thread() -> None:
    """A small write whose storage refuses to wait (``WouldWait``: another writer holds the
    lock, or the map must grow) wrote nothing; it runs again on the thread, which may wait,
    and is acknowledged after that write only. The next small write is on the loop again."""
    store = TimedStore()
    store.refusals = [True]
    await write_all(inline_writer(StorageWriter, store), [data_job(1, 10), data_job(2, 10)])
    loop = threading.get_ident()
    assert [t == loop for t in store.threads] == [False, True]
    assert [kind for kind, _ in store.events] == [
        "refused",
        "durable",
        "send",
        "persisted",
        "durable",
        "send",
        "persisted",
    ]
    assert store.events[0] == ("refused", loop)
    assert acks_follow_fsync(store.events) == []


def test_an_lmdb_append_that_would_wait_writes_nothing(tmp_path: pathlib.Path) -> None:
    """``LogStore.append_nowait``: ``WouldWait`` and nothing written while another writer
    holds the store's turn (a staged snapshot's piece, univrs/storage/snapshot_file.py) or
    when the map must grow first; ``append`` waits, grows, and writes."""
    entry = Entry(index=1, term=1, data=b"x" * 100)
    with LogStore.open(tmp_path / "turn", node_id="n1") as store:
        holding, done = threading.Event(), threading.Event()

        def hold_the_turn() -> None:  # until told, or 5 s: a call that waits would get it
            with store._env.turn():
                holding.set()
                done.wait(5.0)

        holder = threading.Thread(target=hold_the_turn)
        holder.start()
        try:
            assert holding.wait(WAIT)
            with pytest.raises(WouldWait):
                store.append_nowait(hard_state=None, truncate_from=None, entries=[entry])
            assert store.last_index() == 0
        finally:
            done.set()
            holder.join()
        store.append_nowait(hard_state=None, truncate_from=None, entries=[entry])
        assert store.last_index() == 1
    big = [Entry(index=i, term=1, data=b"y" * 60_000) for i in range(1, 40)]
    with LogStore.open(tmp_path / "grow", node_id="n1", map_size=1 << 20) as store:
        with pytest.raises(WouldWait, match="grow"):
            store.append_nowait(hard_state=None, truncate_from=None, entries=big)
        assert store.last_index() == 0
        store.append(hard_state=None, truncate_from=None, entries=big)
        assert store.last_index() == 39


async def test_a_piece_holding_the_store_never_blocks_the_loop(tmp_path: pathlib.Path) -> None:
    """The review's case (F1): a snapshot piece takes the store's turn after the writer chose
    the loop for a small write. The loop must go on meanwhile: here the thread holding the
    turn lets go only when the loop says it ran, so a loop blocked by the write would hold
    both until the holder's own time-out (and the test fails on it)."""
    with LogStore.open(tmp_path / "log", node_id="n1") as store:
        writer = StorageWriter(
            write=store.append,
            send=lambda _msg: None,
            on_persisted=lambda _i, _t, _hs: None,
            in_thread=True,
            inline_bytes=1 << 14,
            write_nowait=store.append_nowait,
        )
        holding, loop_ran = threading.Event(), threading.Event()
        released_by: list[str] = []

        def hold_the_turn() -> None:
            with store._env.turn():
                holding.set()
                released_by.append("loop" if loop_ran.wait(5.0) else "time-out")

        holder = threading.Thread(target=hold_the_turn)
        holder.start()
        try:
            assert holding.wait(WAIT)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                writer.submit(data_job(1, 10))
                for _ in range(50):  # the loop runs while the write waits on the thread
                    await trio.lowlevel.checkpoint()
                loop_ran.set()
                await wait_until(partial(written, writer, 1), "the write to be written")
                nursery.cancel_scope.cancel()
        finally:
            loop_ran.set()
            holder.join()
        assert released_by == ["loop"]
        assert store.last_index() == 1
