"""A shared/exclusive lock for threads: many holders share it, one may take it alone.

The log store's calls run in worker threads, but for a small append on the event loop
(``StoreEnv.write(wait=False)``), which never meets this lock's exclusive side: a growth
holds the write lock that append holds, and the store closes after the runtime stopped.
LMDB lets any number of transactions run at once, but resizing the memory map requires that
no transaction is active in the process: transactions hold the lock shared, a resize holds it
exclusively.
A waiting exclusive holder blocks new shared holders, so a resize is never starved.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import attrs


@attrs.define(eq=False)
class SharedExclusiveLock:
    """Shared/exclusive lock; not reentrant."""

    _cond: threading.Condition = attrs.field(factory=threading.Condition, init=False)
    _shared: int = attrs.field(default=0, init=False)  # invariant: >= 0
    _exclusive: bool = attrs.field(default=False, init=False)
    _exclusive_waiting: int = attrs.field(default=0, init=False)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._exclusive_waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if self._shared == 0:
                    self._cond.notify_all()

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
