"""``univrs cluster status|members|join|leave|remove|transfer-leader|snapshot``: inspect the
cluster, change its membership, take snapshots (the REST endpoints of ``univrs/api/admin.py``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import click

from univrs.cli.common import (
    EXIT_ANSWERED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    api_option,
    api_url,
    fail,
    format_table,
    http_json,
)

JOIN_TIMEOUT = 600.0


@click.group()
def cluster() -> None:
    """Inspect and operate the cluster."""


@cluster.command("status")
@api_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def cluster_status(api: str, as_json: bool) -> None:
    """Members with their role, term, leader, log indexes and replication lag.

    Exits 0 when the cluster has a leader and every member answers, 1 when a member is
    unreachable, 3 when there is no leader or no node answers at --api (after printing what
    it saw), like `etcdctl endpoint health`."""
    status, doc = http_json(api, "GET", "/v1/cluster/status", timeout=5.0)
    if status >= 400 or not isinstance(doc, dict):
        fail(f"{api} answered {status}", EXIT_UNAVAILABLE if status == 503 else EXIT_ANSWERED)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _print_status(doc)
    unreachable = [m["id"] for m in doc.get("members", []) if not m.get("reachable")]
    if not doc.get("leader"):
        fail("the cluster has no leader", EXIT_UNAVAILABLE)
    if unreachable:
        fail(f"unreachable: {', '.join(unreachable)}", EXIT_ANSWERED)


def _print_status(doc: dict[str, Any]) -> None:
    click.echo(f"leader: {doc.get('leader') or '(none)'}   term: {doc.get('term')}")
    headers = [
        "ID",
        "INCARNATION",
        "RAFT",
        "API",
        "ROLE",
        "TERM",
        "LEADER",
        "LAST",
        "COMMIT",
        "APPLIED",
        "LAG",
    ]
    rows = []
    for m in doc.get("members", []):
        role = m.get("role", "unreachable") if m.get("reachable") else "unreachable"
        if not m.get("voter"):
            role += " (learner)"
        rows.append(
            [
                m["id"],
                _incarnation_cell(m),
                m.get("raft_addr") or "-",
                m.get("api_addr") or "-",
                role,
                m.get("term", "-"),
                m.get("leader") or "-",
                m.get("last_index", "-"),
                m.get("commit_index", "-"),
                m.get("applied_index", "-"),
                m.get("lag", "-"),
            ]
        )
    click.echo(format_table(headers, rows))


def _incarnation_cell(m: dict[str, Any]) -> str:
    """The incarnation the configuration lists for a member; ``!`` marks a member whose
    running data dir is another incarnation (it must be replaced)."""
    listed = m.get("incarnation")
    running = m.get("running_incarnation")
    if listed is None:
        return f"({running}, unbound)" if running else "(unbound)"
    return f"{listed} !running {running}" if running and running != listed else str(listed)


def _one_node(api: str, command: str) -> str:
    """The single endpoint of a command that acts on one particular node (join, leave,
    snapshot): with a list, a node that is down would silently be replaced by another."""
    if "," in api:
        fail(f"cluster {command} acts on one node: give a single --api endpoint", EXIT_USAGE)
    return api


def _message(doc: Any) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return str(doc["error"].get("message"))
    return json.dumps(doc)


def _ok(status: int, doc: Any, as_json: bool) -> Any:
    if status >= 400:
        fail(_message(doc), EXIT_UNAVAILABLE if status == 503 else EXIT_ANSWERED)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    return doc


@cluster.command("members")
@api_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def members(api: str, as_json: bool) -> None:
    """Members: id, addresses, voter/learner, match index, lag, last contact (leader's view)."""
    doc = _ok(*http_json(api, "GET", "/v1/cluster/members"), as_json)
    if as_json:
        return
    rows = [
        [
            m["id"] + (" *" if m.get("leader") else ""),
            m.get("incarnation") or "(unbound)",
            m.get("raft_addr") or "-",
            m.get("api_addr") or "-",
            m["kind"],
            m.get("match_index", "-"),
            m.get("lag", "-"),
            "-" if m.get("last_contact_s") is None else f"{m['last_contact_s']:.2f}s ago",
        ]
        for m in doc["members"]
    ]
    header = ["ID", "INCARNATION", "RAFT", "API", "KIND", "MATCH", "LAG", "LAST CONTACT"]
    click.echo(format_table(header, rows))
    click.echo(f"(* leader, term {doc.get('term')})")


@cluster.command("join")
@click.argument("addr")
@api_option
@click.option("--timeout", default=JOIN_TIMEOUT, show_default=True, help="Seconds to wait.")
@click.option(
    "--replace",
    is_flag=True,
    help="The local node lost its data dir but keeps its id: replace the member's old "
    "incarnation with this one (it rejoins as a learner, then a voter once caught up).",
)
@click.option(
    "--token",
    envvar="UNIVRS_JOIN_TOKEN",
    help="The cluster's join token (its members' join.token) [$UNIVRS_JOIN_TOKEN]; without "
    "it the node shows its own configured token, or its node certificate.",
)
def join(addr: str, api: str, timeout: float, replace: bool, token: str | None) -> None:
    """Make the local node (at --api) join the cluster that the node at ADDR (its API address)
    belongs to. The local node must be new: started with `univrs node start` on an empty data
    dir. Shows progress and returns once the node is a voter.

    With --replace, a member whose data dir was lost (started again on an empty one, with
    --initial-cluster-state existing) takes its old id back as a new incarnation."""
    api = _one_node(api, "join")
    body: dict[str, Any] = {"target": addr}
    if replace:
        body["replace"] = True
    if token:
        body["token"] = token
    status, doc = http_json(api, "POST", "/v1/cluster/join", body)
    if status >= 400:
        fail(f"cannot join: {_message(doc)}")
    if isinstance(doc, dict) and doc.get("state") == "voter":
        click.echo(f"already a voter of cluster {doc.get('cluster_id')}")
        return
    cluster_id = doc.get("cluster_id")
    click.echo(f"joining cluster {cluster_id} via {addr} ...")
    deadline = time.monotonic() + timeout
    last = None
    base, context = api_url(api)
    while time.monotonic() < deadline:
        time.sleep(0.5)  # polling a remote process's progress, not synchronising a test
        try:
            with urllib.request.urlopen(
                f"{base}/v1/cluster/join", timeout=5, context=context
            ) as resp:
                progress = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError):
            continue  # the node restarts empty to join: its API is back in a moment
        if progress.get("cluster_id") != cluster_id:
            continue  # still the node from before its restart
        state = progress.get("state")
        line = f"  {state}"
        if state == "catching-up" and progress.get("entries_remaining") is not None:
            line += f": {progress['entries_remaining']} entries behind the leader"
        if progress.get("detail"):
            line += f" ({progress['detail']})"
        if line != last:
            click.echo(line)
            last = line
        if state == "voter":
            click.echo(f"joined cluster {progress.get('cluster_id')} as a voter")
            return
        if state == "failed":
            fail(f"join failed: {progress.get('detail')}")
    fail(f"the node did not become a voter within {timeout:g}s; see its log")


@cluster.command("leave")
@api_option
def leave(api: str) -> None:
    """The local node leaves the cluster gracefully (handing leadership over first if it
    leads). Stop the process afterwards."""
    api = _one_node(api, "leave")
    _ok(*http_json(api, "POST", "/v1/cluster/leave", {}), False)
    click.echo("left the cluster; the node can be stopped now")


@cluster.command("remove")
@click.argument("node_id")
@api_option
def remove(node_id: str, api: str) -> None:
    """Remove member NODE_ID (voter or learner), e.g. a dead node."""
    doc = _ok(*http_json(api, "DELETE", f"/v1/cluster/members/{node_id}"), False)
    click.echo(f"removed {node_id}; voters now: {', '.join(doc['voters'])}")


@cluster.command("transfer-leader")
@click.argument("node_id", required=False)
@api_option
def transfer_leader(node_id: str | None, api: str) -> None:
    """Hand leadership to NODE_ID (default: the most caught-up voter)."""
    body = {"target": node_id} if node_id else {}
    doc = _ok(*http_json(api, "POST", "/v1/cluster/transfer-leader", body), False)
    click.echo(f"leader is now {doc['leader']}")


@cluster.command("snapshot")
@api_option
def snapshot(api: str) -> None:
    """Take a snapshot on the node at --api now (and compact its log)."""
    api = _one_node(api, "snapshot")
    doc = _ok(*http_json(api, "POST", "/v1/cluster/snapshot", {}), False)
    click.echo(f"snapshot of {doc['node']} at index {doc['index']} (term {doc['term']})")
