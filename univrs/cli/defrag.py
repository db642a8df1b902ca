"""`univrs defrag`: give a stopped node's free LMDB pages back to the file system."""

from __future__ import annotations

import click

from univrs.cli.common import fail
from univrs.errors import StorageError


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@click.command()
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The data directory of a STOPPED node (raft.data_dir).",
)
def defrag(data_dir: str) -> None:
    """Compact a stopped node's data file: LMDB reuses its free pages but never shrinks the
    file, so after a burst of writes it may stay much larger than the data in it (compare the
    metrics univrs_storage_db_bytes and univrs_storage_db_in_use_bytes). Refused while a node
    runs on the data dir; a crash leaves the old or the new file, whole."""
    from univrs.storage import defrag as run_defrag

    try:
        result = run_defrag(data_dir)
    except StorageError as exc:
        fail(str(exc))
    click.echo(
        f"defragmented {result.data_file}: {_mib(result.before_bytes)} -> "
        f"{_mib(result.after_bytes)} (in use {_mib(result.in_use_bytes)}) "
        f"in {result.seconds:.2f}s"
    )
