"""ReadCoalescer with fake reads (no sockets, no disk). Proposal batching is the runtime's:
tests/runtime/test_batching.py."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from univrs.api.coalescer import ReadCoalescer
from univrs.errors import Unavailable
from univrs.runtime.waiter import Waiter


async def read_into(got: dict[int, int], coalescer: ReadCoalescer, n: int) -> None:
    """Reader ``n``: the index its read waited for, into ``got``."""
    got[n] = await coalescer.wait()


async def read_failing(failures: list[int], coalescer: ReadCoalescer) -> None:
    """A reader whose read must fail with ``Unavailable``: counted in ``failures`` once it
    did."""
    with pytest.raises(Unavailable):
        await coalescer.wait()
    failures.append(1)


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
        nursery.start_soon(read_into, got, coalescer, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert len(calls) == 1
        for n in range(1, 51):  # arrive while the first confirmation is in flight
            nursery.start_soon(read_into, got, coalescer, n)
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

    failures: list[int] = []
    async with trio.open_nursery() as nursery:
        coalescer = ReadCoalescer(nursery, read_index)
        for _ in range(5):
            nursery.start_soon(read_failing, failures, coalescer)
    assert len(failures) == 5


async def test_handed_off_rounds_serve_only_reads_that_arrived_before_them() -> None:
    """With ``hand_off`` (the runtime's read_index_nowait) a round goes to the driver without a
    task, and the driver's fill hands the next round over at once, in the same call. Reads that
    arrive after a round was handed over wait for the next one: the mutant that lets them join
    the round in flight (``if running is not None: chosen = running``) answers them with the
    first round's index, confirmed by a heartbeat round that may predate them."""
    handed: list[Waiter[int]] = []

    def hand_off(waiter: Waiter[int]) -> bool:
        handed.append(waiter)
        return True

    async def read_index() -> int:
        raise AssertionError("the task path is not used while the hand-off works")

    got: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        coalescer = ReadCoalescer(nursery, read_index, hand_off)
        nursery.start_soon(read_into, got, coalescer, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert len(handed) == 1
        for n in range(1, 21):  # arrive after the first round was handed over
            nursery.start_soon(read_into, got, coalescer, n)
        await trio.testing.wait_all_tasks_blocked()
        assert len(handed) == 1
        handed[0].set(100)  # the driver confirms round 1 ...
        assert len(handed) == 2  # ... and round 2 is handed over in the same call
        await trio.testing.wait_all_tasks_blocked()
        assert got == {0: 100}
        handed[1].set(101)
        await trio.testing.wait_all_tasks_blocked()
        assert got == {0: 100, **{n: 101 for n in range(1, 21)}}
        assert coalescer.requests == 2 and len(handed) == 2


async def test_a_refused_hand_off_falls_back_to_a_task_and_a_failed_round_fails_its_readers() -> (
    None
):
    calls = 0

    async def read_index() -> int:
        nonlocal calls
        calls += 1
        await trio.sleep(0)
        return 7

    handed: list[Waiter[int]] = []
    full = True

    def hand_off(waiter: Waiter[int]) -> bool:
        if full:
            return False  # the driver's inbox is full
        handed.append(waiter)
        return True

    async with trio.open_nursery() as nursery:
        coalescer = ReadCoalescer(nursery, read_index, hand_off)
        assert await coalescer.wait() == 7 and calls == 1 and coalescer.requests == 1
        full = False
        failures: list[int] = []
        for _ in range(3):
            nursery.start_soon(read_failing, failures, coalescer)
        await trio.testing.wait_all_tasks_blocked()
        # The first reader's round was handed over at once; the other two arrived after it
        # and wait for the next, handed over when the first ends.
        handed[0].fail(Unavailable("the read could not be confirmed by a leader; retry"))
        assert len(handed) == 2
        await trio.testing.wait_all_tasks_blocked()
        assert len(failures) == 1
        handed[1].fail(Unavailable("the read could not be confirmed by a leader; retry"))
    assert len(failures) == 3 and coalescer.requests == 3
