"""``Waiter`` (univrs/runtime/waiter.py): filled once, its event made only for a task that waits
before it is filled; every wait is a checkpoint, as ``trio.Event.wait`` is."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from univrs.runtime.waiter import Waiter


async def test_a_waiter_is_filled_once_and_read_without_waiting() -> None:
    waiter: Waiter[int] = Waiter()
    assert not waiter.done
    waiter.set(1)
    waiter.set(2)
    waiter.fail(ValueError("late"))
    assert waiter.done and waiter.result() == 1
    assert await waiter.wait() == 1
    failed: Waiter[int] = Waiter()
    failed.fail(ValueError("no"))
    failed.set(3)
    with pytest.raises(ValueError, match="no"):
        failed.result()
    with pytest.raises(ValueError, match="no"):
        await failed.wait()


async def test_a_task_waiting_before_the_fill_wakes_with_the_value(
    nursery: trio.Nursery,
) -> None:
    waiter: Waiter[str] = Waiter()
    got: list[str] = []

    async def wait() -> None:
        got.append(await waiter.wait())

    nursery.start_soon(wait)
    await trio.testing.wait_all_tasks_blocked()
    assert got == []
    waiter.set("x")
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["x"]


async def test_waiting_on_a_filled_waiter_is_still_a_checkpoint() -> None:
    waiter: Waiter[int] = Waiter()
    waiter.set(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await waiter.settled()
    with trio.testing.assert_checkpoints():
        await waiter.wait()


async def test_a_cancelled_wait_leaves_the_waiter_to_be_filled() -> None:
    waiter: Waiter[int] = Waiter()
    with trio.CancelScope() as scope:
        scope.cancel()
        await waiter.wait()
    assert scope.cancelled_caught
    assert not waiter.done
    waiter.set(5)
    assert await waiter.wait() == 5


async def test_two_tasks_waiting_at_once_both_wake(nursery: trio.Nursery) -> None:
    """The first waiting task is parked on the waiter itself, the second on an event (round
    17): both get the value, each once."""
    waiter: Waiter[str] = Waiter()
    got: list[str] = []

    async def wait() -> None:
        got.append(await waiter.wait())

    async def settle() -> None:
        await waiter.settled()
        got.append("settled")

    nursery.start_soon(wait)
    nursery.start_soon(settle)
    await trio.testing.wait_all_tasks_blocked()
    assert got == []
    waiter.set("x")
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(got) == ["settled", "x"]


async def test_a_wait_cancelled_while_parked_lets_another_task_wait(
    nursery: trio.Nursery,
) -> None:
    """A task cancelled while parked leaves the waiter: the fill reschedules nobody stale (a
    task rescheduled twice is a trio error), and a later waiter is parked and woken."""
    waiter: Waiter[int] = Waiter()
    got: list[int] = []
    scope = trio.CancelScope()

    async def cancelled() -> None:
        with scope:
            await waiter.wait()
        got.append(-1)

    async def wait() -> None:
        got.append(await waiter.wait())

    nursery.start_soon(cancelled)
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert got == [-1] and not waiter.done
    nursery.start_soon(wait)
    await trio.testing.wait_all_tasks_blocked()
    waiter.set(7)
    await trio.testing.wait_all_tasks_blocked()
    assert got == [-1, 7]


async def test_a_failed_waiter_wakes_its_parked_task_with_the_error(
    nursery: trio.Nursery,
) -> None:
    waiter: Waiter[int] = Waiter()
    errors: list[str] = []

    async def wait() -> None:
        try:
            await waiter.wait()
        except ValueError as exc:
            errors.append(str(exc))

    nursery.start_soon(wait)
    await trio.testing.wait_all_tasks_blocked()
    waiter.fail(ValueError("no"))
    await trio.testing.wait_all_tasks_blocked()
    assert errors == ["no"]
