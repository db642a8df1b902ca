"""Assembling a whole node: configuration, storage, transport, runtime and API (``run_node``),
and what only a whole node does: bootstrap checks (incarnations), joining another cluster,
learning that it was removed. The layer above the API and client, below the CLI."""
