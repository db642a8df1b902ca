"""``univrs watch KIND...``: print the cluster's change events as they happen.

A loop of ``events.poll`` long polls through the client (``univrs.client``): each poll asks for
the revision after the last one printed, and a failed poll is retried on another member, so
the output has no gap and no duplicate across a node failure or a leader change.
"""

from __future__ import annotations

import json
from typing import Any

import click

from univrs.cli.common import client_for, common_options

WAIT_MS = 5_000


def _status(obj: dict[str, Any] | None) -> str:
    if obj is None:
        return "-"
    status = obj.get("status")
    if isinstance(status, dict):  # a workload: its phase and replica counts
        return f"{status.get('phase')} {status.get('running')}/{status.get('desired')}"
    return str(status)


def event_line(event: dict[str, Any]) -> str:
    """One event as a line for people: revision, type, kind, id and the status after."""
    after = event["object"] if event["type"] == "put" else event["prev"]
    return f"{event['revision']:>8}  {event['type']:<6}  {event['kind']:<8}  {event['id']}  " + (
        _status(after)
    )


@click.command("watch")
@click.argument("kinds", nargs=-1)
@click.option("--from", "from_revision", type=int, help="First revision (default: from now).")
@click.option("--count", type=int, help="Stop after this many events (default: never).")
@common_options
def watch(
    api: str,
    timeout: float,
    as_json: bool,
    kinds: tuple[str, ...],
    from_revision: int | None,
    count: int | None,
) -> None:
    """Print change events of KINDS (workloads, instances, nodes; default all) as they
    happen, from --from REV on (list first: lists show the revision they were read at)."""
    shown = 0
    start = from_revision
    with client_for(api, timeout) as client:
        while count is None or shown < count:
            args: dict[str, Any] = {"wait_ms": WAIT_MS}
            if kinds:
                args["kinds"] = ",".join(kinds)
            if start is not None:
                args["from_revision"] = start
            page = client.call("events.poll", args, timeout=timeout + WAIT_MS / 1000)
            for event in page["events"]:
                if count is not None and shown >= count:
                    break
                click.echo(json.dumps(event, sort_keys=True) if as_json else event_line(event))
                shown += 1
            start = page["revision"] + 1
