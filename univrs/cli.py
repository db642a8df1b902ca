"""The `univrs` command line: the node daemon, cluster operations and the state's CLI."""

from __future__ import annotations

import click

from univrs import __version__


@click.group()
@click.version_option(__version__, prog_name="univrs")
def main() -> None:
    """univrs: replicated, durable cluster state for the Univrs orchestrator."""


@main.group()
def node() -> None:
    """Run a univrs node."""


@node.command("start")
def node_start() -> None:
    """Start a node (the runtime arrives with the node issue; this prints help for now)."""
    click.echo(click.get_current_context().get_help())


if __name__ == "__main__":
    main()
