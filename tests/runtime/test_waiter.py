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
