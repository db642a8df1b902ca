"""``univrs node start``: run a node (the daemon) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import pathlib
import signal
from typing import Any

import click
import trio

from univrs.cli.common import env_token, fail
from univrs.errors import ConfigError, StorageError, UnivrsError

# The name the node's crash line is logged under (univrs/chaos/checks.py looks for it).
log = logging.getLogger("univrs.cli")


def _first_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (trio wraps task errors in groups)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@click.group()
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
    help=(
        "On a new data dir, join the cluster of the node whose API is at ADDR (with an admin "
        "token in $UNIVRS_TOKEN if it has auth on)."
    ),
)
@click.option(
    "--initial-cluster-token",
    metavar="TOKEN",
    help="A value unique to this cluster, the same on every initial member "
    "(raft.initial_cluster_token): a multi-node bootstrap derives the cluster id from it.",
)
@click.option(
    "--initial-cluster-state",
    type=click.Choice(["new", "existing"]),
    help="What an empty data dir means (raft.initial_cluster_state, default new): 'new' "
    "bootstraps a new cluster (refused if a bootstrap peer shows this id already served), "
    "'existing' waits to be joined (univrs cluster join).",
)
@click.option("--ca-cert", type=click.Path(dir_okay=False), help="Cluster CA (tls.ca_cert).")
@click.option("--cert", type=click.Path(dir_okay=False), help="Node certificate (tls.cert).")
@click.option("--key", type=click.Path(dir_okay=False), help="Node private key (tls.key).")
@click.option(
    "--client-auth",
    type=click.Choice(["require", "optional"]),
    help="Client certificates for the REST API and fast protocol (tls.client_auth).",
)
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Run without TLS even on addresses beyond loopback (tls.insecure): anyone who "
    "reaches a port can then speak Raft to this node.",
)
@click.option(
    "--join-token",
    envvar="UNIVRS_JOIN_TOKEN",
    help="The shared secret joiners must show (join.token) [$UNIVRS_JOIN_TOKEN].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Least severe level logged.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one 'time level logger message key=value ...' line per event; json: one JSON "
    "object per line (ts, level, logger, msg, node and the event's fields).",
)
def node_start(
    config_path: str | None,
    node_id: str | None,
    data_dir: str | None,
    raft_addr: str | None,
    api_addr: str | None,
    cluster_id: str | None,
    bootstrap: str | None,
    join: str | None,
    initial_cluster_token: str | None,
    initial_cluster_state: str | None,
    ca_cert: str | None,
    cert: str | None,
    key: str | None,
    client_auth: str | None,
    insecure: bool | None,
    join_token: str | None,
    log_level: str,
    log_format: str,
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
        "initial_cluster_token": initial_cluster_token,
        "initial_cluster_state": initial_cluster_state,
        "ca_cert": ca_cert,
        "cert": cert,
        "key": key,
        "client_auth": client_auth,
        "insecure": insecure or None,
        "join_token": join_token,
    }
    try:
        config = load_config(pathlib.Path(config_path) if config_path else None, overrides)
    except ConfigError as exc:
        fail(f"invalid configuration:\n{exc}", 2)
    setup_logging(log_level, config.node_id, log_format)
    from univrs.server.heap import settle

    settle()  # this process runs one node: its imported modules leave the GC's walks
    try:
        trio.run(_run_until_signal, config, join, env_token())
    except BaseException as group:  # unwrap trio's exception groups
        cause = _first_cause(group)
        if isinstance(cause, KeyboardInterrupt):
            return
        if isinstance(cause, ConfigError):  # e.g. TLS files that cannot be loaded
            fail(f"invalid configuration:\n{cause}", 2)
        if isinstance(cause, StorageError):
            _log_disk_full(cause)
            fail(str(cause))
        if isinstance(cause, OSError):
            fail(f"cannot start the node: {cause}")
        if isinstance(cause, UnivrsError):
            fail(str(cause))
        log.critical("node crashed", exc_info=cause)
        fail(f"node crashed: {type(cause).__name__}: {cause}")


def _log_disk_full(cause: StorageError) -> None:
    """One ERROR line when the node stops on a full disk (univrs/storage/nospace.py): the
    file, the filesystem's free bytes and what to do, for log collectors (stderr says it too)."""
    from univrs.storage.nospace import DiskFull

    if isinstance(cause, DiskFull):
        log.error(
            "stopping: disk full",
            extra={
                "path": str(cause.path),
                "free_bytes": cause.free,
                "probably": cause.probably,
                "reason": str(cause),
            },
        )


async def _run_until_signal(config: Any, join: str | None, token: str | None) -> None:
    from univrs.server.node import run_node

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            await run_node(config, join=join, api_token=token)
            nursery.cancel_scope.cancel()


async def _cancel_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        scope.cancel()
        return
