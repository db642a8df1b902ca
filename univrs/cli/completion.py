"""``univrs completion bash|zsh|fish``: print the shell completion script (click's own).

The script calls ``univrs`` back with ``_UNIVRS_COMPLETE`` set, so completions (commands,
options, choices such as ``--log-level``) always match the installed version. Set-up lines
for each shell are in docs/cli.md "Shell completion".
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

COMPLETE_VAR = "_UNIVRS_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL; e.g. in ~/.bashrc:
    eval "$(univrs completion bash)"."""
    cls = get_completion_class(shell)
    assert cls is not None, shell
    root = ctx.find_root().command
    click.echo(cls(root, {}, "univrs", COMPLETE_VAR).source())
