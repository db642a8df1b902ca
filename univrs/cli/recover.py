"""``univrs recover``: turn a stopped survivor's data dir into a one-voter cluster after the
quorum was lost for good (etcd ``--force-new-cluster``, Consul ``peers.json``); see
``univrs/storage/recover.py`` and docs/operations.md "Quorum is lost"."""

from __future__ import annotations

import json
import re

import click

from univrs.cli.common import EXIT_ANSWERED, EXIT_USAGE, fail
from univrs.errors import StorageError

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a cluster id (config.md)


@click.command()
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The data directory of a STOPPED member that survived (raft.data_dir).",
)
@click.option(
    "--dry-run", is_flag=True, help="Only show the data dir's state (to choose the survivor)."
)
@click.option(
    "--cluster-id",
    default=None,
    help="The recovered cluster's new id (default: a new random one; never the old one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def recover(data_dir: str, dry_run: bool, cluster_id: str | None, as_json: bool) -> None:
    """Make a stopped member the only voter of its cluster, keeping its whole log.

    For a cluster that lost a majority of its voters for good. Every entry of this member's
    log is kept and becomes committed; a new configuration lists it alone, bound to a new
    incarnation, under a new cluster id, so the old members cannot come back with their old
    data (set raft.cluster_id to the new id where a config file names one). Then start the
    node and join new members to it (univrs cluster join). Run --dry-run on every survivor
    first and recover the one with the highest last term, then last index. Refused while a
    node runs on the data dir."""
    from univrs.storage.recover import force_new_cluster, inspect_data_dir

    try:
        if dry_run:
            summary = inspect_data_dir(data_dir)
            doc = summary.to_plain()
            if as_json:
                click.echo(json.dumps(doc, indent=2, sort_keys=True))
                return
            for key, value in doc.items():
                shown = ", ".join(value) if isinstance(value, list) else value
                click.echo(f"{key + ':':<15} {shown}")
            return
        if cluster_id is not None and not _ID_RE.fullmatch(cluster_id):
            fail(f"--cluster-id {cluster_id!r}: letters, digits, '.', '_', '-'", EXIT_USAGE)
        result = force_new_cluster(data_dir, cluster_id=cluster_id)
    except StorageError as exc:
        fail(str(exc), EXIT_ANSWERED)
    b = result.before
    if as_json:
        doc = {
            "before": b.to_plain(),
            "incarnation": result.incarnation,
            "cluster_id": result.cluster_id,
            "term": result.term,
            "config_index": result.config_index,
            "state": result.state,
        }
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(
        f"recovered {b.node_id} in {b.data_dir}: it is now the only voter of cluster "
        f"{result.cluster_id} (was: cluster {b.cluster_id}, voters {', '.join(b.voters)}"
        + (f"; learners {', '.join(b.learners)}" if b.learners else "")
        + ")"
    )
    click.echo(
        f"kept every entry up to {b.last_index} (term {b.last_term}; its commit index was "
        f"{b.commit}); new configuration at index {result.config_index}, term {result.term}"
    )
    click.echo(f"new incarnation {result.incarnation} (was {b.incarnation})")
    if result.state == "kept":
        click.echo("state.lmdb kept (restamped with the new cluster id): the start resumes from it")
    elif result.state != "none":
        click.echo(
            f"state.lmdb {result.state}; the next start rebuilds it from the snapshot and the log"
        )
    click.echo(
        f'if its config file sets raft.cluster_id, set it to "{result.cluster_id}"; '
        "old members with their old data are refused (another cluster id)"
    )
    click.echo(
        "next: start the node, then add members with `univrs cluster join <its api> --api "
        "<new node's api>`; wipe the data dirs of the old members before they join again"
    )
