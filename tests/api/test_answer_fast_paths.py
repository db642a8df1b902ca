"""The fast paths of answering a frame of applied writes (session 30) against the general
paths they skip, over random frames: each must give the same answers.

Each test says which fast path it checks: with that path diverging, it fails."""

from __future__ import annotations

import random
from typing import Any

import trio

from univrs.api import fast
from univrs.api.answer_frames import response_of
from univrs.api.auth import ANONYMOUS
from univrs.api.batcher import FrameWait, FrameWrites, _Answers, _Attempts
from univrs.api.budget import AnswerBudget, AnswerPool
from univrs.api.metrics import ApiMetrics
from univrs.api.ops import HANDLERS
from univrs.api.rendered import Rendered
from univrs.api.service import ApiService, Job
from univrs.api.writes import Submission, Write
from univrs.client import protocol
from univrs.client.protocol import Encoded, Request
from univrs.errors import InvalidArgument, NotFound, NotLeader, OutcomeUnknown
from univrs.errors import ProposalDropped as ProposalDroppedError
from univrs.metrics import Registry
from univrs.runtime.waiter import Waiter
from univrs.sm.responses import Created, Failure, Success


class _Runtime:
    sm = object()


class _Node:
    runtime = _Runtime()


class _Store:
    node = _Node()


def _render(kind: int) -> Any:
    def render(response: Any, state: Any) -> Any:
        if kind == 1:
            raise ValueError(f"render of {response!r}")
        return {"id": getattr(response, "id", "x"), "version": response.version, "kind": kind}

    return None if kind == 2 else render


def _outcome(rng: random.Random) -> tuple[str, Any]:
    roll = rng.random()
    if roll < 0.5:
        return "set", Success(version=rng.randrange(1 << 40))
    if roll < 0.65:
        return "set", Created(id=f"w{rng.randrange(99)}", version=rng.randrange(1 << 20))
    if roll < 0.75:
        return "set", Failure(code="not-found", message="gone")  # type: ignore[arg-type]
    if roll < 0.8:
        return "fail", NotLeader("lost it")
    if roll < 0.85:
        return "fail", ProposalDroppedError("dropped")
    if roll < 0.9:
        return "fail", OutcomeUnknown("unknown")
    return "open", None  # not filled


def _plain(answer: Any) -> Any:
    if isinstance(answer, BaseException):
        return (type(answer).__name__, str(answer))
    return answer


def _frame(seed: int) -> tuple[list[Submission], list[tuple[int, Any, dict[str, Any]]], list[Any]]:
    rng = random.Random(seed)
    n = rng.randint(1, 24)
    writes = []
    for _ in range(n):
        write = Write(envelope=None, op="workload.scale", args={}, render=_render(rng.randrange(4)))  # type: ignore[arg-type]
        writes.append(Submission(write, ("c", 1) if rng.random() < 0.5 else None, 1e9))
    batch = [(i, None, {"extra": 1} if rng.random() < 0.15 else {}) for i in range(n)]
    return writes, batch, [_outcome(rng) for _ in range(n)]


def _settled(seed: int, general: bool) -> tuple[list[Any], list[Any], list[Any], list[int]]:
    writes, batch, outcomes = _frame(seed)
    frames = FrameWrites(_Store())  # type: ignore[arg-type]
    waiters: list[Waiter[Any]] = []
    for how, value in outcomes:
        waiter: Waiter[Any] = Waiter()
        if how == "set":
            waiter.set(value)
        elif how == "fail":
            waiter.fail(value)
        waiters.append(waiter)
    reports: list[Any] = []
    answers = _Answers([None] * len(writes), lambda group: reports.append(list(group)))
    attempts = _Attempts(writes)
    went_on: list[Any] = []
    wait = FrameWait(
        frames,
        writes,
        batch,
        waiters,
        attempts,
        answers,
        lambda *args: went_on.append(args),
    )
    if general:  # the general path: every filled waiter through ``_settle_answer``
        left = []
        for k in wait.pending:
            i, _, extra = batch[k]
            if waiters[k].done:
                frames._settle_answer(
                    writes[i], waiters[k], extra, i, attempts, answers, wait.go_on
                )
            else:
                left.append(k)
        answers.flush()
        wait.pending = left
    else:
        wait.settle(0.0)
    plain_reports = [[(i, _plain(a)) for i, a in group] for group in reports]
    return [_plain(a) for a in answers.slots], plain_reports, went_on, wait.pending


def test_frame_wait_settles_applied_writes_as_settle_answer_does() -> None:
    """``FrameWait.settle`` answers a write applied with an answer to render itself, not
    through ``_settle_answer``: its answers, reports, retries and what is left pending are
    ``_settle_answer``'s, over random frames (successes, creations, failures, errors that
    retry or are unknown, renders that raise or are missing, extra fields, waiters not
    filled)."""

    async def main() -> None:
        for seed in range(400):
            assert _settled(seed, general=False) == _settled(seed, general=True), seed

    trio.run(main)


def _reference_charge(resp: dict[str, Any]) -> int:
    """``_ClientConnection._send``'s charge before session 30, as it was written."""
    ok = resp.get("ok")
    if type(ok) is Encoded:
        return len(ok.data)
    n = fast.SMALL_ANSWER
    error = resp.get("error")
    if error is not None:
        n += len(error.get("message") or "") + len(error.get("field") or "")
    return n


def _job(rng: random.Random, k: int) -> Job:
    op = rng.choice(("workload.scale", "workload.get"))
    consistency = rng.choice((None, "local", "linearizable"))
    tag = Request(rng.randrange(1 << 40), op, {}, None, consistency)
    job = Job(op, {}, None, consistency, None, 0, ANONYMOUS, tag)
    roll = rng.random()
    if roll < 0.15:
        job.error = InvalidArgument("bad " + "x" * rng.randrange(50), field=rng.choice((None, "f")))
    elif roll < 0.2:
        job.error = NotFound(f"workload w{k} not found")
    elif roll < 0.22:
        job.error = RuntimeError("a bug")
    else:
        result = rng.choice(
            ({"id": f"w{k}", "version": k}, Encoded(b"\xa1bidbw1" * rng.randrange(1, 9)), None)
        )
        job.result = result
        job.meta = rng.choice(({"index": k}, {"index": k, "x": 1}, {"stale": 0.1}, None))
        if rng.random() < 0.1:
            job.rendered = Rendered({"id": f"w{k}"})
    return job


def test_answered_builds_and_charges_answers_as_response_of_and_send_do() -> None:
    """``_ClientConnection._answered`` builds a write's answer and its charge itself: the
    answers queued, their order and encoding, and the bytes charged to the budget are those
    of ``response_of`` and the charge ``_send`` made before, over random frames of answers
    (writes, reads shared or not, local reads, errors quoting the request, bugs)."""

    async def main() -> None:
        for seed in range(300):
            rng = random.Random(seed)
            jobs = [_job(rng, k) for k in range(rng.randint(1, 30))]
            conn = fast._ClientConnection(
                ws=None,  # type: ignore[arg-type]
                service=None,  # type: ignore[arg-type]
                remote="test",
                scope=trio.CancelScope(),
                budget=AnswerBudget(AnswerPool()),
                wire=None,  # type: ignore[arg-type]
            )
            conn._answered(jobs)
            expected = [response_of(job) for job in jobs]
            assert conn._outbox == expected, seed
            assert [list(r) for r in conn._outbox] == [list(r) for r in expected], seed
            assert protocol.encode_responses("n1", conn._outbox) == protocol.encode_responses(
                "n1", expected
            )
            charged = sum(_reference_charge(r) for r in expected)
            assert conn._queued == charged == conn.budget.held, seed

    trio.run(main)


class _MetricsStore:
    def __init__(self) -> None:
        self.registry = Registry()
        self.metrics = ApiMetrics.register(
            self.registry,
            proposal_batches=lambda: 0,
            proposals=lambda: 0,
            read_confirmations=lambda: 0,
        )


def test_counted_requests_are_counted_per_operation_and_outcome() -> None:
    """``ApiService._count`` counts a run of jobs of one operation answered "ok" by its
    length: the requests counted per (operation, outcome), the label sets in their order of
    first appearance, and the writes and reads observed are those of one count per job,
    over random frames (writes and reads, errors, unknown operations, runs broken)."""
    ops = [HANDLERS["workload.scale"], HANDLERS["workload.create"], HANDLERS["workload.get"]]

    async def main() -> None:
        for seed in range(300):
            rng = random.Random(seed)
            store = _MetricsStore()
            service = ApiService(store=store)  # type: ignore[arg-type]
            expected: dict[tuple[str, str], int] = {}
            writes = reads = 0
            frames = []
            for _ in range(rng.randint(1, 4)):
                jobs = []
                for _ in range(rng.randint(1, 40)):
                    op = rng.choice(ops) if rng.random() < 0.95 else None
                    job = Job("x" if op is None else op.name, {}, op=op)
                    roll = rng.random()
                    if roll < 0.1:
                        job.error = NotFound("gone")
                    elif roll < 0.13:
                        job.error = RuntimeError("a bug")
                    jobs.append(job)
                    if op is None:
                        continue
                    error = job.error
                    labels = (
                        op.name,
                        "ok" if error is None else getattr(error, "code", "internal"),
                    )
                    expected[labels] = expected.get(labels, 0) + 1
                    writes += op.is_write
                    reads += not op.is_write
                frames.append(jobs)
            for jobs in frames:
                service._count(jobs, trio.current_time())
            assert list(service._counters) == list(expected), seed
            prom = store.registry.prom
            for (name, outcome), n in expected.items():
                got = prom.get_sample_value(
                    "univrs_api_requests_total", {"op": name, "outcome": outcome}
                )
                assert got == n, (seed, name, outcome)
            assert (prom.get_sample_value("univrs_api_write_seconds_count") or 0) == writes
            assert (prom.get_sample_value("univrs_api_read_seconds_count") or 0) == reads

    trio.run(main)


class _Frame:
    """A ``Waiting`` of one answer: ``ok`` once filled, ``timeout`` at its deadline."""

    def __init__(self, conn: fast._ClientConnection, rid: int, deadline: float) -> None:
        self.conn, self.rid, self.at = conn, rid, deadline
        self.pending: list[int] = [rid]
        self.filled = False
        self.fire: Any = None

    def watch(self, fn: Any) -> None:
        self.fire = fn

    def fill(self) -> None:
        self.filled = True
        self.fire()

    def deadline(self) -> float:
        return self.at

    def settle(self, now: float) -> None:
        if self.filled:
            self.conn._send([{"id": self.rid, "ok": {"v": 1}}])
        elif now >= self.at:
            self.conn._send([{"id": self.rid, "error": {"code": "timeout", "message": "late"}}])
        else:
            return
        self.pending = []

    def abandon(self) -> None:
        self.pending = []


class _Runtime2:
    class view:
        @staticmethod
        def last_status() -> Any:
            return type("S", (), {"leader": "n1"})

    @staticmethod
    def at_apply_end(fn: Any) -> bool:
        return False


class _Service:
    class node:
        runtime = _Runtime2


class _Wire:
    def __init__(self, on_write: Any) -> None:
        self.on_write = on_write
        self.written: list[tuple[float, list[Any]]] = []

    def write_now(self, frame: bytes) -> None:
        _, responses = protocol.decode_responses(frame)
        self.written.append((trio.current_time(), [r["id"] for r in responses]))
        self.on_write()


async def test_the_writer_s_kept_scope_wakes_it_at_a_deadline_brought_forward_while_awake() -> None:
    """The writer keeps its sleeping scope across wake-ups (session 30); a frame added while it
    is awake (here: while it writes a frame) with a deadline earlier than the scope's is still
    answered at its own deadline, not at the scope's. Fails if the writer sleeps again in its
    kept scope without bringing the deadline forward."""
    added: list[_Frame] = []

    def on_write() -> None:
        if not added:  # the first frame written: a frame due in 0.2 s comes meanwhile
            frame = _Frame(conn, 3, trio.current_time() + 0.2)
            added.append(frame)
            conn.inline.add(frame, [], set())

    wire = _Wire(on_write)
    async with trio.open_nursery() as nursery:
        conn = fast._ClientConnection(
            ws=None,  # type: ignore[arg-type]
            service=_Service,  # type: ignore[arg-type]
            remote="test",
            scope=nursery.cancel_scope,
            budget=AnswerBudget(AnswerPool()),
            wire=wire,  # type: ignore[arg-type]
        )
        nursery.start_soon(conn.write_responses)
        await trio.sleep(0.01)
        start = trio.current_time()
        slow = _Frame(conn, 1, start + 5)  # the scope's deadline: 5 s
        conn.inline.add(slow, [], set())
        quick = _Frame(conn, 2, start + 5)
        conn.inline.add(quick, [], set())
        await trio.sleep(0.01)
        quick.fill()
        with trio.fail_after(3):
            while len(wire.written) < 2:
                await trio.sleep(0.01)
        (_, first), (at, second) = wire.written
        assert first == [2] and second == [3]
        assert at - start < 1.0
        assert conn.budget.held == 0 and conn._in_flight == -2  # (no reader counted them)
        nursery.cancel_scope.cancel()
