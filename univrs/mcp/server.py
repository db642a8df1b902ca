"""The MCP server: the cluster state as tools and resources, for AI agents (``univrs mcp``).

Theory of operation. An ``MCPServer`` of the official SDK (``mcp``, on anyio, run here under
Trio) whose tools call the cluster through ``univrs.client`` (any member; it follows the
leader): the same operations, with the same typed errors, as the REST API and the fast
protocol, which run them through the node's ``StateStore`` (docs/orchestrator.md). So:

* **Writes carry idempotency keys.** Every write the client sends carries a key of its session
  (``client_id``, ``seq``): a write retried after a leader change or a lost connection is
  applied once. A tool call an agent repeats is a new write; to make a create repeatable, pass
  ``id``: the second call answers ``already-exists``. Over HTTP the node keys them the same
  way, with sessions it keeps per caller (univrs/api/mcp.py).
* **Errors.** A refusal (``not-found``, ``version-conflict``, ``invalid-argument``,
  ``insufficient-credits``, ``unavailable`` ...) is a tool error whose text carries the code
  and the message (``not-found: ...``), for the agent to read; nothing else of the node leaks.
* **Bounded.** Lists are pages (``limit`` at most 1000, ``after`` for the next); recent events
  at most 1000; every call has the client's deadline.

Tools: ``cluster_status``, ``list_workloads``, ``get_workload``, ``create_workload``,
``scale_workload``, ``delete_workload``, ``list_instances``, ``list_nodes``, ``get_node``,
``list_balances``, ``get_balance``, ``transfer_credits``, ``recent_events``,
``reconcile_status``. Resources: ``univrs://cluster/status`` and ``univrs://workloads/{id}``.

Two transports serve the same tools over a ``Cluster`` (``call(op, args)`` for reads,
``write(op, args)`` for writes, the operation names of univrs/service/operations.py):

* ``univrs mcp`` speaks MCP on its own stdin/stdout, to the one agent process that started it,
  with the credentials of that command line (``--api``, TLS options, ``UNIVRS_TOKEN``); its
  ``Cluster`` is a ``univrs.client.Client``, which keys every write (exactly once).
* ``/v1/mcp`` on each node's API listener (univrs/api/mcp.py): streamable HTTP, behind the
  API's own authentication; its ``Cluster`` runs the operations in the node's ``ApiService``
  for the HTTP request's caller, so a read tool needs the ``read`` role and a write tool the
  ``write`` role (docs/security.md).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, Protocol

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from univrs import __version__
from univrs.errors import Compacted, UnivrsError

MAX_EVENTS = 1000
INSTRUCTIONS = (
    "univrs is the replicated state of a container orchestrator: workloads (desired replicas "
    "of an image), their instances (placed on registered nodes by the leader's reconciler), "
    "the nodes, and credit balances. Read before you write; scale with expected_version to "
    "avoid overwriting a concurrent change."
)


class Cluster(Protocol):
    """What the tools call: an operation by name (univrs/service/operations.py) with its
    arguments, answering the API's JSON document or raising a ``UnivrsError``.
    ``univrs.client.Client`` is one (``univrs mcp``); ``univrs.api.mcp.NodeCluster`` is the
    other (the node's HTTP transport)."""

    @property
    def leader(self) -> str | None: ...

    @property
    def node_id(self) -> str | None: ...

    async def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Run a read."""

    async def write(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Run a write."""


def _args(**given: Any) -> dict[str, Any]:
    """The arguments that are given (None: left to the operation's default)."""
    return {k: v for k, v in given.items() if v is not None}


async def answer(pending: Awaitable[Any]) -> dict[str, Any]:
    """The one call-and-render step of every tool: the document ``pending`` answers, or a
    tool error whose text carries the refusal's code and message (``not-found: ...``)."""
    try:
        return dict(await pending)
    except UnivrsError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        raise ToolError(f"{exc.code}: {exc.message}{where}") from None


async def resource(pending: Awaitable[Any]) -> str:
    """The JSON text of a resource, or a resource error with the refusal's code."""
    try:
        return json.dumps(await pending, sort_keys=True)
    except UnivrsError as exc:
        raise ResourceError(f"{exc.code}: {exc.message}") from None


async def cluster_status_of(cluster: Cluster) -> dict[str, Any]:
    """The leader, the machines by status, the workloads and what the reconciler has left."""
    nodes = await cluster.call("node.list", {"limit": 1000})
    workloads = await cluster.call("workload.list", {"limit": 1000})
    reconcile = await cluster.call("reconcile.status", {})
    by_status: dict[str, int] = {}
    for node in nodes["items"]:
        by_status[node["status"]] = by_status.get(node["status"], 0) + 1
    return {
        "leader": cluster.leader,
        "served_by": cluster.node_id,
        "revision": reconcile["revision"],
        "machines": {"total": len(nodes["items"]), "by_status": by_status},
        "workloads": len(workloads["items"]),
        "reconcile": {
            "converged": reconcile["converged"],
            "to_place": reconcile["to_place"],
            "to_remove": reconcile["to_remove"],
            "pending": reconcile["pending"],
        },
    }


async def recent_events_of(
    cluster: Cluster, count: int, from_revision: int | None, kinds: str | None
) -> dict[str, Any]:
    """The last ``count`` revisions' events (or from ``from_revision``), from what is kept."""
    count = max(1, min(count, MAX_EVENTS))
    if from_revision is None:
        now = (await cluster.call("reconcile.status", {}))["revision"]
        from_revision = max(1, now - count + 1)
    try:
        return dict(
            await cluster.call(
                "events.poll",
                _args(kinds=kinds, from_revision=from_revision, wait_ms=0, limit=count),
            )
        )
    except Compacted as exc:  # older than the history: from what is kept
        return dict(
            await cluster.call(
                "events.poll",
                _args(
                    kinds=kinds, from_revision=exc.compacted_revision + 1, wait_ms=0, limit=count
                ),
            )
        )


def build_server(cluster: Cluster) -> MCPServer:
    """The MCP server over ``cluster`` (see the module docstring)."""
    server: MCPServer = MCPServer(name="univrs", version=__version__, instructions=INSTRUCTIONS)
    call, write = cluster.call, cluster.write

    @server.tool(description="The cluster at a glance: leader, machines, workloads, reconciler.")
    async def cluster_status() -> dict[str, Any]:
        return await answer(cluster_status_of(cluster))

    @server.tool(description="List workloads (a page sorted by id; pass `next` as `after`).")
    async def list_workloads(limit: int = 100, after: str | None = None) -> dict[str, Any]:
        return await answer(call("workload.list", _args(limit=limit, after=after)))

    @server.tool(description="Get one workload: its spec, version and status.")
    async def get_workload(id: str) -> dict[str, Any]:
        return await answer(call("workload.get", {"id": id}))

    @server.tool(
        description="Create a workload: `replicas` instances of `image`. Pass `id` to make the "
        "call repeatable (a repeat answers already-exists). Labels `placement/KEY=VALUE` "
        "restrict it to machines labelled KEY=VALUE."
    )
    async def create_workload(
        name: str,
        image: str,
        replicas: int = 1,
        id: str | None = None,
        labels: dict[str, str] | None = None,
        cpu_millis: int = 0,
        memory_bytes: int = 0,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": name, "image": image, "replicas": replicas}
        if labels:
            spec["labels"] = labels
        if cpu_millis or memory_bytes:
            spec["resources"] = {"cpu_millis": cpu_millis, "memory_bytes": memory_bytes}
        return await answer(write("workload.create", _args(spec=spec, id=id)))

    @server.tool(
        description="Set a workload's replica count; with `expected_version` only if nobody "
        "changed it since you read it (else version-conflict)."
    )
    async def scale_workload(
        id: str, replicas: int, expected_version: int | None = None
    ) -> dict[str, Any]:
        args = _args(id=id, replicas=replicas, expected_version=expected_version)
        return await answer(write("workload.scale", args))

    @server.tool(description="Delete a workload and its instances.")
    async def delete_workload(id: str, expected_version: int | None = None) -> dict[str, Any]:
        return await answer(
            write("workload.delete", _args(id=id, expected_version=expected_version))
        )

    @server.tool(description="List instances, optionally of one workload and/or on one machine.")
    async def list_instances(
        workload_id: str | None = None,
        node_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> dict[str, Any]:
        args = _args(workload_id=workload_id, node_id=node_id, limit=limit, after=after)
        return await answer(call("instance.list", args))

    @server.tool(description="List the registered machines (nodes) with their status.")
    async def list_nodes(limit: int = 100, after: str | None = None) -> dict[str, Any]:
        return await answer(call("node.list", _args(limit=limit, after=after)))

    @server.tool(description="Get one registered machine (node).")
    async def get_node(id: str) -> dict[str, Any]:
        return await answer(call("node.get", {"id": id}))

    @server.tool(description="List positive credit balances (a page) and the total supply.")
    async def list_balances(limit: int = 100, after: str | None = None) -> dict[str, Any]:
        return await answer(call("credits.list", _args(limit=limit, after=after)))

    @server.tool(description="One peer's credit balance (0 if it has none).")
    async def get_balance(peer: str) -> dict[str, Any]:
        return await answer(call("credits.balance", {"peer": peer}))

    @server.tool(description="Move `amount` credits from one peer to another, atomically.")
    async def transfer_credits(from_peer: str, to_peer: str, amount: int) -> dict[str, Any]:
        args = {"from_peer": from_peer, "to_peer": to_peer, "amount": amount}
        return await answer(write("credits.transfer", args))

    @server.tool(
        description="Recent change events (put/delete of workloads, instances, nodes), oldest "
        "first: the last `count` revisions' worth, or from `from_revision` on. `kinds`: "
        "comma-separated workloads,instances,nodes (default all)."
    )
    async def recent_events(
        count: int = 50, from_revision: int | None = None, kinds: str | None = None
    ) -> dict[str, Any]:
        return await answer(recent_events_of(cluster, count, from_revision, kinds))

    @server.tool(description="What the reconciler has left to place and remove, per workload.")
    async def reconcile_status() -> dict[str, Any]:
        return await answer(call("reconcile.status", {}))

    @server.resource("univrs://cluster/status", name="cluster-status", mime_type="application/json")
    async def cluster_resource() -> str:
        return await resource(cluster_status_of(cluster))

    @server.resource("univrs://workloads/{id}", name="workload", mime_type="application/json")
    async def workload_resource(id: str) -> str:
        return await resource(call("workload.get", {"id": id}))

    return server
