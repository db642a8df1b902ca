"""The typed operations of the client (workloads, instances, nodes, credits), as a mixin.

Each method builds an operation's arguments (leaving out the ones not given) and runs it with
``call`` (reads, optionally ``consistency="local"``) or ``write`` (exactly once, with an
idempotency key). Results are the documents of ``docs/api.md``: plain dicts.
"""

from __future__ import annotations

from typing import Any


def _args(**kwargs: Any) -> dict[str, Any]:
    """The given keyword arguments without the None ones."""
    return {k: v for k, v in kwargs.items() if v is not None}


class StateMethods:
    """Typed operations on top of ``call`` and ``write`` (provided by the client class)."""

    async def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        key: tuple[str, int] | None = None,
        consistency: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> Any:  # pragma: no cover - implemented by Client
        raise NotImplementedError

    async def write(
        self, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:  # pragma: no cover - implemented by Client
        raise NotImplementedError

    # ---------------------------------------------------------------- workloads

    async def create_workload(self, spec: dict[str, Any], *, id: str | None = None) -> Any:
        """Create a workload; returns it with its id (assigned by the node unless given)."""
        return await self.write("workload.create", _args(spec=spec, id=id))

    async def get_workload(self, id: str, *, consistency: str | None = None) -> Any:
        return await self.call("workload.get", {"id": id}, consistency=consistency)

    async def list_workloads(
        self,
        *,
        labels: dict[str, str] | None = None,
        name: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        """A page ``{"items": [...], "next": id | None}`` of workloads sorted by id."""
        args = _args(labels=labels, name=name, limit=limit, after=after)
        return await self.call("workload.list", args, consistency=consistency)

    async def update_workload(
        self, id: str, spec: dict[str, Any], *, expected_version: int | None = None
    ) -> Any:
        args = _args(id=id, spec=spec, expected_version=expected_version)
        return await self.write("workload.update", args)

    async def scale_workload(
        self, id: str, replicas: int, *, expected_version: int | None = None
    ) -> Any:
        args = _args(id=id, replicas=replicas, expected_version=expected_version)
        return await self.write("workload.scale", args)

    async def delete_workload(self, id: str, *, expected_version: int | None = None) -> Any:
        return await self.write("workload.delete", _args(id=id, expected_version=expected_version))

    # ---------------------------------------------------------------- instances

    async def create_instance(
        self, workload_id: str, *, node_id: str | None = None, id: str | None = None
    ) -> Any:
        args = _args(workload_id=workload_id, node_id=node_id, id=id)
        return await self.write("instance.create", args)

    async def get_instance(self, id: str, *, consistency: str | None = None) -> Any:
        return await self.call("instance.get", {"id": id}, consistency=consistency)

    async def list_instances(
        self,
        *,
        workload_id: str | None = None,
        node_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        args = _args(
            workload_id=workload_id, node_id=node_id, status=status, limit=limit, after=after
        )
        return await self.call("instance.list", args, consistency=consistency)

    async def update_instance_status(
        self,
        id: str,
        status: str,
        *,
        message: str | None = None,
        node_id: str | None = None,
        expected_version: int | None = None,
    ) -> Any:
        args = _args(
            id=id,
            status=status,
            message=message,
            node_id=node_id,
            expected_version=expected_version,
        )
        return await self.write("instance.update_status", args)

    async def delete_instance(self, id: str, *, expected_version: int | None = None) -> Any:
        return await self.write("instance.delete", _args(id=id, expected_version=expected_version))

    # ---------------------------------------------------------------- nodes

    async def register_node(
        self,
        id: str,
        *,
        addresses: list[str] | None = None,
        capacity: dict[str, int] | None = None,
        labels: dict[str, str] | None = None,
        status: str | None = None,
    ) -> Any:
        args = _args(id=id, addresses=addresses, capacity=capacity, labels=labels, status=status)
        return await self.write("node.register", args)

    async def get_node(self, id: str, *, consistency: str | None = None) -> Any:
        return await self.call("node.get", {"id": id}, consistency=consistency)

    async def list_nodes(
        self,
        *,
        labels: dict[str, str] | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        args = _args(labels=labels, status=status, limit=limit, after=after)
        return await self.call("node.list", args, consistency=consistency)

    async def update_node_status(
        self, id: str, status: str, *, expected_version: int | None = None
    ) -> Any:
        args = _args(id=id, status=status, expected_version=expected_version)
        return await self.write("node.update_status", args)

    async def deregister_node(self, id: str, *, expected_version: int | None = None) -> Any:
        return await self.write("node.deregister", _args(id=id, expected_version=expected_version))

    # ---------------------------------------------------------------- credits

    async def mint_credits(self, to_peer: str, amount: int, reason: str) -> Any:
        args = {"to_peer": to_peer, "amount": amount, "reason": reason}
        return await self.write("credits.mint", args)

    async def transfer_credits(self, from_peer: str, to_peer: str, amount: int) -> Any:
        args = {"from_peer": from_peer, "to_peer": to_peer, "amount": amount}
        return await self.write("credits.transfer", args)

    async def balance(self, peer: str, *, consistency: str | None = None) -> Any:
        return await self.call("credits.balance", {"peer": peer}, consistency=consistency)

    async def list_balances(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> Any:
        args = _args(limit=limit, after=after)
        return await self.call("credits.list", args, consistency=consistency)
