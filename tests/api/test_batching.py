"""ProposalBatcher and ReadCoalescer with fake proposals and reads (no sockets, no disk)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from univrs.api.batcher import ProposalBatcher, ReadCoalescer
from univrs.errors import Unavailable


class FakeLog:
    """Proposals that complete when the test says; records when each one started."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.release: dict[int, trio.Event] = {}

    async def propose(self, n: int) -> int:
        self.started.append(n)
        self.release[n] = trio.Event()
        await self.release[n].wait()
        return n


async def test_writes_arriving_while_the_pipeline_is_full_go_together() -> None:
    batcher = ProposalBatcher(depth=1)
    log = FakeLog()
    results: list[int] = []

    async def write(n: int) -> None:
        results.append(await batcher.run(lambda: log.propose(n)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert log.started == [0]  # capacity free: at once
        for n in range(1, 11):
            nursery.start_soon(write, n)
        await trio.testing.wait_all_tasks_blocked()
        assert log.started == [0]  # the pipeline is full: they wait together
        log.release[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(log.started[1:]) == list(range(1, 11))  # released as one batch
        assert batcher.batches == 2
        for n in range(1, 11):
            log.release[n].set()
    assert sorted(results) == list(range(11))


async def test_a_lone_writer_never_waits_and_abandoned_batches_do_not_leak() -> None:
    batcher = ProposalBatcher(depth=1)
    log = FakeLog()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run, lambda: log.propose(0))
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as waiting:
            async with trio.open_nursery() as inner:
                for n in range(1, 4):
                    inner.start_soon(batcher.run, lambda n=n: log.propose(n))
                await trio.testing.wait_all_tasks_blocked()
                waiting.cancel()  # every waiting member gives up (deadlines)
        log.release[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert log.started == [0]
        # Nothing is in flight any more: the next write goes at once.
        nursery.start_soon(batcher.run, lambda: log.propose(9))
        await trio.testing.wait_all_tasks_blocked()
        assert log.started == [0, 9]
        log.release[9].set()


async def test_reads_share_a_confirmation_requested_after_they_arrived() -> None:
    calls: list[trio.Event] = []
    answers = iter(range(100, 200))

    async def read_index() -> int:
        done = trio.Event()
        calls.append(done)
        await done.wait()
        return next(answers)

    got: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        coalescer = ReadCoalescer(nursery, read_index)

        async def read(n: int) -> None:
            got[n] = await coalescer.wait()

        nursery.start_soon(read, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert len(calls) == 1
        for n in range(1, 51):  # arrive while the first confirmation is in flight
            nursery.start_soon(read, n)
        await trio.testing.wait_all_tasks_blocked()
        assert len(calls) == 1  # they wait for the next one, not this one
        calls[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert got == {0: 100}
        assert len(calls) == 2  # one more confirmation for all fifty
        calls[1].set()
        await trio.testing.wait_all_tasks_blocked()
        assert got == {0: 100, **{n: 101 for n in range(1, 51)}}
        assert coalescer.requests == 2


async def test_a_failed_confirmation_fails_every_reader_of_its_round() -> None:
    async def read_index() -> int:
        await trio.sleep(0)
        raise Unavailable("no leader")

    failures = 0
    async with trio.open_nursery() as nursery:
        coalescer = ReadCoalescer(nursery, read_index)

        async def read() -> None:
            nonlocal failures
            with pytest.raises(Unavailable):
                await coalescer.wait()
            failures += 1

        for _ in range(5):
            nursery.start_soon(read)
    assert failures == 5
