"""Per-frame batching of the fast protocol (univrs/api/fast.py, ``ApiService.execute_many``,
``RaftStateStore.submit_many``): one task and one proposer hand-off per frame, while every
request keeps its own answer, its own errors, exactly-once and its caller's rights."""

from __future__ import annotations

import functools
import pathlib
from collections import Counter
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket

from tests.api.helpers import (
    WORKLOAD,
    open_cluster,
    wait_until,
)
from tests.api.test_auth import lagging_follower_with_fresh_token
from univrs import codec
from univrs.api import inline_reads
from univrs.api.coalescer import ReadCoalescer
from univrs.api.fast import _ClientConnection
from univrs.api.service import ApiService
from univrs.client import protocol
from univrs.client.connection import Connection
from univrs.runtime.driver import RaftRuntime
from univrs.server.node import Node


class _TaskCounter(trio.abc.Instrument):
    """Counts the tasks spawned, by name."""

    def __init__(self) -> None:
        self.spawned: Counter[str] = Counter()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned[task.name] += 1


class _CountingSender:
    """Stands in for a runtime's inbox sender: counts what is sent, by type, and forwards."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: Counter[str] = Counter()

    async def send(self, value: object) -> None:
        self.sent[type(value).__name__] += 1
        await self.inner.send(value)

    def send_nowait(self, value: object) -> None:
        self.sent[type(value).__name__] += 1
        self.inner.send_nowait(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _exchange(ws: WebSocketConnection, frame: list[dict[str, Any]]) -> dict[int, Any]:
    """Send one raw frame; every response by id."""
    await ws.send_message(codec.encode_plain(frame))
    answers: dict[int, Any] = {}
    with trio.fail_after(30):
        while len(answers) < len(frame):
            _, responses = protocol.decode_responses(await ws.get_message())
            answers.update({r["id"]: r for r in responses})
    return answers


async def _raw(node: Node, token: str | None = None) -> Any:
    port = node.raft_port
    assert port is not None
    return open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False)


async def test_a_frame_is_no_task_one_proposer_hand_off_and_one_read_round(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    """A frame of eight writes on the leader: no task at all (the connection's reader proposes
    them, its writer answers them: s16-api) and one proposal event to the runtime's driver; a
    frame of eight linearizable reads: no task either (session 22: univrs/api/inline_reads.py)
    and one ReadIndex round joined. The old code spawned a task per request, sent one
    ``Propose`` per write and waited once per read; the code of rounds 4-15 spawned one task per
    frame of writes, that of sessions 16-21 one per frame of reads: this fails there."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        joins = 0
        real_join = ReadCoalescer.join

        def counted_join(self: ReadCoalescer, notify: Any = None) -> Any:
            nonlocal joins
            joins += 1
            return real_join(self, notify)

        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            created = await _exchange(
                ws,
                [
                    {"id": i, "op": "workload.create", "args": {"id": f"w{i}", "spec": WORKLOAD}}
                    for i in range(8)
                ],
            )
            assert all("ok" in r for r in created.values()), created
            counter = _TaskCounter()
            sender = _CountingSender(node.runtime.inbox.sender)
            node.runtime.inbox.sender = sender  # type: ignore[assignment]
            # What the driver's step takes, through the inbox or in the reader's own task
            # (session 28: the driver waits idle here, so the reader steps the proposals).
            handled: Counter[str] = Counter()
            real_handle = RaftRuntime._handle

            def counted_handle(self: RaftRuntime, ev: object) -> None:
                handled[type(ev).__name__] += 1
                real_handle(self, ev)

            monkeypatch.setattr(RaftRuntime, "_handle", counted_handle)
            trio.lowlevel.add_instrument(counter)
            try:
                written = await _exchange(
                    ws,
                    [
                        {"id": i, "op": "workload.scale", "args": {"id": f"w{i}", "replicas": 2}}
                        for i in range(8)
                    ],
                )
            finally:
                trio.lowlevel.remove_instrument(counter)
                node.runtime.inbox.sender = sender.inner
            write_tasks = _api_tasks(counter)
            counter = _TaskCounter()
            monkeypatch.setattr(ReadCoalescer, "join", counted_join)
            trio.lowlevel.add_instrument(counter)
            try:
                read = await _exchange(
                    ws, [{"id": i, "op": "workload.get", "args": {"id": f"w{i}"}} for i in range(8)]
                )
            finally:
                trio.lowlevel.remove_instrument(counter)
                monkeypatch.undo()
            read_tasks = _api_tasks(counter)
        assert all("ok" in r for r in written.values()), written
        assert len({r["meta"]["index"] for r in written.values()}) == 8  # applied once each
        assert all(r["ok"]["spec"]["replicas"] == 2 for r in read.values()), read
        assert sum(write_tasks.values()) == 0, write_tasks  # no task for a frame of writes
        proposals = handled["Propose"] + handled["ProposeMany"]
        assert proposals == 1, handled  # one hand-off for the frame's eight writes
        # ... stepped in the reader's task: nothing proposed went through the inbox.
        assert sender.sent["Propose"] + sender.sent["ProposeMany"] == 0, sender.sent
        # No task for a frame of reads either (univrs/api/inline_reads.py), and one ReadIndex
        # round joined for its eight reads.
        assert sum(read_tasks.values()) == 0, read_tasks
        assert joins == 1


def _api_tasks(counter: _TaskCounter) -> dict[str, int]:
    """The request-serving tasks among those counted (fast.py and its writer, fast_writer.py,
    service.py, frame_reads.py, store.py; not the ReadCoalescer's one task per confirmation)."""
    serving = (
        "univrs.api.fast.",
        "univrs.api.fast_writer.",
        "univrs.api.service.",
        "univrs.api.frame_reads.",
        "univrs.api.store.",
    )
    return {n: c for n, c in counter.spawned.items() if n.startswith(serving)}


async def test_one_bad_request_in_a_frame_fails_only_itself(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            answers = await _exchange(
                ws,
                [
                    {"id": 1, "op": "workload.create", "args": {"id": "good", "spec": WORKLOAD}},
                    {"id": 2, "op": "workload.create", "args": {"id": "bad", "spec": {"x": 1}}},
                    {"id": 3, "op": "workload.scale", "args": {"id": "nope", "replicas": 1}},
                    {"id": 4, "op": "workload.explode", "args": {}},
                    {"id": 5, "op": "session.open", "args": {}, "key": ["c", 1]},
                    {"id": 6, "op": "workload.list", "args": [1]},  # malformed: args not a map
                    {"id": 7, "op": "workload.get", "args": {"id": "nope"}},
                    {"id": 8, "op": "workload.list", "args": {}, "consistency": "local"},
                    {"id": 9, "op": "workload.create", "args": {"id": "good2", "spec": WORKLOAD}},
                    {"id": 10, "op": "workload.scale", "args": {"id": "good", "replicas": -1}},
                ],
            )
        codes = {rid: r.get("error", {}).get("code") for rid, r in answers.items()}
        assert codes == {
            1: None,
            2: "invalid-argument",
            3: "not-found",
            4: "not-found",
            5: "invalid-argument",
            6: "malformed-request",
            7: "not-found",
            8: None,
            9: None,
            10: "invalid-argument",
        }, answers
        assert answers[1]["ok"]["id"] == "good" and answers[9]["ok"]["id"] == "good2"
        assert answers[1]["meta"]["index"] != answers[9]["meta"]["index"]
        assert node.runtime.sm.get_workload("good") is not None
        assert node.runtime.sm.get_workload("good2") is not None
        assert node.runtime.sm.get_workload("bad") is None


async def test_keyed_writes_in_a_frame_apply_exactly_once(tmp_path: pathlib.Path) -> None:
    """The same keyed write twice in one frame, and the frame sent again: one application,
    every copy answered with the first response (the session's dedup, per request)."""
    async with open_cluster(tmp_path, size=1) as cluster, trio.open_nursery() as nursery:
        (node,) = cluster.running()
        conn = await Connection.open(nursery, cluster.client_address(node))
        opened, _ = await conn.request("session.open", {})
        client = opened["client_id"]
        conn.close()
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            frame = [
                {"id": 1, "op": "workload.create", "args": {"spec": WORKLOAD}, "key": [client, 1]},
                {"id": 2, "op": "workload.create", "args": {"spec": WORKLOAD}, "key": [client, 1]},
                {"id": 3, "op": "workload.create", "args": {"spec": WORKLOAD}, "key": [client, 2]},
            ]
            first = await _exchange(ws, frame)
            again = await _exchange(ws, frame)  # a client's retry of the whole frame
        assert all("ok" in r for r in first.values()), first
        # Each request built its own id; the duplicate's answer is the first application's.
        index = first[1]["meta"]["index"]
        assert first[2]["meta"]["index"] == index and again[1]["meta"]["index"] == index
        assert again[2]["meta"]["index"] == index
        assert again[3]["meta"]["index"] == first[3]["meta"]["index"] != index
        assert len(list(node.runtime.sm.iter_workloads())) == 2  # applied once each


async def test_a_frame_of_callers_is_authorized_per_request(tmp_path: pathlib.Path) -> None:
    """Auth on: one frame with the hello's (read-only) token, a request's own admin token and a
    bogus one: each request is answered for its own caller."""
    async with open_cluster(tmp_path, size=1, auth_enabled=True) as cluster:
        (node,) = cluster.running()
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            boot = await _exchange(ws, [{"id": 1, "op": "token.bootstrap", "args": {}}])
            admin = boot[1]["ok"]["secret"]
            made = await _exchange(
                ws,
                [
                    {
                        "id": 2,
                        "op": "token.create",
                        "args": {"name": "reader", "roles": ["read"]},
                        "token": admin,
                    }
                ],
            )
            reader = made[2]["ok"]["secret"]
        await wait_until(
            functools.partial(lambda n: len(n.runtime.sm.tokens()) == 2, node), "two tokens"
        )
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello(reader))
            await ws.get_message()
            spec = {"spec": WORKLOAD}
            answers = await _exchange(
                ws,
                [
                    {"id": 1, "op": "workload.create", "args": spec},  # the hello's: read only
                    {"id": 2, "op": "workload.create", "args": spec, "token": admin},
                    {"id": 3, "op": "workload.create", "args": spec, "token": "univrs.bogus"},
                    {"id": 4, "op": "workload.list", "args": {}},
                    {"id": 5, "op": "workload.list", "args": {}, "token": "univrs.bogus"},
                    # The callers of one operation taking turns (s18-ingress: a frame's
                    # permission is asked once per run of one caller and operation, not
                    # reused for another caller).
                    {"id": 6, "op": "workload.create", "args": spec, "token": admin},
                    {"id": 7, "op": "workload.create", "args": spec},
                    {"id": 8, "op": "workload.create", "args": spec, "token": admin},
                    {"id": 9, "op": "workload.create", "args": spec},
                ],
            )
        codes = {rid: r.get("error", {}).get("code") for rid, r in answers.items()}
        assert codes == {
            1: "permission-denied",
            2: None,
            3: "unauthenticated",
            4: None,
            5: "unauthenticated",
            6: None,
            7: "permission-denied",
            8: None,
            9: "permission-denied",
        }, answers


async def test_each_write_of_a_frame_keeps_its_own_deadline(tmp_path: pathlib.Path) -> None:
    """No quorum: of two writes in one frame, the one with the shorter deadline is answered at
    its deadline, in a response of its own, while the other still waits (its answer is not
    held back until the frame's last request is done)."""
    async with open_cluster(tmp_path, size=3) as cluster:
        leader = await cluster.wait_leader()
        for follower in cluster.followers():
            await cluster.kill(follower.config.node_id)
        async with await _raw(leader) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            spec = {"spec": WORKLOAD}
            frame = [
                {"id": 1, "op": "workload.create", "args": spec, "timeout_ms": 300},
                {"id": 2, "op": "workload.create", "args": spec, "timeout_ms": 8000},
            ]
            await ws.send_message(codec.encode_plain(frame))
            with trio.fail_after(6):  # well before the second write's deadline
                _, first = protocol.decode_responses(await ws.get_message())
            assert [r["id"] for r in first] == [1], first
            assert first[0]["error"]["code"] in ("timeout", "unavailable"), first
            with trio.fail_after(20):
                _, second = protocol.decode_responses(await ws.get_message())
            assert [r["id"] for r in second] == [2], second
            assert "error" in second[0], second


async def test_a_bug_serving_a_frame_answers_internal_and_the_node_carries_on(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    """An exception escaping ``execute_many`` (a bug) answers the frame's requests with
    ``internal`` instead of taking the connection (and the node) down with it. (A frame of
    reads of two consistencies: one of one consistency has no task: the next test.)"""
    async with open_cluster(tmp_path, size=1) as cluster, trio.open_nursery() as nursery:
        (node,) = cluster.running()

        async def broken(self: ApiService, jobs: Any, answered: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(ApiService, "execute_many", broken)
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            frame = [{"id": i, "op": "workload.list", "args": {}} for i in range(3)]
            frame[0]["consistency"] = "local"
            answers = await _exchange(ws, frame)
        assert {r["error"]["code"] for r in answers.values()} == {"internal"}, answers
        monkeypatch.undo()
        conn = await Connection.open(nursery, cluster.client_address(node))
        page, _ = await conn.request("workload.list", {})
        assert page["items"] == []
        conn.close()


@pytest.mark.parametrize("where", ["start", "settle"])
async def test_a_bug_serving_a_frame_of_reads_inline_answers_internal(
    tmp_path: pathlib.Path, monkeypatch: Any, where: str
) -> None:
    """A frame of reads served with no task (univrs/api/inline_reads.py): an exception (a bug)
    while starting them in the reader's step, or while rendering them in the writer's settle,
    answers each of them ``internal``, once, and the connection and the node carry on. Fails
    if the exception escapes into the reader or the writer (the connection is dropped: no
    answers), or if a read is left unanswered."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        target = (inline_reads, "start_reads") if where == "start" else (ApiService, "render_ready")
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            monkeypatch.setattr(*target, broken)
            frame = [{"id": i, "op": "workload.list", "args": {}} for i in range(3)]
            answers = await _exchange(ws, frame)
            assert sorted(answers) == [0, 1, 2]
            assert {r["error"]["code"] for r in answers.values()} == {"internal"}, answers
            monkeypatch.undo()
            again = await _exchange(ws, [{"id": 9, "op": "workload.list", "args": {}}])
            assert again[9]["ok"]["items"] == [], again


class _Lifetimes(trio.abc.Instrument):
    """Request-serving tasks (fast.py's connection and its writer, which trio names after
    fast_writer.py where ``write_responses`` is defined; service.py, frame_reads.py,
    store.py) alive now."""

    def __init__(self) -> None:
        self.alive: set[trio.lowlevel.Task] = set()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith(
            (
                "univrs.api.fast._Client",
                "univrs.api.fast_writer.AnswerWriter.",
                "univrs.api.store.",
                "univrs.api.service.",
                "univrs.api.frame_reads.",
            )
        ):
            self.alive.add(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.alive.discard(task)


async def test_a_dropped_connection_cancels_its_frames_waits(tmp_path: pathlib.Path) -> None:
    """No quorum, a frame of writes waiting with a 60 s deadline (for their entries to commit,
    or for a leader): closing the connection ends the frame's tasks (and its proposals' waits)
    at once, not at the deadline."""
    async with open_cluster(tmp_path, size=3) as cluster:
        leader = await cluster.wait_leader()
        for follower in cluster.followers():
            await cluster.kill(follower.config.node_id)
        leader.store.leader_wait = 60.0  # without a leader a write waits 60 s for one too
        lifetimes = _Lifetimes()
        trio.lowlevel.add_instrument(lifetimes)
        try:
            async with await _raw(leader) as ws:
                await ws.send_message(protocol.encode_client_hello())
                await ws.get_message()
                frame = [
                    {
                        "id": i,
                        "op": "workload.create",
                        "args": {"spec": WORKLOAD},
                        "timeout_ms": 60_000,
                    }
                    for i in range(4)
                ]
                await ws.send_message(codec.encode_plain(frame))
                await wait_until(lambda: bool(lifetimes.alive), "the frame's task", 10)
            with trio.fail_after(10):  # far before the requests' deadline
                await wait_until(lambda: not lifetimes.alive, "the frame's task to end", 10)
        finally:
            trio.lowlevel.remove_instrument(lifetimes)


async def test_a_frame_with_a_fresh_token_catches_up_once(tmp_path: pathlib.Path) -> None:
    """The fast protocol keeps ``authorize_fresh``'s rule: a follower that has not applied a
    token's creation catches up with its leader before refusing it, once for a frame of
    several callers (the fresh token, a made-up one, the admin's), and answers each request
    for its own caller (as tests/api/test_auth.py does over REST)."""
    async with lagging_follower_with_fresh_token(tmp_path) as lag:
        follower, fresh, admin = lag.follower, lag.fresh, lag.admin
        authority = follower.store.authority
        before = authority.catch_ups
        async with await _raw(follower) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            answers = await _exchange(
                ws,
                [
                    {"id": 1, "op": "workload.list", "args": {}, "token": fresh},
                    {"id": 2, "op": "workload.list", "args": {}, "token": "univrs.made-up"},
                    {"id": 3, "op": "workload.list", "args": {}, "token": admin},
                    {"id": 4, "op": "workload.list", "args": {}, "token": fresh},
                ],
            )
        codes = {rid: a.get("error", {}).get("code") for rid, a in answers.items()}
        assert codes == {1: None, 2: "unauthenticated", 3: None, 4: None}, answers
        assert authority.catch_ups == before + 1  # once for the frame


async def test_an_empty_frame_answers_nothing_and_ends_nothing(tmp_path: pathlib.Path) -> None:
    """An empty frame (``[]``) to the leader and to a follower answers nothing and ends
    nothing: the same connection serves the next frame and the node stays up. A follower
    crashed on it once (session 22's review: the reads' inline path looked at a first
    request that was not there, inside the reader task, whose exception ends the node)."""
    async with open_cluster(tmp_path, size=3) as cluster:
        leader = await cluster.wait_leader()
        follower = cluster.followers()[0]
        for node in (leader, follower):
            async with await _raw(node) as ws:
                await ws.send_message(protocol.encode_client_hello())
                await ws.get_message()
                await ws.send_message(codec.encode_plain([]))
                page = await _exchange(ws, [{"id": 1, "op": "workload.list", "args": {}}])
                assert page[1]["ok"]["items"] == [], page
        assert len(cluster.running()) == 3
        assert cluster.leader() is not None


async def test_a_bug_starting_a_frame_drops_the_connection_not_the_node(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    """An exception escaping a frame's start in the reader's step (a bug in any inline path,
    ``_ClientConnection._start``) drops that connection (which of its requests were
    answered is unknown) and never reaches trio-websocket's reader task, whose exception
    would end the node: a new connection is served. Fails without the guard."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()

        def broken(*args: Any, **kwargs: Any) -> bool:
            raise RuntimeError("a bug")

        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            monkeypatch.setattr(_ClientConnection, "_start_inline", broken)
            await ws.send_message(codec.encode_plain([{"id": 1, "op": "workload.list"}]))
            with trio.fail_after(30), pytest.raises(ConnectionClosed):
                await ws.get_message()
        monkeypatch.undo()
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            page = await _exchange(ws, [{"id": 2, "op": "workload.list", "args": {}}])
            assert page[2]["ok"]["items"] == [], page
