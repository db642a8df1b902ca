"""Watches through the API on real in-process clusters: list then watch with no gap, the same
events from every member, resume across a killed member, the JSON-lines stream, compaction,
the bounds a hostile client meets."""

from __future__ import annotations

import json
import pathlib
from collections.abc import MutableMapping
from contextlib import aclosing
from functools import partial
from typing import Any

import h11
import pytest
import trio

from tests.api.helpers import BY_HAND, WORKLOAD, open_cluster, wait_until
from univrs.api import watch
from univrs.api.fast_watch import MAX_WATCHES
from univrs.api.server import build_app
from univrs.client import open_client
from univrs.client.connection import Connection
from univrs.errors import Compacted, InvalidArgument, Unavailable


def spec(name: str) -> dict[str, Any]:
    return {**WORKLOAD, "name": name}


def brief(events: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    return [(e["revision"], e["type"], e["kind"], e["id"]) for e in events]


async def test_list_then_watch_from_its_revision_misses_nothing(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, 1, **BY_HAND) as cluster,
        open_client(cluster.client_addresses()) as client,
    ):
        await client.create_workload(spec("a"), id="a")
        page = await client.list_workloads()
        assert [w["id"] for w in page["items"]] == ["a"]
        revision = page["revision"]
        assert revision >= page["items"][0]["version"]
        await client.register_node("m1")  # not a workload: filtered out
        b = await client.create_workload(spec("b"), id="b")
        scaled = await client.scale_workload("b", 5)
        await client.delete_workload("a")
        seen: list[dict[str, Any]] = []
        with trio.fail_after(30):
            async for event in client.watch(["workloads"], from_revision=revision + 1):
                seen.append(event)
                if len(seen) == 3:
                    break
        assert [(e["type"], e["id"]) for e in seen] == [("put", "b"), ("put", "b"), ("delete", "a")]
        assert seen[0]["revision"] == b["version"] and seen[0]["prev"] is None
        assert seen[1]["revision"] == scaled["version"]
        assert seen[1]["prev"]["spec"]["replicas"] == 2
        assert seen[1]["object"]["spec"]["replicas"] == 5
        assert seen[2]["object"] is None and seen[2]["prev"]["id"] == "a"


async def test_every_member_serves_the_same_events(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, 3, **BY_HAND) as cluster:
        async with open_client(cluster.client_addresses()) as client:
            await client.create_workload(spec("w"), id="w")
            await client.register_node("m1")
            await client.create_instance("w", id="i1", node_id="m1")
            await client.update_instance_status("i1", "running")
            last = (await client.get_instance("i1"))["version"]
        answers = []
        for node in cluster.running():
            async with open_client([cluster.client_address(node)]) as one:
                # A follower serves from its own applied state: it may have to catch up.
                page = await wait_until(
                    partial(_caught_up, one, last), f"{node.node_id} applied {last}"
                )
                answers.append(page["events"])
        assert answers[0] == answers[1] == answers[2]
        assert brief(answers[0])[-1] == (last, "put", "instance", "i1")


async def _caught_up(client: Any, last: int) -> dict[str, Any] | None:
    page: dict[str, Any] = await client.poll_events(from_revision=1, wait_ms=0)
    return page if page["revision"] >= last else None


async def test_a_watch_resumes_on_another_member_with_no_gap(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, 3, **BY_HAND) as cluster:
        async with (
            open_client(cluster.client_addresses(), timeout=20) as watcher,
            open_client(cluster.client_addresses(), timeout=20) as writer,
        ):
            serving: str | None = None
            start = (await watcher.list_workloads())["revision"] + 1
            seen: list[dict[str, Any]] = []
            total, kill_at = 12, 5

            async def watch() -> None:
                async for event in watcher.watch(["workloads"], from_revision=start, wait=1.0):
                    seen.append(event)
                    if len(seen) == total:
                        return

            with trio.fail_after(90):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    for i in range(total):
                        await writer.create_workload(spec(f"w{i}"), id=f"w{i:02d}")
                        if i + 1 == kill_at:
                            await wait_until(lambda: len(seen) >= kill_at, "events seen")
                            serving = watcher.node_id  # it follows the leader
                            assert serving is not None
                            await cluster.kill(serving)
        ids = [e["id"] for e in seen]
        assert ids == [f"w{i:02d}" for i in range(total)]  # in order, no gap, no duplicate
        revisions = [e["revision"] for e in seen]
        assert revisions == sorted(set(revisions))
        assert watcher.node_id != serving


async def test_a_compacted_revision_is_refused_with_where_to_resync(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, 1, watch_history=3, **BY_HAND) as cluster,
        open_client(cluster.client_addresses()) as client,
    ):
        for i in range(6):
            await client.create_workload(spec(f"w{i}"), id=f"w{i}")
        page = await client.list_workloads()
        with pytest.raises(Compacted) as info:
            await client.poll_events(from_revision=1)
        assert info.value.current_revision >= page["revision"]
        assert info.value.compacted_revision > 1
        with pytest.raises(Compacted):
            async for _ in client.watch(from_revision=1):
                pass
        answer = await cluster.http(cluster.running()[0], "GET", "/v1/events?from_revision=1")
        assert answer.status == 410
        assert answer.body["error"]["code"] == "compacted"
        # From the list's revision on, nothing is missing.
        fresh = await client.poll_events(from_revision=page["revision"] + 1)
        assert fresh["events"] == [] and fresh["revision"] >= page["revision"]
        metrics = cluster.running()[0].metrics.render()
        dropped = [
            ln for ln in metrics.splitlines() if ln.startswith("univrs_watch_dropped_events")
        ]
        assert dropped and float(dropped[0].split()[-1]) >= 3


async def test_bad_watch_arguments_are_refused(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, 1, **BY_HAND) as cluster,
        open_client(cluster.client_addresses()) as client,
    ):
        for args in (
            {"kinds": "pods"},
            {"kinds": "workloads,,nodes"},
            {"wait_ms": 10**9},
            {"limit": 0},
            {"from_revision": 0},
            {"bogus": 1},
        ):
            with pytest.raises(InvalidArgument):
                await client.call("events.poll", args)
        node = cluster.running()[0]
        for query in ("kinds=pods", "from_revision=x", "progress_ms=1", "other=1"):
            answer = await cluster.http(node, "GET", f"/v1/watch?{query}")
            assert answer.status == 422, query


async def test_watchers_beyond_the_limit_are_refused(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, 1, watch_max_watchers=1, **BY_HAND) as cluster,
        open_client(cluster.client_addresses(), timeout=2) as client,
    ):
        node = cluster.running()[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: client.call("events.poll", {"wait_ms": 20_000}, timeout=25))
            hub = node.runtime.watch_hub
            await wait_until(lambda: hub.watchers == 1, "one watcher")
            answer = await cluster.http(node, "GET", "/v1/events")
            assert answer.status == 503
            with pytest.raises(Unavailable):
                await client.poll_events()  # retried until its deadline, then refused
            await client.create_workload(spec("x"))  # ends the first poll
        assert hub.watchers == 0


async def read_lines(addr: str, path: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` JSON lines of a streamed response."""
    host, port = addr.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=path, headers=[("Host", addr)])
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    buffer = b""
    lines: list[dict[str, Any]] = []
    async with stream:
        while len(lines) < count:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200, event
            elif isinstance(event, h11.Data):
                buffer += event.data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    lines.append(json.loads(line))
            elif isinstance(event, h11.EndOfMessage):
                break
    return lines


async def test_the_rest_stream_sends_one_line_per_revision_and_progress(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        open_cluster(tmp_path, 1, **BY_HAND) as cluster,
        open_client(cluster.client_addresses()) as client,
    ):
        node = cluster.running()[0]
        start = (await client.list_workloads())["revision"] + 1
        w = await client.create_workload(spec("a"), id="a")
        await client.register_node("m1")
        with trio.fail_after(30):
            lines = await read_lines(
                cluster.api(node),
                f"/v1/watch?kinds=workloads&from_revision={start}&progress_ms=200",
                2,
            )
        assert lines[0]["revision"] == w["version"]
        assert brief(lines[0]["events"]) == [(w["version"], "put", "workload", "a")]
        # Nothing more of these kinds: a progress line says how far the stream got.
        assert lines[1]["events"] == [] and lines[1]["revision"] > w["version"]


async def test_a_stream_whose_reader_stops_reading_is_dropped_and_frees_its_slot(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the old code (5d2b21c): a stream stuck in the server's write kept its watcher
    slot for as long as the write was stuck, so with the node's slots taken by readers that
    stopped reading, no one could watch it any more."""
    monkeypatch.setattr(watch, "SEND_TIMEOUT", 0.5, raising=False)
    async with open_cluster(tmp_path, 1, watch_max_watchers=1, **BY_HAND) as cluster:
        node = cluster.running()[0]
        hub = node.runtime.watch_hub
        unstick = trio.Event()
        sent: list[MutableMapping[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)
            if message.get("body"):  # the reader reads nothing: the write never returns
                with trio.CancelScope(shield=True):  # and, as hypercorn's, cannot be cancelled
                    await unstick.wait()

        async def receive() -> MutableMapping[str, Any]:
            await trio.sleep_forever()  # the client never disconnects
            raise AssertionError("unreachable")

        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/v1/watch",
            "raw_path": b"/v1/watch",
            "query_string": b"progress_ms=100",
            "root_path": "",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        async with trio.open_nursery() as nursery:
            nursery.start_soon(build_app(node), scope, receive, send)
            try:
                await wait_until(
                    lambda: hub.watchers == 1 and any(m.get("body") for m in sent),
                    "the stream's first line, stuck in its write",
                )
                await wait_until(lambda: hub.watchers == 0, "the stuck stream to free its slot")
                # The freed slot serves another watcher at once.
                with trio.fail_after(30):
                    lines = await read_lines(cluster.api(node), "/v1/watch?progress_ms=100", 1)
                assert "events" in lines[0], lines
                # A reader that hangs up frees its slot too (the server sees it leave).
                await wait_until(lambda: hub.watchers == 0, "the second stream's slot freed")
            finally:
                unstick.set()
        assert sent[0]["status"] == 200
        body = b"".join(m.get("body", b"") for m in sent[1:])
        last = json.loads(body.splitlines()[-1])
        assert last["error"]["code"] == "unavailable", last
        assert "dropped" in last["error"]["message"]
        assert sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body")


async def test_watch_polls_beyond_the_per_connection_limit_are_refused(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path, 1, **BY_HAND) as cluster, trio.open_nursery() as nursery:
        node = cluster.running()[0]
        conn = await Connection.open(nursery, cluster.client_address(node), timeout=10)
        hub = node.runtime.watch_hub
        answers: list[Any] = []

        async def poll() -> None:
            answers.append(
                await conn.request("events.poll", {"wait_ms": 20_000}, timeout_ms=25_000)
            )

        for _ in range(MAX_WATCHES):
            nursery.start_soon(poll)
        await wait_until(lambda: hub.watchers == MAX_WATCHES, "the connection's watches")
        with pytest.raises(Unavailable):
            await conn.request("events.poll", {}, timeout_ms=5_000)
        # Other requests on the connection are not held up by its waiting watches.
        await conn.request("workload.list", {}, timeout_ms=5_000)
        async with open_client(cluster.client_addresses()) as client:
            await client.create_workload(spec("x"))  # ends the waiting polls
        await wait_until(lambda: len(answers) == MAX_WATCHES, "the polls answered")
        conn.close()


async def test_a_watch_compacted_on_its_member_goes_on_from_another(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        open_cluster(tmp_path, 3, **BY_HAND) as cluster,
        open_client(cluster.client_addresses()) as client,
    ):
        await client.create_workload(spec("a"), id="a")
        start = 1
        last = (await client.create_workload(spec("b"), id="b"))["version"]
        runtimes = [n.runtime for n in cluster.running()]
        await wait_until(lambda: all(r.watch_hub.revision >= last for r in runtimes), "all applied")
        # The member the client talks to forgets its history (as after a restart or a
        # snapshot install); the others still keep it.
        serving = cluster.nodes[client.node_id or ""]
        hub = serving.runtime.watch_hub
        hub.reset(hub.revision)
        with pytest.raises(Compacted):
            await client.poll_events(from_revision=start)
        seen = []
        with trio.fail_after(30):
            async with aclosing(client.watch(["workloads"], from_revision=start)) as events:
                async for event in events:
                    seen.append(event["id"])
                    if len(seen) == 2:
                        break
        assert seen == ["a", "b"]
