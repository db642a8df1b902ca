"""The node's MCP endpoint (``/v1/mcp``, univrs/api/mcp.py) through the SDK's own streamable
HTTP client, against a real in-process 3-node cluster with tokens on: an authorized tool call
works (a write on a follower is forwarded with the caller's token), no or a wrong token is
refused at the door, a read-only token is refused for a write tool, and an oversized or garbage
body is refused without harming the node."""

from __future__ import annotations

import contextlib
import functools
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.api.helpers import Cluster, open_cluster, wait_until
from tests.api.test_auth import bootstrap, holds_tokens
from tests.api.test_mcp import structured
from univrs.client import open_client
from univrs.server.node import Node


def url(cluster: Cluster, node: Node) -> str:
    return f"http://{cluster.api(node)}/v1/mcp"


@contextlib.asynccontextmanager
async def mcp_client(cluster: Cluster, node: Node, secret: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url(cluster, node), http_client=http)) as client,
    ):
        yield client


def error_text(result: Any) -> str:
    assert result.is_error, result
    return str(result.content[0].text)


async def test_mcp_over_http_behind_the_api_tokens(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=3, auth_enabled=True) as cluster:
        await cluster.wait_leader()
        follower = cluster.followers()[0]
        admin = await bootstrap(cluster)
        async with open_client(cluster.client_addresses(), token=admin) as client:
            read = (await client.create_token(name="read-mcp", roles=["read"]))["secret"]
            write = (await client.create_token(name="write-mcp", roles=["write"]))["secret"]
            await client.register_node("m1")
        for node in cluster.running():
            await wait_until(functools.partial(holds_tokens, node, 3), "the tokens everywhere")

        # A write token: tools work on a follower; its write is forwarded with the token.
        async with mcp_client(cluster, follower, write) as mcp:
            names = {t.name for t in (await mcp.list_tools()).tools}
            assert {"create_workload", "list_workloads", "cluster_status"} <= names
            created = structured(
                await mcp.call_tool(
                    "create_workload", {"name": "web", "image": "nginx:1", "replicas": 0, "id": "w"}
                )
            )
            assert created["id"] == "w"
            page = structured(await mcp.call_tool("list_workloads", {}))
            assert [w["id"] for w in page["items"]] == ["w"]
            status = structured(await mcp.call_tool("cluster_status", {}))
            assert status["served_by"] == follower.node_id
            assert status["machines"]["total"] == 1

        # A read token: reads work, a write tool is refused and writes nothing.
        async with mcp_client(cluster, follower, read) as mcp:
            assert structured(await mcp.call_tool("get_workload", {"id": "w"}))["id"] == "w"
            refused = await mcp.call_tool("scale_workload", {"id": "w", "replicas": 5})
            assert "permission-denied: " in error_text(refused)
            again = await mcp.call_tool("create_workload", {"name": "x", "image": "nginx:1"})
            assert "permission-denied: " in error_text(again)
        for node in cluster.running():
            assert [w.id for w in node.runtime.sm.list_workloads()] == ["w"]
            stored = node.runtime.sm.get_workload("w")
            assert stored is not None and stored.spec.replicas == 0

        # No token, or a wrong one: refused at the door (401), before the SDK sees the body.
        for secret in (None, "univrs.made-up"):
            with pytest.raises(Exception):  # noqa: B017 - the SDK's transport error
                async with mcp_client(cluster, follower, secret) as mcp:
                    await mcp.list_tools()
        r = await cluster.http(follower, "POST", "/v1/mcp", {"jsonrpc": "2.0"})
        assert r.status == 401 and r.body["error"]["code"] == "unauthenticated"


async def test_mcp_over_http_refuses_oversized_and_garbage_bodies(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1, max_body_bytes=64 * 1024) as cluster:
        (node,) = cluster.running()
        await cluster.wait_leader()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            huge = await http.post(url(cluster, node), content=b"[" + b"1," * 100_000 + b"1]")
            assert huge.status_code == 413
            for garbage in (b"\xff\xfe not json", b"{}", b'{"jsonrpc": "2.0", "method": 7}', b"[]"):
                answer = await http.post(url(cluster, node), content=garbage)
                assert 400 <= answer.status_code < 500, (garbage, answer.status_code)
            wrong = await http.put(url(cluster, node), content=b"{}")
            assert 400 <= wrong.status_code < 500
        # The node still serves, MCP included.
        assert (await cluster.http(node, "GET", "/v1/health")).status == 200
        async with mcp_client(cluster, node, None) as mcp:
            page = structured(await mcp.call_tool("list_workloads", {}))
            assert page["items"] == []
