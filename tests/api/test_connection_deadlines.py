"""A request's deadline kept by its connection's one timer (univrs/client/connection.py
``Connection.request(deadline=...)``, ``_expire``), not a cancel scope per call: each waiting
request is answered ``Timeout`` at its own deadline, an earlier deadline re-arms the timer, an
answered request is never failed later, and the deadlines of answered requests do not pile up.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from univrs.client import protocol
from univrs.client.connection import Connection
from univrs.client.protocol import ServerHello
from univrs.errors import Timeout


class SilentSocket:
    """Takes the request frames and answers none (a node that stopped answering)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send_message(self, data: bytes) -> None:
        self.frames.append(data)

    def requests(self) -> list[dict[str, Any]]:
        return [r.to_plain() for f in self.frames for r in protocol.decode_requests(f)]  # type: ignore[union-attr]


async def _connection(nursery: trio.Nursery) -> tuple[Connection, SilentSocket]:
    ws = SilentSocket()
    conn = Connection(address="silent:1", hello=ServerHello(node="n1", leader="n1", members={}))
    nursery.start_soon(conn._writer, ws)  # type: ignore[arg-type]
    nursery.start_soon(conn._expire)
    await trio.testing.wait_all_tasks_blocked()
    return conn, ws


async def test_each_request_times_out_at_its_own_deadline(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Deadlines given latest first: each request still gets ``Timeout`` at its own (fails
    if an earlier deadline did not re-arm the timer: the 1 s request would wait 3 s)."""
    conn, ws = await _connection(nursery)
    start = trio.current_time()
    ended: dict[str, tuple[float, BaseException | None]] = {}

    async def call(op: str, after: float) -> None:
        try:
            await conn.request(op, {}, deadline=start + after)
            ended[op] = (trio.current_time() - start, None)
        except Exception as exc:
            ended[op] = (trio.current_time() - start, exc)

    async with trio.open_nursery() as calls:
        for op, after in (("a.late", 3.0), ("b.early", 1.0), ("c.middle", 2.0)):
            calls.start_soon(call, op, after)
            await trio.testing.wait_all_tasks_blocked()
    for op, after in (("a.late", 3.0), ("b.early", 1.0), ("c.middle", 2.0)):
        elapsed, exc = ended[op]
        assert elapsed == pytest.approx(after, abs=1e-6), op
        assert isinstance(exc, Timeout) and exc.outcome_unknown
        assert exc.message == f"{op}: no answer within the deadline; the outcome is unknown"
    assert conn.in_flight == 0
    assert [r["op"] for r in ws.requests()] == ["a.late", "b.early", "c.middle"]


async def test_an_answered_request_is_not_failed_later_and_a_deadline_free_one_waits(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    conn, ws = await _connection(nursery)
    start = trio.current_time()
    results: dict[str, Any] = {}

    async def call(op: str, deadline: float | None) -> None:
        try:
            results[op] = await conn.request(op, {}, deadline=deadline)
        except Exception as exc:
            results[op] = exc

    async with trio.open_nursery() as calls:
        calls.start_soon(call, "answered", start + 1.0)
        calls.start_soon(call, "unbounded", None)
        await trio.testing.wait_all_tasks_blocked()
        rid = next(r["id"] for r in ws.requests() if r["op"] == "answered")
        conn._pending[rid].set({"id": rid, "ok": {"fine": True}})  # as the reader does
        await trio.sleep(5.0)  # past the answered request's deadline
        assert results == {"answered": ({"fine": True}, None)}
        assert conn.in_flight == 1  # the request without a deadline still waits
        calls.cancel_scope.cancel()


async def test_the_deadlines_of_answered_requests_do_not_pile_up(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """2,000 requests answered at once, each with a deadline far ahead: the heap is pruned to
    the waiting ones (fails without the pruning: 2,000 entries)."""
    conn, _ = await _connection(nursery)
    deadline = trio.current_time() + 30.0

    async def answer_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        for rid, waiter in list(conn._pending.items()):
            waiter.set({"id": rid, "ok": 1})

    for _ in range(2000):
        async with trio.open_nursery() as one:
            one.start_soon(answer_soon)
            assert await conn.request("x.y", {}, deadline=deadline) == (1, None)
    assert len(conn._deadlines) <= 4 * conn.in_flight + 257
