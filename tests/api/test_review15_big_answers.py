"""s15-review B1: answers bigger than the fast protocol's frame (docs/security.md, "Adversarial
review of session 15 (s15-review)").

A workload may hold about 1 MB of arguments, and a page holds up to ``limit`` of them: pages
are bounded in items, not bytes. The node's writer packed every answer waiting to be sent
into one frame, so two concurrent pages of 2.5 MB went out as a 5 MB frame, which the client
(frames of at most ``protocol.MAX_FRAME``, 4 MiB) refused by closing the connection; it
retried, the node answered the same way, and the call ended "no univrs node reachable"
against a healthy node. Now answers are split into frames the client reads, and an answer
that alone exceeds a frame is a ``payload-too-large`` error that says so. Since s15-budget a
list page is bounded in bytes too (``opargs.PAGE_BYTES``, 1 MiB of items, at least one): a
page of big workloads is shorter, with ``next``, and every caller of a list pages on.
"""

from __future__ import annotations

import json
import pathlib
from contextlib import aclosing

import pytest
import trio
from click.testing import CliRunner
from trio_websocket import open_websocket_url

from tests.api.helpers import BY_HAND, BackgroundCluster, open_cluster
from univrs.cli import main
from univrs.client import Client, SyncClient, open_client, protocol
from univrs.client.protocol import Request
from univrs.errors import PayloadTooLarge

ARGS = ["b" * 4000] * 200  # a workload of about 800 KB


async def _fill(client: Client, names: list[str]) -> None:
    for name in names:
        await client.create_workload({"name": name, "image": "x", "args": ARGS})


async def test_big_pages_asked_together_are_all_answered(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        async with open_client([cluster.client_address(node)]) as client:
            await _fill(client, [f"w{i}" for i in range(6)])
        # One frame of six requests, executed together and answered together (a page of one
        # 800 KB workload each: 4.8 MB in all): as the client reads (frames of at most
        # MAX_FRAME, else it closes the connection).
        reqs = [
            Request(id=i, op="workload.list", args={"limit": 3}, consistency="local")
            for i in range(1, 7)
        ]
        url = f"ws://127.0.0.1:{node.raft_port}/client"
        answers: dict[int, int] = {}
        async with open_websocket_url(url, max_message_size=protocol.MAX_FRAME) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()  # the server's hello
            await ws.send_message(protocol.encode_requests(reqs))
            with trio.fail_after(60):
                while len(answers) < 6:
                    _, responses = protocol.decode_responses(await ws.get_message())
                    for r in responses:
                        answers[r["id"]] = len(r["ok"]["items"])
        assert answers == dict.fromkeys(range(1, 7), 1)


async def test_an_answer_larger_than_a_frame_is_refused_with_a_clear_error(
    tmp_path: pathlib.Path,
) -> None:
    """A list page can no longer pass a frame (s15-budget), nor a watch poll's page (s16-review:
    ``events.poll`` ends on bytes too, at a revision); an answer that alone passes a frame is
    still refused with ``payload-too-large`` (here: many requests' worth of one big page,
    forced by a frame bound below one page)."""
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        async with open_client([cluster.client_address(node)]) as client:
            page = await client.call("workload.list", {}, consistency="local")
            await _fill(client, [f"w{i}" for i in range(6)])
            poll = {"from_revision": page["revision"] + 1}
            with trio.fail_after(60):
                first = await client.call("events.poll", poll)
            assert len(first["events"]) == 1  # two 800 KB workloads pass PAGE_BYTES
            assert first["revision"] == first["events"][0]["revision"]
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(protocol, "MAX_FRAME", 500_000)
                with trio.fail_after(60), pytest.raises(PayloadTooLarge, match="fewer items"):
                    await client.call("events.poll", poll)


async def test_listing_every_big_workload_succeeds(tmp_path: pathlib.Path) -> None:
    """B1 (s15-review): a page of up to 1,000 big workloads (the Python client's
    ``list_workloads(limit=N)``, the MCP tools, any fast-protocol caller) was
    ``payload-too-large`` for good. A page is bounded in bytes now (s15-budget): every call
    succeeds with a shorter page, and paging on ``next`` lists them all."""
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        async with open_client([cluster.client_address(node)]) as client:
            await _fill(client, [f"w{i}" for i in range(6)])
            names: list[str] = []
            after: str | None = None
            with trio.fail_after(60):
                while True:
                    result = await client.list_workloads(
                        limit=1000, after=after, consistency="local"
                    )
                    assert 1 <= len(result["items"]) < 6  # shorter than asked: on bytes
                    names += [w["spec"]["name"] for w in result["items"]]
                    after = result["next"]
                    if after is None:
                        break
            assert sorted(names) == [f"w{i}" for i in range(6)]


def test_the_cli_lists_every_big_workload(tmp_path: pathlib.Path) -> None:
    """``univrs workload list`` (every page) used to fail with "no univrs node reachable" once
    a page of 1,000 workloads passed the frame; it asks for smaller pages on
    ``payload-too-large`` now (univrs/cli/common.py ``all_pages``)."""
    with BackgroundCluster(tmp_path, size=1, **BY_HAND) as bg:
        with SyncClient(api=bg.apis[0]) as client:
            for i in range(6):
                client.create_workload({"name": f"w{i}", "image": "x", "args": ARGS})
        result = CliRunner().invoke(
            main, ["workload", "list", "--json"], env={"UNIVRS_API": bg.apis[0]}
        )
        assert result.exit_code == 0, result.output[-2000:]
        assert sorted(w["spec"]["name"] for w in json.loads(result.output)["items"]) == [
            f"w{i}" for i in range(6)
        ]


async def test_a_watch_of_big_workloads_asks_for_fewer_events(tmp_path: pathlib.Path) -> None:
    """``Client.watch`` polls up to 1,000 events at a time: six creations of 800 KB workloads
    made one answer past the frame (a connection lost for ever before; ``payload-too-large``
    since the frames are bounded). It asks for half as many on that error now."""
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        async with open_client([cluster.client_address(node)]) as client:
            page = await client.call("workload.list", {}, consistency="local")
            await _fill(client, [f"w{i}" for i in range(6)])
            seen: list[str] = []
            with trio.fail_after(60):
                async with aclosing(
                    client.watch(["workloads"], from_revision=page["revision"] + 1, wait=0.1)
                ) as events:
                    async for event in events:
                        seen.append(event["object"]["spec"]["name"])
                        if len(seen) == 6:
                            break
            assert sorted(seen) == [f"w{i}" for i in range(6)]
