"""s15-budget: the fast protocol's answer-byte budget (univrs/api/budget.py) and the byte bound
on list pages (univrs/api/opargs.py ``PAGE_BYTES``), in process (docs/security.md, W1 and B1).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from functools import partial
from typing import Any

import cbor2
import httpx2
import pytest
import trio
import trio.testing

from tests.api.helpers import open_cluster
from tests.api.test_write_outcomes import api_cluster
from tests.runtime.memcluster import wait_leader
from univrs.api import opargs
from univrs.api.budget import AnswerBudget, AnswerPool
from univrs.api.service import Job
from univrs.client import open_client
from univrs.errors import Timeout


async def test_a_connection_waits_for_its_own_budget_and_the_nodes() -> None:
    pool = AnswerPool(limit=100)
    first, second = AnswerBudget(pool, limit=60), AnswerBudget(pool, limit=60)
    first.take(59)
    assert first.has_room() and not first.has_room(1)  # room for one more answer, any size
    first.take(30)  # that answer: past the budget, once
    assert not first.has_room()
    second.take(11)  # 100 held in the node: the node's pool is spent for everyone's reads
    assert not second.has_room()
    assert second.own_room() and not first.own_room()  # its reader still reads frames
    with trio.move_on_after(1) as waited:
        await second.wait_room(own=True)
    assert not waited.cancelled_caught
    woken: list[str] = []

    async def waiter(name: str, budget: AnswerBudget) -> None:
        await budget.wait_room()
        woken.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "first", first)
        nursery.start_soon(waiter, "second", second)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []  # waits, nothing refused
        first.give(30)  # first at 59 of 60, the node at 70 of 100
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(woken) == ["first", "second"]
    first.release()
    second.release()
    assert pool.held == 0


PAGE_BYTES = 1 << 20  # docs/api.md: a page's items are at most 1 MiB encoded (one, any size)


def _doc(i: int, size: int) -> dict[str, Any]:
    return {"id": f"w{i:03}", "blob": "x" * size}


@pytest.mark.parametrize("size", [100, 300_000, 2_000_000])
def test_a_page_stops_on_bytes_with_a_next(size: int) -> None:
    class State:
        revision = 7

        def reading(self) -> Any:
            return _Nothing()

    docs = [_doc(i, size) for i in range(20)]

    def items_after(after: str | None) -> list[dict[str, Any]]:
        return [d for d in docs if after is None or d["id"] > after]

    seen: list[str] = []
    after: str | None = None
    while True:
        args: dict[str, Any] = {"limit": 10} if after is None else {"limit": 10, "after": after}
        page = opargs.page_scan(items_after, lambda d: d["id"], args, State())  # type: ignore[arg-type]
        encoded = sum(len(cbor2.dumps(d)) for d in page["items"])
        assert page["items"]  # at least one item, however big
        assert len(page["items"]) == 1 or encoded <= PAGE_BYTES
        seen += [d["id"] for d in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == [d["id"] for d in docs]


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_rest_and_fast_pages_of_big_workloads_are_bounded_alike(
    tmp_path: pathlib.Path,
) -> None:
    """The bound is the operation's: the REST API (and MCP, which runs the same operations)
    gets the same shorter page with ``next`` as the fast protocol."""
    big = ["c" * 4000] * 100  # about 400 KB a workload: two to a page
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        async with open_client([cluster.client_address(node)]) as client:
            for i in range(5):
                await client.create_workload({"name": f"w{i}", "image": "x", "args": big})
            fast = await client.list_workloads(limit=1000, consistency="local")
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{node.api_port}") as http:
            rest = (await http.get("/v1/workloads", params={"limit": 1000})).json()
    assert len(fast["items"]) == len(rest["items"]) == 2
    assert fast["next"] == rest["next"] == fast["items"][-1]["id"]


async def test_a_read_waiting_for_room_is_answered_timeout_at_its_deadline(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A read that waits for answer-budget room waits at most until its own deadline, then
    is answered ``Timeout`` (the API's error for a deadline passed), taking and giving back
    nothing; a read with a later deadline is rendered once room comes. Without the bound
    every read waited for room however long (its timeout ignored)."""
    cluster, services = await api_cluster(nursery)
    api = services[(await wait_leader(cluster)).node_id]
    await api.execute("workload.create", {"id": "w", "spec": {"name": "web", "image": "x"}})
    budget = AnswerBudget(AnswerPool(limit=1000), limit=10)
    budget.take(10)  # spent: its answers are not being read
    at: dict[str, float] = {}
    results: dict[str, Any] = {}

    def answered(jobs: Sequence[Job]) -> None:
        for job in jobs:  # results are dropped once answered under a budget
            at[job.tag], results[job.tag] = trio.current_time(), job.result

    def read(tag: str, timeout: float, consistency: str = "linearizable") -> Job:
        args = {"id": "w"}
        return Job("workload.get", args, consistency=consistency, timeout=timeout, tag=tag)

    local, soon, late = read("local", 2.0, "local"), read("soon", 2.0), read("late", 6.0)
    t0 = trio.current_time()
    async with trio.open_nursery() as frames:
        frames.start_soon(partial(api.execute_many, [local], answered, budget=budget))
        frames.start_soon(partial(api.execute_many, [soon, late], answered, budget=budget))
        with trio.fail_after(30):
            while len(at) < 2:
                await trio.sleep(0.01)  # virtual time (autojump): until both are answered
        assert sorted(at) == ["local", "soon"] and "late" not in at
        for job in (local, soon):
            assert isinstance(job.error, Timeout) and job.error.code == "timeout", job.error
            assert 2.0 <= at[job.tag] - t0 < 2.2
        assert budget.held == budget.pool.held == 10  # nothing taken, nothing given back
        budget.give(10)  # the client read its answers: room for the later read
    assert late.error is None and results["late"]["id"] == "w"
    assert at["late"] - t0 < 6.0
