"""``univrs instance ...``: create, list, get, report the status of and delete instances."""

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
    local_option,
    next_note,
)


def _instance_table(page: dict[str, Any]) -> str:
    rows = [
        [i["id"], i["workload_id"], i["node_id"] or "-", i["status"], i["version"], i["message"]]
        for i in page["items"]
    ]
    headers = ["ID", "WORKLOAD", "NODE", "STATUS", "VERSION", "MESSAGE"]
    return format_table(headers, rows) + next_note(page)


def _instance_detail(i: dict[str, Any]) -> str:
    return format_table(
        ["ID", "WORKLOAD", "NODE", "STATUS", "VERSION", "MESSAGE"],
        [[i["id"], i["workload_id"], i["node_id"] or "-", i["status"], i["version"], i["message"]]],
    )


@main.group()
def instance() -> None:
    """Create, list, inspect, report on and delete instances."""


@instance.command("create")
@click.argument("workload_id")
@click.option("--node", "node_id", help="Place it on this node (default: unscheduled).")
@click.option("--id", "ident", help="Id of the new instance (default: assigned by the node).")
@common_options
def instance_create(
    api: str,
    timeout: float,
    as_json: bool,
    workload_id: str,
    node_id: str | None,
    ident: str | None,
) -> None:
    """Create an instance of a workload."""
    with client_for(api, timeout) as client:
        doc = client.create_instance(workload_id, node_id=node_id, id=ident)
        emit(as_json, doc, _instance_detail)


@instance.command("list")
@click.option("--workload", "workload_id", help="Only instances of this workload.")
@click.option("--node", "node_id", help="Only instances on this node.")
@click.option("--status", help="Only instances with this status.")
@click.option("--limit", type=int, help="One page of at most this many (default: all).")
@click.option("--after", help="Start after this id (from a previous page).")
@local_option
@common_options
def instance_list(
    api: str,
    timeout: float,
    as_json: bool,
    workload_id: str | None,
    node_id: str | None,
    status: str | None,
    limit: int | None,
    after: str | None,
    local: bool,
) -> None:
    """List instances (sorted by id)."""
    with client_for(api, timeout) as client:
        page = all_pages(
            client.list_instances,
            limit,
            workload_id=workload_id,
            node_id=node_id,
            status=status,
            after=after,
            consistency=consistency(local),
        )
        emit(as_json, page, _instance_table)


@instance.command("get")
@click.argument("ident")
@local_option
@common_options
def instance_get(api: str, timeout: float, as_json: bool, ident: str, local: bool) -> None:
    """Show one instance."""
    with client_for(api, timeout) as client:
        doc = client.get_instance(ident, consistency=consistency(local))
        emit(as_json, doc, _instance_detail)


@instance.command("status")
@click.argument("ident")
@click.argument("status")
@click.option("--message", help="Free text (exit reason, error).")
@click.option("--node", "node_id", help="Bind an unscheduled instance to this node.")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@common_options
def instance_status(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    status: str,
    message: str | None,
    node_id: str | None,
    expected_version: int | None,
) -> None:
    """Report an instance's STATUS (pending, running, succeeded, failed, unknown)."""
    with client_for(api, timeout) as client:
        doc = client.update_instance_status(
            ident, status, message=message, node_id=node_id, expected_version=expected_version
        )
        emit(as_json, doc, _instance_detail)


@instance.command("delete")
@click.argument("ident")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@common_options
def instance_delete(
    api: str, timeout: float, as_json: bool, ident: str, expected_version: int | None
) -> None:
    """Delete an instance."""
    with client_for(api, timeout) as client:
        doc = client.delete_instance(ident, expected_version=expected_version)
        emit(as_json, doc, deleted("instance"))
