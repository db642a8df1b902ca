"""A one-shot result slot that a task waits on and another task fills (value or exception)."""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


@attrs.define(eq=False)
class Waiter(Generic[T]):
    """Filled exactly once with ``set`` or ``fail``; later calls are ignored."""

    _event: trio.Event = attrs.field(factory=trio.Event)
    _value: T | None = None
    _error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    async def settled(self) -> None:
        """Wait until filled (without raising its error; read it with ``result``)."""
        await self._event.wait()

    def result(self) -> T:
        """The value, or raise the error, of a filled waiter (no checkpoint: a caller waiting
        for many waiters filled together reads them without a scheduling round each)."""
        assert self._event.is_set(), "result() of a waiter not filled yet"
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    async def wait(self) -> T:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
