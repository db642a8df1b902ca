"""The `univrs` command line: the node daemon, cluster operations and the state's CLI."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import sys
import urllib.error
import urllib.request
from typing import Any, NoReturn

import click
import trio

from univrs import __version__
from univrs.errors import ConfigError, StorageError, UnivrsError

DEFAULT_API = "127.0.0.1:8000"
log = logging.getLogger("univrs.cli")


def _die(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _first_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (trio wraps task errors in groups)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@click.group()
@click.version_option(__version__, prog_name="univrs")
def main() -> None:
    """univrs: replicated, durable cluster state for the Univrs orchestrator."""


# ---------------------------------------------------------------------------- node


@main.group()
def node() -> None:
    """Run a univrs node."""


@node.command("start")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file.")
@click.option("--id", "node_id", help="This node's id (raft.node_id).")
@click.option("--data-dir", help="Data directory (raft.data_dir).")
@click.option("--raft-addr", help="host:port for Raft traffic (raft.raft_addr).")
@click.option("--api-addr", help="host:port for the HTTP API (api.addr).")
@click.option("--cluster-id", help="Cluster id stored at bootstrap and checked on every link.")
@click.option(
    "--bootstrap",
    help="Initial members when the data dir is new: 'n1=host:port,n2=host:port,...'.",
)
@click.option(
    "--join",
    "join",
    metavar="ADDR",
    help="On a new data dir, join the cluster of the node whose API is at ADDR.",
)
@click.option(
    "--initial-cluster-state",
    type=click.Choice(["new", "existing"]),
    help="What an empty data dir means (raft.initial_cluster_state, default new): 'new' "
    "bootstraps a new cluster (refused if a bootstrap peer shows this id already served), "
    "'existing' waits to be joined (univrs cluster join).",
)
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning.")
def node_start(
    config_path: str | None,
    node_id: str | None,
    data_dir: str | None,
    raft_addr: str | None,
    api_addr: str | None,
    cluster_id: str | None,
    bootstrap: str | None,
    join: str | None,
    initial_cluster_state: str | None,
    log_level: str,
) -> None:
    """Start a node. With no arguments: a single-node cluster on the embedded default
    (data dir ./univrs-data, raft 127.0.0.1:7000, API 127.0.0.1:8000), bootstrapped when the
    data dir is new. Stop it with Ctrl-C or SIGTERM."""
    from univrs.config import load_config
    from univrs.logs import setup_logging

    overrides = {
        "node_id": node_id,
        "data_dir": data_dir,
        "raft_addr": raft_addr,
        "api_addr": api_addr,
        "cluster_id": cluster_id,
        "bootstrap": bootstrap,
        "initial_cluster_state": initial_cluster_state,
    }
    try:
        config = load_config(pathlib.Path(config_path) if config_path else None, overrides)
    except ConfigError as exc:
        _die(f"invalid configuration:\n{exc}", 2)
    setup_logging(log_level, config.node_id)
    try:
        trio.run(_run_until_signal, config, join)
    except BaseException as group:  # unwrap trio's exception groups
        cause = _first_cause(group)
        if isinstance(cause, KeyboardInterrupt):
            return
        if isinstance(cause, StorageError):
            _die(str(cause))
        if isinstance(cause, OSError):
            _die(f"cannot start the node: {cause}")
        if isinstance(cause, UnivrsError):
            _die(str(cause))
        log.critical("node crashed", exc_info=cause)
        _die(f"node crashed: {type(cause).__name__}: {cause}")


async def _run_until_signal(config: Any, join: str | None) -> None:
    from univrs.server.node import run_node

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            await run_node(config, join=join)
            nursery.cancel_scope.cancel()


async def _cancel_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        scope.cancel()
        return


# ---------------------------------------------------------------------------- cluster


def _api_option(f: Any) -> Any:
    return click.option(
        "--api",
        "api",
        default=lambda: os.environ.get("UNIVRS_API", DEFAULT_API),
        show_default=f"$UNIVRS_API or {DEFAULT_API}",
        help="Address (host:port) of any node's API.",
    )(f)


def http_json(
    api: str, method: str, path: str, body: Any = None, timeout: float = 60.0
) -> tuple[int, Any]:
    """(status, decoded body) of one request to the node at ``api``; exits when unreachable."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://{api}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        _die(f"cannot reach the univrs API at {api} ({reason}); is a node running there?")


@main.group()
def cluster() -> None:
    """Inspect and operate the cluster."""


@cluster.command("status")
@_api_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def cluster_status(api: str, as_json: bool) -> None:
    """Members with their role, term, leader, log indexes and replication lag."""
    status, doc = http_json(api, "GET", "/v1/cluster/status", timeout=5.0)
    if status >= 400 or not isinstance(doc, dict):
        _die(f"{api} answered {status}")
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
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


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


import univrs.chaos.cli  # noqa: E402, F401  (registers `univrs chaos`)
from univrs import cli_cluster, cli_state  # noqa: E402, F401  (register their commands)

if __name__ == "__main__":
    main()
