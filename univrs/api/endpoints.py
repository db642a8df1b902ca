"""The addresses a node tells fast-protocol clients in its hello (``univrs.api.fast``) and
shows on the dashboard: every member's raft listener (``/client``) and REST addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from univrs.net.address import join_host_port, split_host_port

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle


def _own_address(configured: str, bound: int | None) -> str:
    """A listen address as others should dial it: a port-0 bind replaced by the bound port."""
    try:
        host, port = split_host_port(configured, allow_port_zero=True)
    except ValueError:
        return configured
    if port == 0 and bound:
        return join_host_port(host, bound)
    return configured


def member_endpoints(node: NodeHandle) -> dict[str, dict[str, str | None]]:
    """Every member's fast-protocol (raft listener) and REST addresses, as far as known."""
    membership = node.status().membership
    out: dict[str, dict[str, str | None]] = {}
    for member in sorted(membership.members):
        client = membership.address_of(member)
        api = membership.api_address_of(member)
        if member == node.node_id:
            client = _own_address(client or node.config.raft_addr, node.raft_port)
            api = _own_address(api or node.config.api_addr, node.api_port)
        out[member] = {"client": client, "api": api}
    if node.node_id not in out:  # a node not (yet) in the membership still serves clients
        out[node.node_id] = {
            "client": _own_address(node.config.raft_addr, node.raft_port),
            "api": _own_address(node.config.api_addr, node.api_port),
        }
    return out
