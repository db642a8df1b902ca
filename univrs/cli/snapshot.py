"""``univrs snapshot save|status|restore``: back up a running cluster to a file, check a file,
and build the data dirs of a new cluster from one (etcdctl ``snapshot save``, etcdutl
``snapshot status|restore``). The file format is ``univrs/storage/backup.py``'s; the endpoint
``GET /v1/cluster/backup`` (``univrs/api/backup.py``)."""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
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
    auth_headers,
    fail,
)
from univrs.errors import StorageError
from univrs.net.address import split_host_port

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # node and cluster ids (config.md)


@click.group()
def snapshot() -> None:
    """Back up a cluster to a file and restore a new cluster from one."""


def _endpoints(api: str) -> list[str]:
    out = []
    for item in api.split(","):
        item = item.strip()
        for scheme in ("http://", "https://"):
            item = item.removeprefix(scheme)
        if item:
            out.append(item.rstrip("/"))
    return out


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False))
@api_option
@click.option(
    "--timeout", default=60.0, show_default=True, help="Seconds without progress before giving up."
)
def save(file: str, api: str, timeout: float) -> None:
    """Save a consistent snapshot of the running cluster to FILE.

    The node asked confirms a linearizable read point with the leader, snapshots at or after
    it and streams it; the file is written to FILE.tmp, checked against its sha256, fsynced and
    only then renamed to FILE. Exit 3 when no node answers or there is no quorum."""
    from univrs.storage.backup import CHUNK_BYTES, BackupReceiver, BadBackup

    path = pathlib.Path(file)
    last_error = "no API address given"
    for endpoint in _endpoints(api):
        secure = f"https://{endpoint}" in api  # the scheme it was given with
        base, context = api_url(f"https://{endpoint}" if secure else endpoint)
        req = urllib.request.Request(
            f"{base}/v1/cluster/backup", method="GET", headers=auth_headers()
        )
        try:
            resp = urllib.request.urlopen(req, timeout=timeout, context=context)
        except urllib.error.HTTPError as exc:
            doc: Any = None
            with contextlib.suppress(ValueError):
                doc = json.load(exc)
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            message = f"{err.get('code', exc.code)}: {err.get('message', exc.reason)}"
            if exc.code == 503:
                last_error = f"{endpoint}: {message}"
                continue
            fail(f"{endpoint}: {message}", EXIT_ANSWERED)
        except (urllib.error.URLError, OSError) as exc:
            last_error = f"cannot reach {endpoint} ({getattr(exc, 'reason', exc)})"
            continue
        try:
            with resp, BackupReceiver(path) as receiver:
                while chunk := resp.read(CHUNK_BYTES):
                    receiver.feed(chunk)
                header, sha256 = receiver.finish()
        except BadBackup as exc:
            fail(f"the stream from {endpoint} is not whole ({exc}); nothing saved", EXIT_ANSWERED)
        except OSError as exc:
            fail(f"saving from {endpoint} failed: {exc}; nothing saved", EXIT_UNAVAILABLE)
        click.echo(
            f"saved snapshot of cluster {header.cluster_id} at index {header.index} "
            f"(term {header.term}, from {header.node}) to {path}: {header.size} bytes of data, "
            f"sha256 {sha256}"
        )
        return
    fail(last_error, EXIT_UNAVAILABLE)


@snapshot.command("status")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(file: str, as_json: bool) -> None:
    """Describe a snapshot file and verify it: its sha256, and that its data is a state
    machine at the index it claims. Exit 1 if the file is corrupt or cut short."""
    from univrs.storage.backup import BadBackup, decode_state, describe, read_backup

    try:
        backup = read_backup(file)
        doc = describe(backup, decode_state(backup))
    except BadBackup as exc:
        fail(f"corrupt snapshot file: {exc}", EXIT_ANSWERED)
    except StorageError as exc:
        fail(str(exc), EXIT_ANSWERED)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for key in ("cluster_id", "index", "term", "node", "version", "voters", "learners"):
        value = doc[key]
        click.echo(f"{key + ':':<12} {', '.join(value) if isinstance(value, list) else value}")
    click.echo(f"{'size:':<12} {doc['data_bytes']} bytes of data, file {doc['file_bytes']} bytes")
    click.echo(f"{'sha256:':<12} {doc['sha256']} (ok)")
    objects = ", ".join(f"{n} {k}" for k, n in doc["objects"].items())
    click.echo(f"{'objects:':<12} {objects}")


def _member_list(text: str, what: str) -> dict[str, str]:
    members: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        node_id, sep, addr = item.partition("=")
        node_id, addr = node_id.strip(), addr.strip()
        if not sep or not ID_RE.fullmatch(node_id):
            fail(f"{what}: {item!r} is not 'id=host:port'", EXIT_USAGE)
        try:
            split_host_port(addr)
        except ValueError as exc:
            fail(f"{what}: {node_id}: {exc}", EXIT_USAGE)
        if node_id in members:
            fail(f"{what}: {node_id} is listed twice", EXIT_USAGE)
        members[node_id] = addr
    return members


@snapshot.command("restore")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--data-dir", required=True, type=click.Path(file_okay=False), help="A new, empty data dir."
)
@click.option("--node-id", required=True, help="This member's id (one of --initial-cluster).")
@click.option(
    "--initial-cluster",
    required=True,
    help="Every member of the new cluster: id=raft_host:port,... (the same on every member).",
)
@click.option(
    "--initial-cluster-api",
    default=None,
    help="Their API addresses: id=host:port,... (what nodes redirect and forward to).",
)
@click.option(
    "--cluster-id",
    default=None,
    help="The new cluster's id (default: derived from --initial-cluster-token, the file's "
    "sha256 and the member list, the same on every member).",
)
@click.option(
    "--initial-cluster-token",
    default=None,
    envvar="UNIVRS_INITIAL_CLUSTER_TOKEN",
    help="A value unique to the new cluster, the same on every member (needed for several "
    "members without --cluster-id; not a credential).",
)
@click.option(
    "--state-backend",
    type=click.Choice(["lmdb", "memory"]),
    default="lmdb",
    show_default=True,
    help="The node's [state] backend: with lmdb the data dir gets its state.lmdb built from "
    "the file, so the first start resumes from it (memory: none is built).",
)
def restore(
    file: str,
    data_dir: str,
    node_id: str,
    initial_cluster: str,
    initial_cluster_api: str | None,
    cluster_id: str | None,
    initial_cluster_token: str | None,
    state_backend: str,
) -> None:
    """Build the data dir of one member of a NEW cluster from a snapshot file.

    Run it once per member, with the same FILE and --initial-cluster, then start each node on
    its data dir. The new cluster has a new cluster id, every member a new incarnation, and it
    serves exactly the saved state (client sessions included)."""
    from univrs.storage.backup import BadBackup, read_backup
    from univrs.storage.restore import Member, restore_data_dir

    raft = _member_list(initial_cluster, "--initial-cluster")
    apis = _member_list(initial_cluster_api, "--initial-cluster-api") if initial_cluster_api else {}
    unknown = sorted(set(apis) - set(raft))
    if unknown:
        fail(f"--initial-cluster-api: {unknown[0]} is not in --initial-cluster", EXIT_USAGE)
    if node_id not in raft:
        fail(f"--node-id {node_id} is not in --initial-cluster", EXIT_USAGE)
    if cluster_id is not None and not ID_RE.fullmatch(cluster_id):
        fail(f"--cluster-id {cluster_id!r}: letters, digits, '.', '_', '-'", EXIT_USAGE)
    addresses = list(raft.values()) + list(apis.values())
    taken = sorted({a for a in addresses if addresses.count(a) > 1})
    if taken:
        fail(f"address {taken[0]} is given to more than one member or listener", EXIT_USAGE)
    members = [Member(id=i, raft_addr=a, api_addr=apis.get(i)) for i, a in raft.items()]
    try:
        backup = read_backup(file)
        result = restore_data_dir(
            backup,
            data_dir,
            node_id=node_id,
            members=members,
            cluster_id=cluster_id,
            token=initial_cluster_token,
            state_backend=state_backend,
        )
    except BadBackup as exc:
        fail(f"corrupt snapshot file: {exc}", EXIT_ANSWERED)
    except StorageError as exc:
        fail(str(exc), EXIT_ANSWERED)
    click.echo(
        f"restored {node_id} into {result.data_dir}: cluster {result.cluster_id} (was "
        f"{backup.header.cluster_id}), snapshot at index {result.index} (term {result.term}), "
        f"voters {', '.join(result.voters)}, incarnation {result.incarnation}"
        + (", state.lmdb built" if result.state_backend == "lmdb" else "")
    )
