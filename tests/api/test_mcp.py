"""The MCP server (univrs/mcp/server.py) through the SDK's own client, in process, against a
real in-process cluster: tools, resources, typed refusals as tool errors (the writes go
through ``univrs.client``, which keys every write; its retry tests are in test_client*.py)."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from tests.api.helpers import open_cluster
from univrs.client import open_client
from univrs.mcp.server import build_server


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data = result.structured_content
    assert isinstance(data, dict)
    return data.get("result", data) if set(data) == {"result"} else data


async def test_tools_and_resources_through_the_sdk_client(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, 3, node_ttl_ms=0, reconcile_resync_ms=500) as cluster,
        open_client(cluster.client_addresses(), timeout=20) as client,
    ):
        for m in ("m1", "m2"):
            await client.register_node(m)
        await client.mint_credits("alice", 10, reason="test")
        server = build_server(client)
        async with Client(server) as mcp:
            names = {t.name for t in (await mcp.list_tools()).tools}
            assert {
                "cluster_status",
                "list_workloads",
                "get_workload",
                "create_workload",
                "scale_workload",
                "delete_workload",
                "list_instances",
                "list_nodes",
                "get_node",
                "list_balances",
                "get_balance",
                "transfer_credits",
                "recent_events",
                "reconcile_status",
            } <= names

            created = structured(
                await mcp.call_tool(
                    "create_workload", {"name": "web", "image": "nginx:1", "replicas": 0, "id": "w"}
                )
            )
            assert created["id"] == "w" and created["spec"]["replicas"] == 0
            again = await mcp.call_tool(
                "create_workload", {"name": "web", "image": "nginx:1", "id": "w"}
            )
            assert again.is_error and "already-exists" in again.content[0].text  # type: ignore[union-attr]

            scaled = structured(
                await mcp.call_tool(
                    "scale_workload",
                    {"id": "w", "replicas": 4, "expected_version": created["version"]},
                )
            )
            assert scaled["spec"]["replicas"] == 4
            stale = await mcp.call_tool(
                "scale_workload", {"id": "w", "replicas": 9, "expected_version": created["version"]}
            )
            assert stale.is_error and "version-conflict" in stale.content[0].text  # type: ignore[union-attr]
            missing = await mcp.call_tool("get_workload", {"id": "nope"})
            assert missing.is_error and "not-found" in missing.content[0].text  # type: ignore[union-attr]

            from tests.api.helpers import wait_until

            async def placed() -> bool:
                page = structured(await mcp.call_tool("list_instances", {"workload_id": "w"}))
                return len(page["items"]) == 4

            await wait_until(placed, "4 instances placed", timeout=30)
            status = structured(await mcp.call_tool("cluster_status", {}))
            assert status["machines"] == {"total": 2, "by_status": {"ready": 2}}
            assert status["workloads"] == 1 and status["leader"] is not None

            moved = structured(
                await mcp.call_tool(
                    "transfer_credits", {"from_peer": "alice", "to_peer": "bob", "amount": 3}
                )
            )
            assert moved["to"]["balance"] == 3
            assert structured(await mcp.call_tool("get_balance", {"peer": "alice"}))["balance"] == 7
            poor = await mcp.call_tool(
                "transfer_credits", {"from_peer": "bob", "to_peer": "alice", "amount": 99}
            )
            assert poor.is_error and "insufficient-credits" in poor.content[0].text  # type: ignore[union-attr]

            events = structured(await mcp.call_tool("recent_events", {"count": 100}))
            kinds = {(e["kind"], e["id"]) for e in events["events"]}
            assert ("workload", "w") in kinds and ("node", "m1") in kinds

            resource = await mcp.read_resource("univrs://workloads/w")
            doc = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
            assert doc["id"] == "w" and doc["spec"]["replicas"] == 4
            overview = await mcp.read_resource("univrs://cluster/status")
            assert json.loads(overview.contents[0].text)["workloads"] == 1  # type: ignore[union-attr]

            deleted = structured(await mcp.call_tool("delete_workload", {"id": "w"}))
            assert deleted["deleted"] is True


async def test_a_refusal_is_a_tool_error_with_its_code_not_a_crash(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, 1) as cluster,
        open_client(cluster.client_addresses(), timeout=20) as client,
        Client(build_server(client)) as mcp,
    ):
        bad = await mcp.call_tool("create_workload", {"name": "Not Valid", "image": ""})
        assert bad.is_error
        assert "invalid-argument: " in bad.content[0].text  # type: ignore[union-attr]
        with pytest.raises(Exception):  # noqa: B017 - the SDK's own resource error type
            await mcp.read_resource("univrs://workloads/nope")


async def test_univrs_mcp_serves_over_stdio(tmp_path: pathlib.Path) -> None:
    """``univrs mcp`` as an agent starts it: a subprocess speaking MCP on stdin/stdout."""
    async with open_cluster(tmp_path, 1) as cluster:
        (node,) = cluster.running()
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "univrs", "mcp", "--api", cluster.api(node)]
        )
        async with Client(params) as mcp:
            created = structured(
                await mcp.call_tool("create_workload", {"name": "web", "image": "nginx:1"})
            )
            assert created["spec"]["replicas"] == 1
            page = structured(await mcp.call_tool("list_workloads", {}))
            assert [w["id"] for w in page["items"]] == [created["id"]]
