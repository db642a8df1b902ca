"""The client library's retry rules (docs/api.md, "Write outcomes"), against a scripted node.

A keyless write whose outcome is unknown is never sent again; a keyed one is (the session
answers a duplicate with the first response); and once an attempt may have applied, a later
attempt's refusal (``session-expired``, ``unavailable``) is raised as an unknown outcome, so
``write`` never re-sends the command under a new session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from univrs.client.client import Client
from univrs.client.connection import Connection
from univrs.errors import (
    NotFound,
    OutcomeUnknown,
    SessionExpired,
    Timeout,
    Unavailable,
    UnivrsError,
)

Answer = UnivrsError | dict[str, Any]


@attrs.define(eq=False)
class ScriptedConnection:
    """Answers each request with the next scripted answer for its op (a result or an error)."""

    script: dict[str, list[Answer]]
    sent: list[tuple[str, tuple[str, int] | None]] = attrs.field(factory=list)
    closed: bool = False
    leader: str | None = "n1"
    node_id: str = "n1"
    address: str = "scripted:1"
    in_flight: int = 0

    async def request(
        self, op: str, args: dict[str, Any], *, key: tuple[str, int] | None = None, **_: Any
    ) -> tuple[Any, dict[str, Any] | None]:
        self.sent.append((op, key))
        answers = self.script.get(op)
        if not answers:
            raise AssertionError(f"unexpected request {op} {key}")
        answer = answers.pop(0)
        if isinstance(answer, UnivrsError):
            raise answer
        return answer, None

    def close(self) -> None:
        self.closed = True


@attrs.define(eq=False)
class ScriptedClient(Client):
    scripted_conn: ScriptedConnection | None = None

    async def _connection(self, deadline: float) -> Connection:
        assert self.scripted_conn is not None
        return self.scripted_conn  # type: ignore[return-value]


@asynccontextmanager
async def scripted(script: dict[str, list[Answer]]) -> AsyncIterator[ScriptedClient]:
    async with trio.open_nursery() as nursery:
        client = ScriptedClient(endpoints=["scripted:1"], nursery=nursery, timeout=5.0)
        client.scripted_conn = ScriptedConnection(script=script)
        yield client
        nursery.cancel_scope.cancel()


SESSION: dict[str, Any] = {"client_id": "c7", "version": 7}
MINT = {"to_peer": "p", "amount": 1, "reason": "r"}


def unknown() -> OutcomeUnknown:
    return OutcomeUnknown("covered by a snapshot")


async def test_a_retried_key_that_finds_its_session_gone_is_unknown_not_resent(
    autojump_clock: trio.abc.Clock,
) -> None:
    """First attempt: the deadline passed on the node (unknown). The retry finds the session
    expired: that says nothing about the first attempt. Sending the write again under a new
    session could apply it twice."""
    script: dict[str, list[Answer]] = {
        "session.open": [SESSION, {"client_id": "c8", "version": 8}],
        "credits.mint": [Timeout("deadline"), SessionExpired("session 'c7' is unknown")],
    }
    async with scripted(script) as client:
        with pytest.raises(OutcomeUnknown):
            await client.write("credits.mint", MINT)
        sent = client.scripted_conn.sent  # type: ignore[union-attr]
    assert sent == [
        ("session.open", None),
        ("credits.mint", ("c7", 1)),
        ("credits.mint", ("c7", 1)),
    ]


async def test_a_session_gone_on_the_first_attempt_is_resent_once_under_a_new_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    script: dict[str, list[Answer]] = {
        "session.open": [SESSION, {"client_id": "c8", "version": 8}],
        "credits.mint": [SessionExpired("session 'c7' is unknown"), {"balance": 1}],
    }
    async with scripted(script) as client:
        assert await client.write("credits.mint", MINT) == {"balance": 1}
        sent = client.scripted_conn.sent  # type: ignore[union-attr]
    assert [k for op, k in sent if op == "credits.mint"] == [("c7", 1), ("c8", 1)]


async def test_a_keyed_write_is_retried_through_unknown_outcomes(
    autojump_clock: trio.abc.Clock,
) -> None:
    script: dict[str, list[Answer]] = {
        "credits.mint": [unknown(), Unavailable("no leader"), {"balance": 1}],
    }
    async with scripted(script) as client:
        assert await client.call("credits.mint", MINT, key=("c7", 3)) == {"balance": 1}
        assert client.scripted_conn.sent == [("credits.mint", ("c7", 3))] * 3  # type: ignore[union-attr]


async def test_a_keyless_write_with_an_unknown_outcome_is_not_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    script: dict[str, list[Answer]] = {"credits.mint": [unknown(), {"balance": 2}]}
    async with scripted(script) as client:
        with pytest.raises(OutcomeUnknown):
            await client.call("credits.mint", MINT)
        assert client.scripted_conn.sent == [("credits.mint", None)]  # type: ignore[union-attr]


async def test_refusals_after_an_unknown_attempt_end_as_unknown_at_the_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A keyed write: the first attempt's outcome is unknown, then no leader until the
    deadline. ``Unavailable`` would tell the caller that nothing was applied."""
    refusals: list[Answer] = [Unavailable("no leader", retry_after=0.1) for _ in range(1000)]
    script: dict[str, list[Answer]] = {"credits.mint": [Timeout("deadline"), *refusals]}
    async with scripted(script) as client:
        with pytest.raises(OutcomeUnknown) as info:
            await client.call("credits.mint", MINT, key=("c7", 4), timeout=3.0)
    assert info.value.outcome_unknown and info.value.http_status == 503


async def test_reads_and_definite_answers_are_unchanged(autojump_clock: trio.abc.Clock) -> None:
    script: dict[str, list[Answer]] = {
        "workload.get": [Timeout("slow"), Unavailable("no leader"), NotFound("w")],
    }
    async with scripted(script) as client:
        with pytest.raises(NotFound):
            await client.call("workload.get", {"id": "w"})
        assert len(client.scripted_conn.sent) == 3  # type: ignore[union-attr]
