"""A shared/exclusive lock for threads: many holders share it, one may take it alone.

The log store's calls run in worker threads, but for a small append on the event loop
(``StoreEnv.write(wait=False)``), which never meets this lock's exclusive side: a growth
holds the write lock that append holds, and the store closes after the runtime stopped.
LMDB lets any number of transactions run at once, but resizing the memory map requires that
no transaction is active in the process: transactions hold the lock shared, a resize holds it
exclusively.
A waiting exclusive holder blocks new shared holders, so a resize is never starved.

The shared side is taken around every transaction, so it is also offered as plain
``acquire_shared``/``release_shared`` calls (a caller's ``try``/``finally``), cheaper than the
``shared()`` context manager on the hot path; both keep the same invariants.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import attrs


@attrs.define(eq=False)
class SharedExclusiveLock:
    """Shared/exclusive lock; not reentrant."""

    # ``_cond``'s lock, taken directly where no wait is needed (``with self._mutex`` costs
    # less than ``with self._cond``, which calls through the Condition's Python methods).
    _mutex: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _cond: threading.Condition = attrs.field(init=False)
    _shared: int = attrs.field(default=0, init=False)  # invariant: >= 0
    _exclusive: bool = attrs.field(default=False, init=False)
    _exclusive_waiting: int = attrs.field(default=0, init=False)
    _shared_waiting: int = attrs.field(default=0, init=False)

    @_cond.default
    def _new_cond(self) -> threading.Condition:
        return threading.Condition(self._mutex)

    def acquire_shared(self) -> None:
        """Take the lock shared: wait while it is held, or waited for, exclusively."""
        with self._mutex:
            while self._exclusive or self._exclusive_waiting:
                self._shared_waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._shared_waiting -= 1
            self._shared += 1

    def release_shared(self) -> None:
        with self._mutex:
            self._shared -= 1
            # Wake the waiters, if any (a notification to none costs half a microsecond).
            if self._shared == 0 and (self._exclusive_waiting or self._shared_waiting):
                self._cond.notify_all()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._exclusive_waiting += 1
            try:
                self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
            finally:
                self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
