"""``GET /v1/cluster/backup`` on an in-process 3-node cluster: what a caller gets (issue 13).

A follower streams a snapshot that holds every write acknowledged before the request; without
a quorum the answer is 503 within the read timeout; while one save is in progress on a node a
second one is refused with 503 (one stream per node: bounded memory)."""

from __future__ import annotations

import pathlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from tests.api.helpers import WORKLOAD, open_cluster
from univrs.api import backup as backup_api
from univrs.storage.backup import BackupReceiver, decode_state, read_backup


def fetch(api: str, path: pathlib.Path) -> int:
    """Save the stream into ``path`` (checked as it arrives); the HTTP status."""
    try:
        with (
            urllib.request.urlopen(f"http://{api}/v1/cluster/backup", timeout=30) as resp,
            BackupReceiver(path) as receiver,
        ):
            while chunk := resp.read(4096):
                receiver.feed(chunk)
            receiver.finish()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_a_follower_streams_every_acknowledged_write(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path / "c") as cluster:
        leader = await cluster.wait_leader()
        ids = []
        for _ in range(20):
            r = await cluster.http(leader, "POST", "/v1/workloads", {"spec": {**WORKLOAD}})
            assert r.status == 201, r.body
            ids.append(r.body["id"])
        follower = cluster.followers()[0]
        file = tmp_path / "b.snap"
        status = await trio.to_thread.run_sync(fetch, cluster.api(follower), file)
        assert status == 200
        backup = read_backup(file)
        assert backup.header.node == follower.node_id
        assert backup.header.cluster_id == follower.cluster_id
        assert backup.header.membership.voters == {"n1", "n2", "n3"}
        saved = {w.id for w in decode_state(backup).list_workloads()}
        assert set(ids) <= saved


async def test_without_a_quorum_the_answer_is_503_at_once(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path / "c") as cluster:
        leader = await cluster.wait_leader()
        r = await cluster.http(leader, "POST", "/v1/workloads", {"spec": {**WORKLOAD}})
        assert r.status == 201, r.body
        survivor = cluster.followers()[0]
        for node in list(cluster.running()):
            if node is not survivor:
                await cluster.kill(node.node_id)
        started = trio.current_time()
        r = await cluster.http(survivor, "GET", "/v1/cluster/backup")
        assert r.status == 503, r.body
        assert r.body["error"]["code"] == "unavailable"
        assert trio.current_time() - started < backup_api.READ_TIMEOUT + 5


async def test_one_save_at_a_time_per_node(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second save while one is being prepared or streamed on the node gets 503 at once;
    the first completes."""
    release = trio.Event()
    entered = trio.Event()
    prepare = backup_api._prepare

    async def slow_prepare(node):  # type: ignore[no-untyped-def]
        entered.set()
        await release.wait()
        return await prepare(node)

    monkeypatch.setattr(backup_api, "_prepare", slow_prepare)
    async with open_cluster(tmp_path / "c") as cluster:
        leader = await cluster.wait_leader()
        r = await cluster.http(leader, "POST", "/v1/workloads", {"spec": {**WORKLOAD}})
        assert r.status == 201, r.body
        first: list[int] = []

        async def save_first() -> None:
            status = await trio.to_thread.run_sync(fetch, cluster.api(leader), tmp_path / "1.snap")
            first.append(status)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(save_first)
            await entered.wait()
            r = await cluster.http(leader, "GET", "/v1/cluster/backup")
            assert r.status == 503, r.body
            assert "already streaming" in r.body["error"]["message"]
            assert r.headers["retry-after"] == "5"
            release.set()
        assert first == [200]
        assert read_backup(tmp_path / "1.snap").header.index >= 2
        # The slot is free again.
        assert await trio.to_thread.run_sync(fetch, cluster.api(leader), tmp_path / "2.snap") == 200


async def test_a_caller_that_stops_reading_loses_the_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream of a caller that takes nothing for STALL_TIMEOUT is dropped and the node's
    save slot freed (a stalled caller cannot block every later save)."""
    monkeypatch.setattr(backup_api, "STALL_TIMEOUT", 0.5)
    slot = backup_api._Slot()
    slot.busy = True
    taken: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        for part in (b"a", b"b", b"c"):
            slot.progress()
            yield part

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            taken.append(message["body"])
            if len(taken) == 2:
                await trio.sleep_forever()  # the caller stops reading

    response = backup_api._SlotResponse(slot, body(), media_type=backup_api.MEDIA_TYPE)
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET", "path": "/"}
    started = trio.current_time()
    with trio.fail_after(10):
        await response(scope, receive, send)
    assert taken == [b"a", b"b"]
    assert not slot.busy and slot.scope is None
    assert 0.4 < trio.current_time() - started < 5
