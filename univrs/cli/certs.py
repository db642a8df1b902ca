"""``univrs certs create-ca|create-node|create-client|list``: the cluster's certificates.

In the spirit of ``cockroach cert``: one command per certificate, into one certs directory
(``--certs-dir``, default ``./certs`` or ``$UNIVRS_CERTS_DIR``); keys are written 0600 and
never overwritten without ``--overwrite``. See docs/security.md for set-up and rotation.
"""

from __future__ import annotations

import os
import pathlib

import click

from univrs.cli.common import EXIT_USAGE, fail


def _certs_dir(f: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--certs-dir",
        type=click.Path(file_okay=False, path_type=pathlib.Path),
        default=lambda: os.environ.get("UNIVRS_CERTS_DIR", "certs"),
        show_default="$UNIVRS_CERTS_DIR or ./certs",
        help="Where the CA and the certificates live.",
    )(f)


def _ca_key(f: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--ca-key",
        type=click.Path(dir_okay=False, path_type=pathlib.Path),
        help="The CA's key, if kept outside the certs dir (default <certs-dir>/ca.key).",
    )(f)


def _overwrite(f: click.decorators.FC) -> click.decorators.FC:
    return click.option("--overwrite", is_flag=True, help="Replace existing files.")(f)


def _days(f: click.decorators.FC) -> click.decorators.FC:
    from univrs.net.certs import CERT_DAYS

    return click.option(
        "--days", type=click.IntRange(1, 36500), default=CERT_DAYS, show_default=True
    )(f)


@click.group()
def certs() -> None:
    """Create the cluster CA, node certificates and client certificates."""


@certs.command("create-ca")
@_certs_dir
@_overwrite
def create_ca(certs_dir: pathlib.Path, overwrite: bool) -> None:
    """Create the cluster CA (ca.crt, ca.key). Every node and client trusts ca.crt; keep
    ca.key off the nodes if you can."""
    from univrs.net.certs import CertError, create_ca

    try:
        path = create_ca(certs_dir, overwrite=overwrite)
    except CertError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"created the CA: {path} (key {certs_dir / 'ca.key'}, mode 0600)")


@certs.command("create-node")
@click.option("--node-id", required=True, help="The node's id (raft.node_id).")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="A host name or IP address the node is reached at (repeat it).",
)
@_certs_dir
@_ca_key
@_days
@_overwrite
def create_node(
    node_id: str,
    hosts: tuple[str, ...],
    certs_dir: pathlib.Path,
    ca_key: pathlib.Path | None,
    days: int,
    overwrite: bool,
) -> None:
    """Create node NODE-ID's certificate and key (node.<id>.crt/.key), signed by the CA."""
    from univrs.net.certs import CertError, create_node

    try:
        cert, key = create_node(
            certs_dir, node_id, hosts, ca_key=ca_key, overwrite=overwrite, days=days
        )
    except CertError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"created {cert} and {key} for node {node_id} ({', '.join(hosts)})")


@certs.command("create-client")
@click.argument("name")
@_certs_dir
@_ca_key
@_days
@_overwrite
def create_client(
    name: str, certs_dir: pathlib.Path, ca_key: pathlib.Path | None, days: int, overwrite: bool
) -> None:
    """Create client NAME's certificate and key (client.<name>.crt/.key), signed by the CA."""
    from univrs.net.certs import CertError, create_client

    try:
        cert, key = create_client(certs_dir, name, ca_key=ca_key, overwrite=overwrite, days=days)
    except CertError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"created {cert} and {key} for client {name}")


@certs.command("list")
@_certs_dir
def list_certs(certs_dir: pathlib.Path) -> None:
    """The certificates in the certs dir: who each names and until when it is valid."""
    from univrs.net.certs import describe

    if not certs_dir.is_dir():
        fail(f"{certs_dir} is not a directory", EXIT_USAGE)
    for path in sorted(certs_dir.glob("*.crt")):
        click.echo(f"{path.name}: {describe(path)}")
