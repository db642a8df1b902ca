"""`univrs state-scrub`: check a stopped node's state.lmdb against its snapshot and log."""

from __future__ import annotations

import json

import click

from univrs.cli.common import fail
from univrs.errors import StorageError


@click.command("state-scrub")
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The data directory of a STOPPED node (raft.data_dir) on the lmdb state backend.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def state_scrub(data_dir: str, as_json: bool) -> None:
    """Check a stopped node's persistent state (state.lmdb, which carries no checksums)
    against the stored snapshot and the log (which do): the snapshot restored in memory, the
    log's entries up to the state's applied index applied to it, and the two state digests
    compared. Exit 0: intact (or not comparable: the state is behind the snapshot and the
    next start replaces it); 1: damaged (move state.lmdb away: the next start rebuilds it);
    refused while a node runs on the data dir. Needs a second copy of the state in memory."""
    from univrs.server.state_scrub import scrub_state

    try:
        found = scrub_state(data_dir)
    except StorageError as exc:
        fail(str(exc))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "intact": found.intact,
                    "reason": found.reason,
                    "applied_index": found.applied_index,
                    "snapshot_index": found.snapshot_index,
                    "replayed": found.replayed,
                    "state_digest": found.state_digest,
                    "expected_digest": found.expected_digest,
                    "seconds": found.seconds,
                }
            )
        )
    else:
        word = {True: "intact", False: "DAMAGED", None: "not compared"}[found.intact]
        click.echo(
            f"state.lmdb {word} at applied index {found.applied_index} (snapshot at "
            f"{found.snapshot_index}, {found.replayed} entries replayed, "
            f"{found.seconds:.2f}s): {found.reason}"
        )
    if found.intact is False:
        if not as_json:
            click.echo(
                f"move {data_dir}/state.lmdb away (keep it for analysis): the next start "
                "rebuilds it from the stored snapshot and the log",
                err=True,
            )
        raise SystemExit(1)
