"""A frame of writes on the leader without a task of its own, and its answer written without
scheduling rounds (s16-api: univrs/api/inline.py, univrs/client/wire.py, univrs/api/fast.py).

Each test says which change it catches: without it, it fails."""

from __future__ import annotations

import gc
import pathlib
import weakref
from collections import Counter
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)

from tests.api.helpers import WORKLOAD, open_cluster, wait_until
from univrs import codec
from univrs.api import fast, fast_writer
from univrs.api.batcher import FrameWait
from univrs.api.inline import InlineFrames
from univrs.api.service import ApiService
from univrs.client import protocol
from univrs.client.wire import Wire
from univrs.net import wsdirect
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.waiter import Waiter
from univrs.server.node import Node


class _Steps(trio.abc.Instrument):
    """Task steps by task name."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] += 1


async def _hello(node: Node) -> Any:
    port = node.raft_port
    assert port is not None
    return open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False)


async def _answers(ws: WebSocketConnection, n: int, limit: float = 30) -> dict[int, Any]:
    answers: dict[int, Any] = {}
    with trio.fail_after(limit):
        while len(answers) < n:
            _, responses = protocol.decode_responses(await ws.get_message())
            answers.update({r["id"]: r for r in responses})
    return answers


def _scale(i: int, replicas: int, **extra: Any) -> dict[str, Any]:
    return {"id": i, "op": "workload.scale", "args": {"id": "w", "replicas": replicas}, **extra}


async def _with_workload(ws: Any) -> None:
    """The client hello, then workload ``w`` created (answered ``ok``)."""
    await ws.send_message(protocol.encode_client_hello())
    await ws.get_message()
    create = {"id": 0, "op": "workload.create", "args": {"id": "w", "spec": WORKLOAD}}
    await ws.send_message(codec.encode_plain([create]))
    assert "ok" in (await _answers(ws, 1))[0]


async def test_a_frame_of_writes_costs_the_api_two_task_steps(tmp_path: pathlib.Path) -> None:
    """One write per frame, one frame at a time (one client): the leader's API tasks step
    about once per frame (the writer; the reader is trio-websocket's handler task, not
    counted here). Before s16-api: the frame's task three steps and the writer three (the
    stream lock's checkpoint and the send's): six. Fails with either change undone (no
    inline frames: >= 4 per frame; the writer through ``send_message``: 3 per frame)."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        async with await _hello(node) as ws:
            await _with_workload(ws)
            steps = _Steps()
            trio.lowlevel.add_instrument(steps)
            try:
                for i in range(1, 21):
                    await ws.send_message(codec.encode_plain([_scale(i, i % 5 + 1)]))
                    answer = await _answers(ws, 1)
                    assert "ok" in answer[i], answer
            finally:
                trio.lowlevel.remove_instrument(steps)
        # (The writer, ``write_responses``, is defined in fast_writer.py: named after it.)
        serving = ("univrs.api.fast.", "univrs.api.fast_writer.")
        api = {n: c for n, c in steps.steps.items() if n.startswith(serving)}
        # 20 frames: one writer step each (a loaded machine may add a stray one or two).
        assert sum(api.values()) <= 24, api
        assert not any("_handle_frame" in n for n in api), api


async def _twenty_writes(tmp_path: pathlib.Path) -> Counter[str]:
    """20 writes, one frame at a time, on a one-node cluster: the leader's task steps."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        async with await _hello(node) as ws:
            await _with_workload(ws)
            steps = _Steps()
            trio.lowlevel.add_instrument(steps)
            try:
                for i in range(1, 21):
                    await ws.send_message(codec.encode_plain([_scale(i, i % 5 + 1)]))
                    answer = await _answers(ws, 1)
                    assert "ok" in answer[i], answer
            finally:
                trio.lowlevel.remove_instrument(steps)
    return steps.steps


def _writer_steps(steps: Counter[str]) -> int:
    return sum(c for n, c in steps.items() if n.endswith("write_responses"))


async def test_an_answer_is_written_from_the_step_that_applied_its_write(
    tmp_path: pathlib.Path,
) -> None:
    """With the connection's writer asleep, a write's answer is rendered and written at the
    end of the apply that filled its waiter, in that step (``_answer_on_step``, issue 14
    round 19): the writer does not step for it. Before: one writer step per frame (20)."""
    steps = await _twenty_writes(tmp_path)
    assert _writer_steps(steps) <= 4, steps


async def test_an_answer_the_socket_would_not_take_whole_goes_to_the_writer(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket whose send buffer has no room for the frame (a client not reading): nothing
    is written from the step, the writer sends it as before (waiting for room if need be);
    the answers all arrive, in order, once each."""
    monkeypatch.setattr(wsdirect, "_room", lambda sock: 0)
    steps = await _twenty_writes(tmp_path)
    assert _writer_steps(steps) >= 20, steps


def _never_filled(monkeypatch: pytest.MonkeyPatch) -> list[Waiter[Any]]:
    """The runtime takes proposals and never settles them (no commit, no failure): every
    waiter it hands out, kept here."""
    handed: list[Waiter[Any]] = []

    def nowait(self: RaftRuntime, envelopes: Any) -> tuple[list[Waiter[Any]], None]:
        waiters: list[Waiter[Any]] = [Waiter() for _ in envelopes]
        handed.extend(waiters)
        return waiters, None

    monkeypatch.setattr(RaftRuntime, "propose_together_nowait", nowait)
    return handed


async def test_inline_writes_are_answered_at_their_deadlines_earliest_first(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No outcome ever comes: a frame with a 5 s deadline, then one with 0.2 s. The second is
    answered ``timeout`` (maybe applied) at its own deadline, long before the first, and its
    waiter is failed (a proposal not handed to the core yet is skipped). Fails if a new
    frame's earlier deadline does not bring the sleeping writer's forward (it is answered at
    5 s), or if the writer never wakes for deadlines (never)."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        handed = _never_filled(monkeypatch)
        async with await _hello(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            await ws.send_message(codec.encode_plain([_scale(1, 2, timeout_ms=5000)]))
            await wait_until(lambda: len(handed) == 1, "the first frame's proposal", 10)
            start = trio.current_time()
            await ws.send_message(codec.encode_plain([_scale(2, 3, timeout_ms=200)]))
            first = await _answers(ws, 1, limit=3.0)  # far before the first frame's deadline
            took = trio.current_time() - start
            assert list(first) == [2], first
            assert first[2]["error"]["code"] == "timeout", first
            assert took < 3.0
            assert handed[1].done and not handed[0].done
            second = await _answers(ws, 1, limit=15)
            assert second[1]["error"]["code"] == "timeout", second
            assert handed[0].done


async def test_a_dropped_connection_abandons_its_inline_writes(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes waiting with a 60 s deadline, no outcome coming: closing the connection fails
    their waiters at once (so proposals not handed to the core yet are skipped), as the frame
    task's cancellation did. Fails without ``InlineFrames.abandon`` when the connection
    ends (the waiters wait for the deadline)."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        handed = _never_filled(monkeypatch)
        async with await _hello(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            frame = [_scale(i, 2, timeout_ms=60_000) for i in range(4)]
            await ws.send_message(codec.encode_plain(frame))
            await ws.send_message(codec.encode_plain([_scale(9, 2, timeout_ms=60_000)]))
            await wait_until(lambda: len(handed) == 5, "the frames' proposals", 10)
        await wait_until(lambda: all(w.done for w in handed), "the waiters abandoned", 10)
        for waiter in handed:
            with pytest.raises(Exception, match="abandoned"):
                waiter.result()


async def test_a_client_that_reads_nothing_stalls_only_itself(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile client pipelines frames of writes and never reads an answer. What it gets:
    its requests in flight stop at ``MAX_IN_FLIGHT`` (then the node stops reading it, TCP
    pushes back), its inline frames and their heap stay bounded by them, and after
    ``SEND_TIMEOUT`` without reading it is dropped. Meanwhile another client's writes are
    answered as usual. (The writer's half-written frame with the stream lock held, and its
    drop at the timeout, are the code paths this drives: fails if the writer blocks the
    node or keeps the hostile connection.)"""
    monkeypatch.setattr(fast, "MAX_IN_FLIGHT", 64)
    monkeypatch.setattr(fast_writer, "SEND_TIMEOUT", 2.0)
    frames: list[InlineFrames] = []
    real_add = InlineFrames.add

    def add(self: InlineFrames, *args: Any) -> None:
        if self not in frames:
            frames.append(self)
        real_add(self, *args)

    monkeypatch.setattr(InlineFrames, "add", add)
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        big = {**WORKLOAD, "labels": {f"k{i}": "v" * 200 for i in range(40)}}
        async with await _hello(node) as good, await _hello(node) as bad:
            for ws in (good, bad):
                await ws.send_message(protocol.encode_client_hello())
                await ws.get_message()
            await good.send_message(
                codec.encode_plain(
                    [{"id": 0, "op": "workload.create", "args": {"id": "w", "spec": big}}]
                )
            )
            assert "ok" in (await _answers(good, 1))[0]
            sent = 0
            dropped = trio.Event()

            async def flood() -> None:
                nonlocal sent
                try:
                    while True:
                        frame = [_scale(sent + k, k % 7 + 1) for k in range(16)]
                        await bad.send_message(codec.encode_plain(frame))
                        sent += 16
                except ConnectionClosed:
                    dropped.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                await wait_until(lambda: sent > 64, "the flood", 10)
                for i in range(1, 21):
                    await good.send_message(codec.encode_plain([_scale(i, i % 5 + 1)]))
                    assert "ok" in (await _answers(good, 1, limit=10))[i]
                    assert all(f.waiting() <= 64 for f in frames)
                # Dropped after SEND_TIMEOUT without reading (the node's writer gave up).
                with trio.fail_after(60):
                    await dropped.wait()
            assert sent > 64


async def test_a_frame_left_half_written_holds_the_stream_until_it_is_sent() -> None:
    """A message the socket does not take at once (a client not reading) keeps the
    connection's stream lock until its rest is sent, so another sender of the connection (the
    library answering a ping, ``send_message``) cannot put its bytes inside it: the client
    reads every message whole and in order. Fails if ``write_now`` released the lock with a
    part left (the other message lands inside the first: the client's protocol error)."""
    got: list[bytes] = []
    sizes = [16 << 20, 100, 2 << 20]
    done, written = trio.Event(), trio.Event()

    async def server(request: WebSocketRequest) -> None:
        ws = await request.accept()
        wire = Wire(ws)
        assert wire.direct
        first = wire.write_now(b"a" * sizes[0])
        assert (
            first is not None and first.wire is not None
        )  # 16 MB: the socket does not take it all
        lock: Any = ws._stream_lock
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.send_message, b"b" * sizes[1])  # waits for the lock
            await wait_until(lambda: lock.statistics().tasks_waiting == 1, "the sender", 10)
            written.set()  # only now does the client read
            await wire.finish(first)
        rest = wire.write_now(b"c" * sizes[2])
        if rest is not None:
            await wire.finish(rest)
        await done.wait()

    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(serve_websocket, server, "127.0.0.1", 0, None)
        port = ws_server.port
        async with open_websocket(
            "127.0.0.1", port, "/", use_ssl=False, max_message_size=32 << 20
        ) as client:
            await written.wait()
            with trio.fail_after(20):
                for _ in sizes:
                    message = await client.get_message()
                    assert isinstance(message, bytes)
                    got.append(message)
            done.set()
        nursery.cancel_scope.cancel()
    assert [len(m) for m in got] == sizes
    assert got[0] == b"a" * sizes[0] and got[1] == b"b" * sizes[1]


async def test_an_answered_inline_frame_is_freed_without_the_garbage_collector(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inline frame's objects (its ``FrameWait``, the waiters telling the connection) form
    no reference cycle once answered: freed by reference counting, not left for the garbage
    collector, whose full passes walk the whole heap (left to it, frames of 16 writes cost 57
    instead of 42 µs per write in scripts/bench_client_path.py). Fails if a filled waiter
    keeps its ``notify`` function (which refers to the frame, which refers to the waiter)."""
    waits: list[weakref.ref[FrameWait]] = []
    real_add = InlineFrames.add

    def add(self: InlineFrames, wait: FrameWait, *args: Any) -> None:
        waits.append(weakref.ref(wait))
        real_add(self, wait, *args)

    monkeypatch.setattr(InlineFrames, "add", add)
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        async with await _hello(node) as ws:
            await _with_workload(ws)
            gc.collect()
            gc.disable()
            try:
                for i in range(1, 6):
                    await ws.send_message(codec.encode_plain([_scale(i, i % 3 + 1)]))
                    assert "ok" in (await _answers(ws, 1))[i]
                await wait_until(lambda: waits[1]() is None, "the second frame freed", 10)
                assert [ref() is None for ref in waits[:4]] == [True] * 4
            finally:
                gc.enable()


class _FullOnce:
    """Stands in for the runtime's inbox sender: full at the first ``send_nowait``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.refused = 0

    def send_nowait(self, value: object) -> None:
        if not self.refused:
            self.refused += 1
            raise trio.WouldBlock
        self.inner.send_nowait(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_an_inline_frame_meeting_a_full_inbox_is_handed_over_when_it_has_room(
    tmp_path: pathlib.Path,
) -> None:
    """The runtime's inbox is full when the reader hands a frame's writes over: they are
    handed over by a task when it has room (``propose_now``'s ``_hand_over``), and answered
    as usual. Fails if the reader dropped the event (the writes answered ``timeout``)."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        async with await _hello(node) as ws:
            await _with_workload(ws)
            sender = _FullOnce(node.runtime.inbox.sender)
            node.runtime.inbox.sender = sender  # type: ignore[assignment]
            try:
                frame = [_scale(i, i + 1, timeout_ms=3000) for i in (1, 2)]
                await ws.send_message(codec.encode_plain(frame))
                answers = await _answers(ws, 2)
            finally:
                node.runtime.inbox.sender = sender.inner
        assert sender.refused == 1
        assert all("ok" in a for a in answers.values()), answers
        assert answers[2]["ok"]["spec"]["replicas"] == 3


async def test_a_bug_serving_an_inline_frame_answers_internal_and_the_node_carries_on(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping ``start_writes`` (a bug) answers the frame's writes with
    ``internal``, and the connection and the node serve the next frame. Fails if the reader
    lets it escape (the connection goes down with it)."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        real = ApiService.start_writes
        calls = 0

        def broken(self: ApiService, *args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            return real(self, *args)

        monkeypatch.setattr(ApiService, "start_writes", broken)
        async with await _hello(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            create = {"id": 0, "op": "workload.create", "args": {"id": "w", "spec": WORKLOAD}}
            await ws.send_message(codec.encode_plain([create, {**create, "id": 1}]))
            failed = await _answers(ws, 2)
            assert {a["error"]["code"] for a in failed.values()} == {"internal"}, failed
            await ws.send_message(codec.encode_plain([{**create, "id": 2}]))
            assert "ok" in (await _answers(ws, 1))[2]


async def test_a_frame_mixing_writes_and_reads_sends_only_its_reads_through_a_task(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that multiplexes reads and writes on one connection sends frames of both: the
    writes go the inline way (``start_writes``) and only the rest (a read, a malformed
    request, an unknown operation) through ``_handle_frame`` and ``execute_many`` (session
    21). Fails without the split: ``execute_many`` gets the writes too. Every request is
    answered once, as before."""
    seen: list[list[str]] = []
    original = ApiService.execute_many

    async def spy(self: ApiService, jobs: Any, *args: Any, **kwargs: Any) -> None:
        seen.append([job.name for job in jobs])
        await original(self, jobs, *args, **kwargs)

    monkeypatch.setattr(ApiService, "execute_many", spy)
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        async with await _hello(node) as ws:
            await _with_workload(ws)
            seen.clear()
            frame = [
                _scale(1, 2),
                {"id": 2, "op": "workload.get", "args": {"id": "w"}},
                _scale(3, 3),
                {"id": 4, "op": "no.such.op", "args": {}},
                {"id": 5, "op": "workload.scale", "args": {"id": "w", "replicas": "x"}},
                {"id": 6, "op": "workload.get", "args": {"id": "w"}, "answer": "sideways"},
            ]
            await ws.send_message(codec.encode_plain(frame))
            answers = await _answers(ws, 6)
            assert sorted(answers) == [1, 2, 3, 4, 5, 6]
            assert "ok" in answers[1] and "ok" in answers[3], answers
            assert answers[2]["ok"]["id"] == "w"
            assert answers[4]["error"]["code"] == "not-found", answers[4]
            assert answers[5]["error"]["code"] == "invalid-argument", answers[5]
            assert answers[6]["error"]["code"] == "malformed-request", answers[6]
            # The writes (1, 3 and the bad scale 5) were not in the task's frame.
            assert seen == [["workload.get", "no.such.op"]], seen
            # A frame of reads of one consistency alone has no task either (session 22:
            # univrs/api/inline_reads.py); one of two consistencies goes through the task.
            seen.clear()
            await ws.send_message(
                codec.encode_plain([{"id": 7, "op": "workload.get", "args": {"id": "w"}}])
            )
            assert "ok" in (await _answers(ws, 1))[7]
            assert seen == []
            mixed = [
                {"id": 8, "op": "workload.get", "args": {"id": "w"}},
                {"id": 9, "op": "workload.get", "args": {"id": "w"}, "consistency": "local"},
            ]
            await ws.send_message(codec.encode_plain(mixed))
            answers = await _answers(ws, 2)
            assert "ok" in answers[8] and "ok" in answers[9], answers
            assert seen == [["workload.get", "workload.get"]]


class _OneRead:
    """A ``Waiting`` of one job, answered at its first ``settle`` once filled."""

    def __init__(self) -> None:
        self.pending: list[object] = [object()]
        self.fire: Any = None

    def watch(self, fn: Any) -> None:
        self.fire = fn

    def deadline(self) -> float:
        return trio.current_time() + 3600

    def settle(self, now: float) -> None:
        self.pending = []

    def abandon(self) -> None:
        self.pending = []


async def test_an_answered_frame_s_heap_entry_lets_go_of_the_frame() -> None:
    """An answered frame's entry stays in the deadline heap until it reaches the top or the
    heap is rebuilt (up to 256 entries: a one-client leader whose answers are written in the
    driver's step never pops them), but it no longer keeps the frame's waiter, jobs and
    answers alive: some 50 containers a frame that the cyclic GC's young collections walked
    and promoted (session 29). Fails if ``settle`` leaves the answered ``_Inline`` as it was."""
    frames = InlineFrames(wake=lambda: None, bug=lambda *_: None)
    wait = _OneRead()
    ref = weakref.ref(wait)
    frames.add(wait, [], set())
    wait.fire()
    del wait
    frames.settle()
    assert frames.waiting() == 0 and len(frames._heap) == 1  # the entry is still there ...
    assert ref() is None  # ... and the frame is gone, by reference counting alone
