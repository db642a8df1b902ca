"""``univrs mcp``: serve the cluster to an AI agent over MCP on stdin/stdout.

The agent starts the command (an MCP "stdio" server); the tools and resources are those of
``univrs.mcp.server``, talking to the cluster at ``--api`` with ``univrs.client`` (TLS options
as for every state command, the token in ``$UNIVRS_TOKEN``). Logs go to stderr: stdout
carries the protocol only.
"""

from __future__ import annotations

import click
import trio

from univrs.cli.common import EXIT_UNAVAILABLE, api_option, cli_ssl, env_token, fail
from univrs.client.client import split_url
from univrs.errors import UnivrsError


@click.command("mcp")
@api_option
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per cluster call.")
def mcp(api: str, timeout: float) -> None:
    """Serve the cluster as an MCP server on stdin/stdout (tools: cluster status, workloads,
    instances, nodes, balances, transfers, recent events; resources: the cluster status and
    each workload)."""
    from univrs.client import open_client
    from univrs.mcp.server import build_server

    async def run() -> None:
        ssl_context = cli_ssl(split_url(api)[1])
        async with open_client(
            api=api, timeout=timeout, ssl_context=ssl_context, token=env_token()
        ) as client:
            await build_server(client).run_stdio_async()

    try:
        trio.run(run)
    except UnivrsError as exc:  # the cluster is unreachable: one line, not a traceback
        fail(f"{exc.code}: {exc.message}", EXIT_UNAVAILABLE)
