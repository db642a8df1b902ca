"""The typed operations of the client: one method per operation of the table.

GENERATED from ``univrs/service/operations.py`` by ``python -m univrs.client.generate``: do not
edit by hand (tests/test_operations.py fails when this file is out of date).

Each method builds the operation's arguments (leaving out optional ones not given) and runs it
with ``call`` (reads, optionally ``consistency="local"``) or ``write`` (exactly once, with an
idempotency key). Results are the documents of ``docs/api.md``: plain dicts.
"""

from __future__ import annotations

from typing import Any, Protocol


class _Runner(Protocol):
    """What the methods need from the client class (``univrs.client.client.Client``)."""

    async def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        key: tuple[str, int] | None = None,
        consistency: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> Any: ...

    async def write(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        answer: str | None = None,
    ) -> Any: ...


def _args(given: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """The required arguments and the optional ones that are not None."""
    return {**given, **{k: v for k, v in optional.items() if v is not None}}


class StateMethods:
    """One method per operation, on top of the client's ``call`` and ``write``."""

    async def create_workload(
        self: _Runner,
        spec: dict[str, Any],
        *,
        id: str | None = None,
        answer: str | None = None,
    ) -> Any:
        """Create a workload (the node assigns the id unless the body gives one).
        ``answer="minimal"``: only ``{"id", "version"}`` (the version this write gave it; default:
        the client's ``answer``)."""
        args: dict[str, Any] = {"spec": spec}
        if id is not None:
            args["id"] = id
        return await self.write("workload.create", args, answer=answer)

    async def list_workloads(
        self: _Runner,
        *,
        labels: dict[str, str] | None = None,
        name: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        """List workloads, filtered by labels and name, paginated by id. A page ``{"items": [...],
        "next": key | None}``: pass ``next`` as ``after`` for the following one."""
        args: dict[str, Any] = {}
        if labels is not None:
            args["labels"] = labels
        if name is not None:
            args["name"] = name
        if limit is not None:
            args["limit"] = limit
        if after is not None:
            args["after"] = after
        return await self.call("workload.list", args, consistency=consistency)

    async def get_workload(
        self: _Runner,
        id: str,
        *,
        consistency: str | None = None,
    ) -> Any:
        """Get a workload."""
        args: dict[str, Any] = {"id": id}
        return await self.call("workload.get", args, consistency=consistency)

    async def update_workload(
        self: _Runner,
        id: str,
        spec: dict[str, Any],
        *,
        expected_version: int | None = None,
        answer: str | None = None,
    ) -> Any:
        """Replace a workload's spec. ``answer="minimal"``: only ``{"id", "version"}`` (the version
        this write gave it; default: the client's ``answer``)."""
        args: dict[str, Any] = {"id": id, "spec": spec}
        if expected_version is not None:
            args["expected_version"] = expected_version
        return await self.write("workload.update", args, answer=answer)

    async def scale_workload(
        self: _Runner,
        id: str,
        replicas: int,
        *,
        expected_version: int | None = None,
        answer: str | None = None,
    ) -> Any:
        """Set a workload's replica count. ``answer="minimal"``: only ``{"id", "version"}`` (the
        version this write gave it; default: the client's ``answer``)."""
        args: dict[str, Any] = {"id": id, "replicas": replicas}
        if expected_version is not None:
            args["expected_version"] = expected_version
        return await self.write("workload.scale", args, answer=answer)

    async def delete_workload(
        self: _Runner,
        id: str,
        *,
        expected_version: int | None = None,
    ) -> Any:
        """Delete a workload and its instances."""
        args: dict[str, Any] = {"id": id}
        if expected_version is not None:
            args["expected_version"] = expected_version
        return await self.write("workload.delete", args)

    async def create_instance(
        self: _Runner,
        workload_id: str,
        *,
        id: str | None = None,
        node_id: str | None = None,
        answer: str | None = None,
    ) -> Any:
        """Create an instance of a workload. ``answer="minimal"``: only ``{"id", "version"}`` (the
        version this write gave it; default: the client's ``answer``)."""
        args: dict[str, Any] = {"workload_id": workload_id}
        if id is not None:
            args["id"] = id
        if node_id is not None:
            args["node_id"] = node_id
        return await self.write("instance.create", args, answer=answer)

    async def list_instances(
        self: _Runner,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        """List instances, by workload, node and status, paginated by id. A page ``{"items": [...],
        "next": key | None}``: pass ``next`` as ``after`` for the following one."""
        args: dict[str, Any] = {}
        if workload_id is not None:
            args["workload_id"] = workload_id
        if node_id is not None:
            args["node_id"] = node_id
        if status is not None:
            args["status"] = status
        if limit is not None:
            args["limit"] = limit
        if after is not None:
            args["after"] = after
        return await self.call("instance.list", args, consistency=consistency)

    async def get_instance(
        self: _Runner,
        id: str,
        *,
        consistency: str | None = None,
    ) -> Any:
        """Get an instance."""
        args: dict[str, Any] = {"id": id}
        return await self.call("instance.get", args, consistency=consistency)

    async def update_instance_status(
        self: _Runner,
        id: str,
        status: str,
        *,
        message: str | None = None,
        node_id: str | None = None,
        expected_version: int | None = None,
        answer: str | None = None,
    ) -> Any:
        """Report an instance's status (and bind it to a node). ``answer="minimal"``: only ``{"id",
        "version"}`` (the version this write gave it; default: the client's ``answer``)."""
        args: dict[str, Any] = {"id": id, "status": status}
        if message is not None:
            args["message"] = message
        if node_id is not None:
            args["node_id"] = node_id
        if expected_version is not None:
            args["expected_version"] = expected_version
        return await self.write("instance.update_status", args, answer=answer)

    async def delete_instance(
        self: _Runner,
        id: str,
        *,
        expected_version: int | None = None,
    ) -> Any:
        """Delete an instance."""
        args: dict[str, Any] = {"id": id}
        if expected_version is not None:
            args["expected_version"] = expected_version
        return await self.write("instance.delete", args)

    async def register_node(
        self: _Runner,
        id: str,
        *,
        addresses: list[str] | None = None,
        capacity: dict[str, int] | None = None,
        labels: dict[str, str] | None = None,
        status: str | None = None,
        answer: str | None = None,
    ) -> Any:
        """Register a node. ``answer="minimal"``: only ``{"id", "version"}`` (the version this write
        gave it; default: the client's ``answer``)."""
        args: dict[str, Any] = {"id": id}
        if addresses is not None:
            args["addresses"] = addresses
        if capacity is not None:
            args["capacity"] = capacity
        if labels is not None:
            args["labels"] = labels
        if status is not None:
            args["status"] = status
        return await self.write("node.register", args, answer=answer)

    async def list_nodes(
        self: _Runner,
        *,
        labels: dict[str, str] | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        """List nodes, by labels and status, paginated by id. A page ``{"items": [...], "next": key
        | None}``: pass ``next`` as ``after`` for the following one."""
        args: dict[str, Any] = {}
        if labels is not None:
            args["labels"] = labels
        if status is not None:
            args["status"] = status
        if limit is not None:
            args["limit"] = limit
        if after is not None:
            args["after"] = after
        return await self.call("node.list", args, consistency=consistency)

    async def get_node(
        self: _Runner,
        id: str,
        *,
        consistency: str | None = None,
    ) -> Any:
        """Get a node."""
        args: dict[str, Any] = {"id": id}
        return await self.call("node.get", args, consistency=consistency)

    async def update_node_status(
        self: _Runner,
        id: str,
        status: str,
        *,
        expected_version: int | None = None,
        answer: str | None = None,
    ) -> Any:
        """Set a node's status. ``answer="minimal"``: only ``{"id", "version"}`` (the version this
        write gave it; default: the client's ``answer``)."""
        args: dict[str, Any] = {"id": id, "status": status}
        if expected_version is not None:
            args["expected_version"] = expected_version
        return await self.write("node.update_status", args, answer=answer)

    async def deregister_node(
        self: _Runner,
        id: str,
        *,
        expected_version: int | None = None,
    ) -> Any:
        """Deregister a node and delete its instances."""
        args: dict[str, Any] = {"id": id}
        if expected_version is not None:
            args["expected_version"] = expected_version
        return await self.write("node.deregister", args)

    async def heartbeat_node(
        self: _Runner,
        id: str,
    ) -> Any:
        """Report a registered node alive (a down node comes back ready)."""
        args: dict[str, Any] = {"id": id}
        return await self.write("node.heartbeat", args)

    async def poll_events(
        self: _Runner,
        *,
        kinds: str | None = None,
        from_revision: int | None = None,
        wait_ms: int | None = None,
        limit: int | None = None,
        consistency: str | None = None,
    ) -> Any:
        """Change events from a revision on, from this node's history (waits up to wait_ms for
        one)."""
        args: dict[str, Any] = {}
        if kinds is not None:
            args["kinds"] = kinds
        if from_revision is not None:
            args["from_revision"] = from_revision
        if wait_ms is not None:
            args["wait_ms"] = wait_ms
        if limit is not None:
            args["limit"] = limit
        return await self.call("events.poll", args, consistency=consistency)

    async def reconcile_status(
        self: _Runner,
        *,
        consistency: str | None = None,
    ) -> Any:
        """What the reconciler has left to do: per workload, its desired and live instances, those
        to place or remove, and those no node can take (from the state)."""
        args: dict[str, Any] = {}
        return await self.call("reconcile.status", args, consistency=consistency)

    async def mint_credits(
        self: _Runner,
        to_peer: str,
        amount: int,
        reason: str,
    ) -> Any:
        """Mint credits for a peer."""
        args: dict[str, Any] = {"to_peer": to_peer, "amount": amount, "reason": reason}
        return await self.write("credits.mint", args)

    async def transfer_credits(
        self: _Runner,
        from_peer: str,
        to_peer: str,
        amount: int,
    ) -> Any:
        """Transfer credits between peers."""
        args: dict[str, Any] = {"from_peer": from_peer, "to_peer": to_peer, "amount": amount}
        return await self.write("credits.transfer", args)

    async def list_balances(
        self: _Runner,
        *,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        """List positive balances, paginated by peer. A page ``{"items": [...], "next": key |
        None}``: pass ``next`` as ``after`` for the following one."""
        args: dict[str, Any] = {}
        if limit is not None:
            args["limit"] = limit
        if after is not None:
            args["after"] = after
        return await self.call("credits.list", args, consistency=consistency)

    async def balance(
        self: _Runner,
        peer: str,
        *,
        consistency: str | None = None,
    ) -> Any:
        """Get a peer's balance (0 if it has none)."""
        args: dict[str, Any] = {"peer": peer}
        return await self.call("credits.balance", args, consistency=consistency)

    async def bootstrap_token(
        self: _Runner,
        *,
        name: str | None = None,
        id: str | None = None,
        secret: str | None = None,
    ) -> Any:
        """Create the first admin token; works once in the cluster's life and needs no token (the
        answer holds the secret, shown only this once)."""
        args: dict[str, Any] = {}
        if name is not None:
            args["name"] = name
        if id is not None:
            args["id"] = id
        if secret is not None:
            args["secret"] = secret
        return await self.write("token.bootstrap", args)

    async def create_token(
        self: _Runner,
        name: str,
        roles: list[str],
        *,
        id: str | None = None,
        secret: str | None = None,
    ) -> Any:
        """Create an API token with roles (the answer holds the secret, shown only this once)."""
        args: dict[str, Any] = {"name": name, "roles": roles}
        if id is not None:
            args["id"] = id
        if secret is not None:
            args["secret"] = secret
        return await self.write("token.create", args)

    async def list_tokens(
        self: _Runner,
        *,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        """List API tokens (never their secrets), paginated by id. A page ``{"items": [...], "next":
        key | None}``: pass ``next`` as ``after`` for the following one."""
        args: dict[str, Any] = {}
        if limit is not None:
            args["limit"] = limit
        if after is not None:
            args["after"] = after
        return await self.call("token.list", args, consistency=consistency)

    async def revoke_token(
        self: _Runner,
        id: str,
    ) -> Any:
        """Revoke an API token: every node refuses it once the revoke applied there."""
        args: dict[str, Any] = {"id": id}
        return await self.write("token.revoke", args)
