"""ReadCoalescer with fake reads (no sockets, no disk). Proposal batching is the runtime's:
tests/runtime/test_batching.py."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from univrs.api.batcher import ReadCoalescer
from univrs.errors import Unavailable


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
