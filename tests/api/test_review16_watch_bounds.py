"""s16-review: watch polls bounded as reads and list pages are (docs/security.md, "Review of
session 15's landing (s16-review)").

* A fast-protocol watch poll (``events.poll``) waiting for answer-budget room waited however
  long, its timeout ignored (a read does not since s15-limits): now it is answered ``timeout``
  at its deadline, as a read is.
* A poll's page was bounded in events only (up to 1,000 of whole objects): a poll over big
  workloads was an answer past the frame (``payload-too-large``). Now it ends on bytes as a
  list page does (``opargs.PAGE_BYTES``), at a revision boundary, and ``revision`` says where
  the next poll starts: nothing skipped, nothing twice.
"""

from __future__ import annotations

from typing import Any

import cbor2
import trio

from tests.api.test_write_outcomes import api_cluster
from tests.runtime.memcluster import wait_leader
from univrs.api.budget import AnswerBudget, AnswerPool
from univrs.api.fast import _ClientConnection
from univrs.api.opargs import PAGE_BYTES
from univrs.api.service import ApiService
from univrs.api.watch import page_docs
from univrs.client.protocol import Request
from univrs.client.wire import Wire
from univrs.sm.events import Event, EventType, ObjectKind

BIG = 400_000  # bytes of one test event's id: three of them pass PAGE_BYTES, two do not


def _event(revision: int, n: int) -> Event:
    ident = str(n) * BIG
    return _deleted(revision, ObjectKind.WORKLOAD, ident)


def _deleted(revision: int, kind: ObjectKind, ident: str) -> Event:
    return Event(
        revision=revision, type=EventType.DELETE, kind=kind, id=ident, object=None, prev=None
    )


def test_a_poll_page_ends_on_bytes_at_a_revision_boundary() -> None:
    """Two revisions of 2 + 1 big events: the page is the first revision whole and covers
    through it; a first revision past the bound on its own still goes in whole (a cut inside a
    revision would lose its rest: ``revision`` covers whole revisions); small pages whole."""
    events = [_event(10, 1), _event(10, 2), _event(11, 3)]
    docs, through = page_docs(events, 15)
    assert [d["id"][0] for d in docs] == ["1", "2"] and through == 10
    assert sum(len(cbor2.dumps(d)) for d in docs) <= PAGE_BYTES
    docs, through = page_docs(events[2:], 15)  # the next poll
    assert [d["id"][0] for d in docs] == ["3"] and through == 15
    whole = [_event(20, 1), _event(20, 2), _event(20, 3), _event(21, 4)]
    docs, through = page_docs(whole, 30)
    assert [d["id"][0] for d in docs] == ["1", "2", "3"] and through == 20
    small = [_deleted(r, ObjectKind.NODE, f"n{r}") for r in (3, 4)]
    docs, through = page_docs(small, 9)
    assert [d["id"] for d in docs] == ["n3", "n4"] and through == 9


async def _leader_api(nursery: trio.Nursery) -> ApiService:
    """The ``ApiService`` of a three-node in-memory cluster's leader."""
    cluster, services = await api_cluster(nursery)
    return services[(await wait_leader(cluster)).node_id]


async def _create_big(api: ApiService, n: int) -> int:
    """Workloads w0 .. w{n-1} of ~300 KB each created: the revision after the one before
    them (where a poll for them starts)."""
    page = await api.execute("workload.list", {}, consistency="local")
    args = ["b" * 3000] * 100  # ~300 KB a workload
    for i in range(n):
        spec = {"name": f"w{i}", "image": "x", "args": args}
        await api.execute("workload.create", {"id": f"w{i}", "spec": spec})
    return int(page[0]["revision"]) + 1


async def test_polls_of_big_workloads_page_on_bytes(nursery: trio.Nursery) -> None:
    """Eight creations of ~300 KB workloads: each poll (limit 1,000) answers at most about
    PAGE_BYTES of events, and polling on from ``revision`` + 1 sees each creation once. On
    main the first poll answered all eight (2.4 MB; past a 4 MiB frame with a few more)."""
    api = await _leader_api(nursery)
    start = await _create_big(api, 8)
    seen: list[str] = []
    polls = 0
    with trio.fail_after(30):
        while len(seen) < 8:
            poll: dict[str, Any] = {"from_revision": start, "kinds": "workloads", "limit": 1000}
            answer, _ = await api.execute("events.poll", poll, consistency="local")
            events = answer["events"]
            assert events, answer
            assert sum(len(cbor2.dumps(e)) for e in events) <= PAGE_BYTES
            assert all(e["revision"] <= answer["revision"] for e in events)
            seen += [e["id"] for e in events]
            start = answer["revision"] + 1
            polls += 1
    assert seen == [f"w{i}" for i in range(8)] and polls == 3  # 3 + 3 + 2 a page


class _NoSocket:
    """The connection's websocket: never used (the test runs no writer)."""


def _connection(api: ApiService, budget: AnswerBudget) -> _ClientConnection:
    """A fast-protocol connection of ``api`` with answer budget ``budget``, on no socket (its
    answers stay in its ``_outbox``)."""
    return _ClientConnection(
        ws=_NoSocket(),  # type: ignore[arg-type]
        service=api,
        remote="test",
        scope=trio.CancelScope(),
        budget=budget,
        wire=Wire(_NoSocket()),  # type: ignore[arg-type]
    )


async def test_a_watch_poll_waiting_for_room_is_answered_timeout_at_its_deadline(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A watch poll starts only while its connection has answer-budget room; it waits for it
    at most until its own deadline and is then answered ``timeout`` (hangs to the 30 s
    virtual guard without the bound). One with a later deadline is served once room comes."""
    api = await _leader_api(nursery)
    budget = AnswerBudget(AnswerPool(limit=1000), limit=10)
    budget.take(10)  # spent: its answers are not being read
    conn = _connection(api, budget)
    soon = Request(id=1, op="events.poll", args={"wait_ms": 0}, timeout_ms=2000)
    late = Request(id=2, op="events.poll", args={"wait_ms": 0}, timeout_ms=6000)
    at: dict[int, float] = {}

    async def poll(req: Request) -> None:
        await conn._handle_watch(req)
        at[req.id] = trio.current_time()

    t0 = trio.current_time()
    async with trio.open_nursery() as polls:
        polls.start_soon(poll, soon)
        polls.start_soon(poll, late)
        with trio.fail_after(30):
            while 1 not in at:
                await trio.sleep(0.01)  # virtual time (autojump): until the first is answered
        assert 2.0 <= at[1] - t0 < 2.2 and 2 not in at
        assert [r["id"] for r in conn._outbox] == [1]
        assert conn._outbox[0]["error"]["code"] == "timeout", conn._outbox[0]
        budget.give(budget.held)  # the client read its answers: room for the later poll
    assert at[2] - t0 < 6.0
    answer = conn._outbox[1]
    assert answer["id"] == 2 and "revision" in cbor2.loads(answer["ok"].data), answer


async def test_a_watch_polls_answer_is_charged_its_bytes(nursery: trio.Nursery) -> None:
    """A poll's answer counts against the connection's answer budget by its encoded size, as
    a read's does, so polls stop starting while a reader leaves them unread. Before, a poll's
    answer (a document, not encoded ahead) was charged ``SMALL_ANSWER`` (128 bytes) however
    many events it held: a client that pipelined polls from an old revision and read nothing
    made the node hold up to ``MAX_IN_FLIGHT`` (4,096) answers of up to a page each."""
    api = await _leader_api(nursery)
    start = await _create_big(api, 3)
    budget = AnswerBudget(AnswerPool(), limit=512 * 1024)
    conn = _connection(api, budget)
    poll = {"from_revision": start, "kinds": "workloads"}
    with trio.fail_after(30):
        await conn._handle_watch(Request(id=1, op="events.poll", args=poll, timeout_ms=2000))
    answer = conn._outbox[0]["ok"]
    events = cbor2.loads(answer.data)["events"]
    assert len(events) == 3
    assert budget.held == len(answer.data) > 900_000  # what the node holds for it
    assert not budget.has_room()  # the next poll waits for the client to read
