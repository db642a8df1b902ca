"""The `univrs` command line, one package (entry point ``univrs.cli:main``).

``root`` holds the root group and adds every command group explicitly: ``node`` (the daemon),
``cluster`` (status, membership, snapshots, over the REST admin endpoints), the state commands
``workload|instance|nodeinfo|credits`` (``state``: derived from the operations table, shown by
``views``), ``chaos``, ``defrag`` and ``completion``. The groups share ``common`` (options,
the REST helper, the client, exit codes), ``views`` and ``session`` (the cached idempotency
session) and nothing else of each other; no command registers itself by being imported.

The command line is the top of the house: it may import every layer below it, and nothing in
univrs imports it (``univrs/__main__.py`` aside; tests/test_layers.py checks both).
"""

from univrs.cli.root import main

__all__ = ["main"]
