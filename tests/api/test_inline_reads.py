"""A frame's reads with no task of their own (univrs/api/inline_reads.py): the coalescer's
``join`` and the ``ReadWait`` a connection's writer settles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import trio

from univrs.api.coalescer import ReadCoalescer, Round
from univrs.api.inline_reads import UNCONFIRMED, Answering, ReadWait, uniform_reads
from univrs.api.service import Job
from univrs.api.writes import NO_LEADER_MESSAGE
from univrs.client.protocol import BadRequest, Request
from univrs.errors import InvalidArgument, NotFound, Unavailable
from univrs.runtime.waiter import Waiter


class _Service:
    """What ``ReadWait`` uses of ``ApiService``: renders (``render_ready``: up to ``room``
    jobs), counts, and the task paths (recorded, not run)."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.counted: list[Job] = []
        self.tasks: list[tuple[str, list[Job]]] = []

    def render_ready(
        self,
        jobs: Sequence[Job],
        barrier: Any,
        start: float,
        answered: Any,
        encoded: bool = False,
        budget: Any = None,
    ) -> int:
        done = list(jobs[: self.room])
        for job in done:
            if barrier is not None:
                job.error = barrier  # (the service answers each with a copy)
            else:
                job.result = f"doc of {job.args['id']}"
        if done:
            answered(done)
        return len(done)

    def _count(self, jobs: Sequence[Job], start: float) -> None:
        self.counted.extend(jobs)

    async def _reads(self, *args: Any) -> None:  # pragma: no cover (recorded, never run)
        pass

    async def _render_reads(self, *args: Any) -> None:  # pragma: no cover
        pass


def _wait(service: _Service, deadlines: Sequence[float]) -> tuple[ReadWait, list[Job], Round]:
    jobs = [Job("workload.get", {"id": f"w{i}"}, deadline=d) for i, d in enumerate(deadlines)]
    answered: list[Job] = []
    chosen = Round()

    def spawn(guard: Any, jobs: list[Job], bug: Any, fn: Any, args: tuple[Any, ...]) -> None:
        service.tasks.append((fn.__name__, jobs))

    def bug(jobs: Sequence[Job], exc: BaseException) -> None:  # pragma: no cover
        raise AssertionError("no bug expected")

    answering = Answering(answered.extend, bug)
    wait = ReadWait(service, chosen, 0.0, answering, None, spawn, list(jobs))  # type: ignore[arg-type]
    return wait, answered, chosen


def test_reads_are_answered_when_their_round_ends_not_before() -> None:
    service = _Service()
    wait, answered, chosen = _wait(service, [10.0, 20.0])
    woken: list[bool] = []
    wait.watch(lambda: woken.append(True))
    wait.settle(1.0)
    assert answered == [] and len(wait.pending) == 2  # the round has not ended
    assert wait.deadline() == 10.0
    chosen.index = 7
    chosen.done.set()
    wait.settle(2.0)
    assert [job.result for job in answered] == ["doc of w0", "doc of w1"]
    assert wait.pending == [] and wait.deadline() == math.inf
    assert chosen.notify and not woken  # (the coalescer calls notify: the next test)


def test_a_read_past_its_deadline_is_answered_unavailable_and_the_rest_wait() -> None:
    """As ``RaftStateStore._read_barrier`` answers a read whose confirmation did not come in
    time; fails if the writer only answers when the round ends."""
    service = _Service()
    wait, answered, chosen = _wait(service, [5.0, 50.0])
    wait.settle(5.0)
    assert [job.args["id"] for job in answered] == ["w0"]
    error = answered[0].error
    assert isinstance(error, Unavailable) and str(error) == UNCONFIRMED
    assert error.retry_after == 1.0
    assert service.counted == answered  # counted in the request metrics
    assert [job.args["id"] for job in wait.pending] == ["w1"] and wait.deadline() == 50.0
    chosen.done.set()
    wait.settle(6.0)
    assert [job.args["id"] for job in answered] == ["w0", "w1"]  # each answered once


def test_a_dropped_round_hands_the_reads_to_the_usual_path_after_its_pause() -> None:
    """A round dropped (``unavailable``: leadership lost, not confirmed in time): a read past
    its deadline is answered as ``_read_barrier`` answers it then (``NO_LEADER_MESSAGE``),
    the others go to a task that pauses and runs the usual path (``_retry``: a new round,
    requested after); none is answered with the round's own error here."""
    service = _Service()
    wait, answered, chosen = _wait(service, [1.0, 10.0])
    chosen.error = Unavailable("the read could not be confirmed by a leader; retry")
    chosen.done.set()
    wait.settle(1.0)
    assert [job.args["id"] for job in answered] == ["w0"]
    assert str(answered[0].error) == NO_LEADER_MESSAGE and service.counted == answered
    assert [(name, [j.args["id"] for j in jobs]) for name, jobs in service.tasks] == [
        ("_retry", ["w1"])
    ]
    assert wait.pending == []


def test_a_round_failed_otherwise_answers_its_reads_with_its_error() -> None:
    """An error that is not ``unavailable`` (what ``_read_barrier`` does not retry) answers
    every read with it, as the frame's task answered them."""
    service = _Service()
    wait, answered, chosen = _wait(service, [10.0, 10.0])
    chosen.error = NotFound("gone")
    chosen.done.set()
    wait.settle(1.0)
    assert [type(job.error) for job in answered] == [NotFound, NotFound]
    assert service.tasks == []


def test_a_wait_with_nothing_left_to_answer_leaves_its_round() -> None:
    """Each frame's callback stays on its round only while the frame has a read to answer:
    a client whose frames all time out while one round stays open (a slow apply) is not
    kept in memory by that round, nor called back when it ends (review of session 22)."""
    service = _Service()
    chosen = Round()
    waits = []
    for _ in range(100):
        wait, _, _ = _wait(service, [1.0])
        wait.round = chosen
        wait.watch(lambda: None)
        waits.append(wait)
    assert len(chosen.notify) == 100
    for wait in waits[:60]:
        wait.settle(5.0)  # answered at its deadline
    for wait in waits[60:90]:
        wait.abandon()  # its connection went away
    assert len(chosen.notify) == 10


def test_reads_without_budget_room_are_left_to_a_task_that_waits_for_it() -> None:
    service = _Service(room=1)
    wait, answered, chosen = _wait(service, [10.0, 10.0, 10.0])
    chosen.done.set()
    wait.settle(1.0)
    assert [job.args["id"] for job in answered] == ["w0"]
    assert [(name, [j.args["id"] for j in jobs]) for name, jobs in service.tasks] == [
        ("_render_reads", ["w1", "w2"])
    ]


def test_an_abandoned_wait_answers_nothing_more() -> None:
    service = _Service()
    wait, answered, chosen = _wait(service, [1.0])
    wait.abandon()
    chosen.done.set()
    wait.settle(5.0)
    assert answered == [] and service.tasks == []


async def test_join_shares_a_round_only_if_its_request_comes_after() -> None:
    """``join`` keeps ``wait``'s rule: a reader joins the running round only while its request
    is not made yet, else the next one, which starts when the running one ends; each round's
    callbacks run when it ends. Fails if a reader joins a round already requested (it could be
    confirmed by heartbeats sent before the read arrived)."""
    handed: list[Waiter[int]] = []

    def hand_off(waiter: Waiter[int]) -> bool:
        handed.append(waiter)
        return True

    async def never() -> int:  # pragma: no cover (hand_off takes every round)
        raise AssertionError("no task expected")

    async with trio.open_nursery() as nursery:
        coalescer = ReadCoalescer(nursery, never, hand_off)
        ended: list[str] = []
        first = coalescer.join(lambda: ended.append("first"))
        assert first.started and len(handed) == 1  # requested at once
        second = coalescer.join(lambda: ended.append("second"))
        third = coalescer.join(lambda: ended.append("third"))
        assert second is third and second is not first and not second.started
        assert len(handed) == 1  # the next round waits for the running one
        handed[0].set(41)
        assert first.done.is_set() and first.index == 41 and ended == ["first"]
        assert second.started and len(handed) == 2  # requested when the first ended
        handed[1].fail(Unavailable("lost"))
        assert second.done.is_set() and isinstance(second.error, Unavailable)
        assert ended == ["first", "second", "third"]
        assert coalescer.requests == 2


def test_uniform_reads_are_reads_of_one_consistency_only() -> None:
    get = Request(id=1, op="workload.get", args={"id": "w"})
    assert uniform_reads([get, Request(id=2, op="workload.list", consistency="linearizable")])
    assert uniform_reads([Request(id=1, op="workload.get", consistency="local")])
    assert not uniform_reads([get, Request(id=2, op="workload.get", consistency="local")])
    assert not uniform_reads([get, Request(id=2, op="workload.scale", args={})])
    assert not uniform_reads([get, Request(id=2, op="events.poll", args={})])
    assert not uniform_reads([get, BadRequest(id=2, error=InvalidArgument("bad"))])
    assert not uniform_reads([])  # an empty frame (it crashed a follower: review)
