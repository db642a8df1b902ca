"""The shared/exclusive lock around LMDB transactions (univrs/storage/rwlock.py): an
exclusive holder (a map growth) waits for every shared holder (a transaction) and, while it
waits, keeps new shared holders out; both ways of taking the shared side behave alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from univrs.storage.rwlock import SharedExclusiveLock

WAIT = 30.0


def plain_shared(lock: SharedExclusiveLock, body: Callable[[], None]) -> None:
    lock.acquire_shared()
    try:
        body()
    finally:
        lock.release_shared()


def managed_shared(lock: SharedExclusiveLock, body: Callable[[], None]) -> None:
    with lock.shared():
        body()


def until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.001)


@pytest.mark.parametrize("shared", [plain_shared, managed_shared])
def test_exclusive_waits_for_shared_holders_and_blocks_new_ones(
    shared: Callable[[SharedExclusiveLock, Callable[[], None]], None],
) -> None:
    lock = SharedExclusiveLock()
    events: list[str] = []
    release_first = threading.Event()

    def hold() -> None:
        events.append("first in")
        assert release_first.wait(WAIT)

    def first() -> None:
        shared(lock, hold)
        events.append("first out")

    def grow() -> None:
        with lock.exclusive():
            events.append("exclusive")

    def second() -> None:
        shared(lock, lambda: events.append("second in"))

    threads = [threading.Thread(target=first)]
    threads[0].start()
    until(lambda: events == ["first in"])
    threads.append(threading.Thread(target=grow))
    threads[1].start()
    until(lambda: lock._exclusive_waiting == 1)
    threads.append(threading.Thread(target=second))
    threads[2].start()
    until(lambda: lock._shared_waiting == 1)  # kept out by the waiting exclusive holder
    assert events == ["first in"]
    release_first.set()
    for t in threads:
        t.join(WAIT)
    assert events == ["first in", "first out", "exclusive", "second in"]
    assert lock._shared == 0 and not lock._exclusive and not lock._shared_waiting


def test_shared_holders_share() -> None:
    lock = SharedExclusiveLock()
    lock.acquire_shared()
    with lock.shared():
        lock.acquire_shared()
        assert lock._shared == 3
        lock.release_shared()
    lock.release_shared()
    assert lock._shared == 0
