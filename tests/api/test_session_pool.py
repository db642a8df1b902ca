"""``SessionPool`` (univrs/client/sessions.py): a session's writes in flight stay within
``SESSION_WINDOW`` of its oldest one; a write that finds every session busy waits for a key to
be released (round 17: the seqs in flight kept in issue order, the oldest first, and the
release event made only while a lease waits)."""

from __future__ import annotations

import trio
import trio.testing

from univrs.client.sessions import SESSION_WINDOW, SessionPool


async def test_a_busy_pool_waits_for_its_oldest_key(nursery: trio.Nursery) -> None:
    opened: list[str] = []

    async def open_session(deadline: float) -> str:
        opened.append(f"c{len(opened)}")
        return opened[-1]

    pool = SessionPool(open_session, max_sessions=1)
    deadline = trio.current_time() + 60
    done: dict[int, trio.Event] = {}
    keys: list[tuple[str, int]] = []

    async def call(key: tuple[str, int]) -> int:
        keys.append(key)
        done[key[1]] = trio.Event()
        await done[key[1]].wait()
        return key[1]

    async def write() -> None:
        await pool.write(call, deadline)

    nursery.start_soon(write)  # opens the session
    await trio.testing.wait_all_tasks_blocked()
    for _ in range(SESSION_WINDOW - 1):
        nursery.start_soon(write)
    await trio.testing.wait_all_tasks_blocked()
    assert keys == [("c0", seq) for seq in range(1, SESSION_WINDOW + 1)]
    nursery.start_soon(write)  # one more: the window is full
    await trio.testing.wait_all_tasks_blocked()
    assert len(keys) == SESSION_WINDOW and pool.in_flight == SESSION_WINDOW
    done[5].set()  # a newer key released: the oldest (1) still holds the window
    await trio.testing.wait_all_tasks_blocked()
    assert len(keys) == SESSION_WINDOW
    done[1].set()  # the oldest released: the next seq is within the window of seq 2
    await trio.testing.wait_all_tasks_blocked()
    assert keys[-1] == ("c0", SESSION_WINDOW + 1) and opened == ["c0"]
    for event in done.values():
        event.set()
    await trio.testing.wait_all_tasks_blocked()
    assert pool.in_flight == 0


async def test_writes_one_after_another_use_one_session() -> None:
    async def open_session(deadline: float) -> str:
        return "only"

    pool = SessionPool(open_session)

    async def call(key: tuple[str, int]) -> tuple[str, int]:
        return key

    deadline = trio.current_time() + 60
    got = [await pool.write(call, deadline) for _ in range(3 * SESSION_WINDOW)]
    assert got == [("only", seq) for seq in range(1, 3 * SESSION_WINDOW + 1)]
    assert pool.in_flight == 0
