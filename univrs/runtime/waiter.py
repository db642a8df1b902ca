"""A one-shot result slot that a task waits on and another task fills (value or exception)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


@attrs.define(eq=False)
class Waiter(Generic[T]):
    """Filled exactly once with ``set`` or ``fail``; later calls are ignored.

    A task that waits before the slot is filled parks itself here (``trio.lowlevel``: the
    filler reschedules it), with no ``trio.Event`` and no await level of its own between the
    waiting code and trio's: a client's request and a leader's proposal each wait on one, and
    every level of a coroutine chain is walked at each suspension and resumption (round 17,
    s17-cpu). A second task waiting at the same time waits on a ``trio.Event``, made then. A
    client frame's writes are waited for together (univrs/api/batcher.py), and most of their
    waiters are filled before anyone waits on them. Waiting is a checkpoint either way, as
    ``trio.Event.wait`` is: a wait cancelled while parked leaves the slot to be filled.

    ``notify(fn)``: ``fn()`` is called once, right after the slot is filled, in the task that
    fills it (the driver's step): a fast-protocol connection is told its frame's writes are
    done without a task waiting for each frame (univrs/api/fast.py). ``fn`` must be cheap and
    must not raise (it runs inside the apply)."""

    _task: trio.lowlevel.Task | None = None  # the task parked here, rescheduled when filled
    _event: trio.Event | None = None  # for any other task waiting at the same time
    _notify: Callable[[], None] | None = None
    # Filled (``set`` or ``fail``): a plain attribute, not a property, for it is read for
    # every proposal of every batch on the leader's step (batching.py ``flush``; a property
    # costs about 27 ns more per read). Only ``set`` and ``fail`` write it.
    done: bool = attrs.field(default=False, init=False)
    _value: T | None = None
    _error: BaseException | None = None

    def set(self, value: T) -> None:
        if not self.done:
            self._value = value
            self.done = True
            if self._task is not None:
                self._wake()
            if self._event is not None:
                self._event.set()
            if self._notify is not None:
                self._fire()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._error = error
            self.done = True
            if self._task is not None:
                self._wake()
            if self._event is not None:
                self._event.set()
            if self._notify is not None:
                self._fire()

    def _wake(self) -> None:
        task, self._task = self._task, None
        assert task is not None
        trio.lowlevel.reschedule(task)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        # Cancelled while parked: nobody is to be rescheduled any more.
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _fire(self) -> None:
        # Dropped before the call: what it refers to (a connection's frame, which refers to
        # this waiter) is then no reference cycle, freed without the garbage collector.
        fn, self._notify = self._notify, None
        assert fn is not None
        fn()

    def notify(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once when the slot is filled (at once if it is already)."""
        if self.done:
            fn()
        else:
            self._notify = fn

    async def settled(self) -> None:
        """Wait until filled (without raising its error; read it with ``result``). A
        checkpoint either way, as ``trio.Event.wait`` is."""
        if self.done:
            await trio.lowlevel.checkpoint()
        elif self._task is None:
            self._task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        else:
            await self._wait_event()

    async def _wait_event(self) -> None:
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()

    def result(self) -> T:
        """The value, or raise the error, of a filled waiter (no checkpoint: a caller waiting
        for many waiters filled together reads them without a scheduling round each)."""
        assert self.done, "result() of a waiter not filled yet"
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    async def wait(self) -> T:
        # ``settled``'s body, not a call to it: one level fewer in the waiting chain.
        if self.done:
            await trio.lowlevel.checkpoint()
        elif self._task is None:
            self._task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        else:
            await self._wait_event()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
