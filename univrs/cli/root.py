"""The root of the `univrs` command line: every command group, added explicitly."""

from __future__ import annotations

import click

from univrs import __version__
from univrs.cli import (
    certs,
    chaos,
    cluster,
    completion,
    defrag,
    mcp,
    node,
    recover,
    scrub,
    snapshot,
    state,
    watch,
)


@click.group()
@click.version_option(__version__, prog_name="univrs")
def main() -> None:
    """univrs: replicated, durable cluster state for the Univrs orchestrator."""


main.add_command(node.node)
main.add_command(cluster.cluster)
for _group in state.groups():  # workload, instance, nodeinfo, credits, token
    main.add_command(_group)
main.add_command(watch.watch)
main.add_command(mcp.mcp)
main.add_command(chaos.chaos)
main.add_command(defrag.defrag)
main.add_command(scrub.state_scrub)
main.add_command(snapshot.snapshot)
main.add_command(recover.recover)
main.add_command(certs.certs)
main.add_command(completion.completion)
