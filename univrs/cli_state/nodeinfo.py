"""``univrs nodeinfo ...``: register, list, get, update and deregister machines (``univrs node``
is the daemon)."""

from __future__ import annotations

from typing import Any

import click

from univrs.cli import format_table, main
from univrs.cli_state.common import (
    all_pages,
    client_for,
    common_options,
    consistency,
    deleted,
    emit,
    labels_text,
    local_option,
    next_note,
    pairs,
)


def _node_table(page: dict[str, Any]) -> str:
    rows = [
        [
            n["id"],
            n["status"],
            ",".join(n["addresses"]) or "-",
            n["capacity"]["cpu_millis"],
            n["capacity"]["memory_bytes"],
            labels_text(n["labels"]),
            n["version"],
        ]
        for n in page["items"]
    ]
    headers = ["ID", "STATUS", "ADDRESSES", "CPU_MILLIS", "MEMORY_BYTES", "LABELS", "VERSION"]
    return format_table(headers, rows) + next_note(page)


def _node_detail(n: dict[str, Any]) -> str:
    return _node_table({"items": [n], "next": None})


@main.group()
def nodeinfo() -> None:
    """Register, list, inspect, update and deregister the machines that run instances."""


@nodeinfo.command("register")
@click.argument("ident")
@click.option("--address", "addresses", multiple=True, help="How to reach it (repeatable).")
@click.option("--cpu-millis", type=int, help="CPU capacity in thousandths of a core.")
@click.option("--memory-bytes", type=int, help="Memory capacity in bytes.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE (repeatable).")
@click.option("--status", help="ready (default), not-ready, draining or down.")
@common_options
def nodeinfo_register(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    addresses: tuple[str, ...],
    cpu_millis: int | None,
    memory_bytes: int | None,
    labels: tuple[str, ...],
    status: str | None,
) -> None:
    """Register a node."""
    capacity = None
    if cpu_millis is not None or memory_bytes is not None:
        capacity = {"cpu_millis": cpu_millis or 0, "memory_bytes": memory_bytes or 0}
    with client_for(api, timeout) as client:
        doc = client.register_node(
            ident,
            addresses=list(addresses) or None,
            capacity=capacity,
            labels=pairs(labels, "--label") if labels else None,
            status=status,
        )
        emit(as_json, doc, _node_detail)


@nodeinfo.command("list")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE that must match (repeatable).")
@click.option("--status", help="Only nodes with this status.")
@click.option("--limit", type=int, help="One page of at most this many (default: all).")
@click.option("--after", help="Start after this id (from a previous page).")
@local_option
@common_options
def nodeinfo_list(
    api: str,
    timeout: float,
    as_json: bool,
    labels: tuple[str, ...],
    status: str | None,
    limit: int | None,
    after: str | None,
    local: bool,
) -> None:
    """List registered nodes (sorted by id)."""
    selector = pairs(labels, "--label") if labels else None
    with client_for(api, timeout) as client:
        page = all_pages(
            client.list_nodes,
            limit,
            labels=selector,
            status=status,
            after=after,
            consistency=consistency(local),
        )
        emit(as_json, page, _node_table)


@nodeinfo.command("get")
@click.argument("ident")
@local_option
@common_options
def nodeinfo_get(api: str, timeout: float, as_json: bool, ident: str, local: bool) -> None:
    """Show one registered node."""
    with client_for(api, timeout) as client:
        emit(as_json, client.get_node(ident, consistency=consistency(local)), _node_detail)


@nodeinfo.command("status")
@click.argument("ident")
@click.argument("status")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@common_options
def nodeinfo_status(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    status: str,
    expected_version: int | None,
) -> None:
    """Set a node's STATUS (ready, not-ready, draining, down)."""
    with client_for(api, timeout) as client:
        doc = client.update_node_status(ident, status, expected_version=expected_version)
        emit(as_json, doc, _node_detail)


@nodeinfo.command("deregister")
@click.argument("ident")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@common_options
def nodeinfo_deregister(
    api: str, timeout: float, as_json: bool, ident: str, expected_version: int | None
) -> None:
    """Deregister a node (its instances are deleted)."""
    with client_for(api, timeout) as client:
        doc = client.deregister_node(ident, expected_version=expected_version)
        emit(as_json, doc, deleted("node"))
