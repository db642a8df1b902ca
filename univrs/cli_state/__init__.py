"""The state CLI: ``univrs workload|instance|nodeinfo|credits ...`` on top of the Python client.

Every command takes ``--api`` (or ``$UNIVRS_API``: any node's REST address, or several,
comma-separated; the client discovers the cluster from it and talks the fast protocol to the
leader) and ``--json`` (one JSON document on stdout, for scripts). Human output is a table or
a short summary. Errors are one line on stderr, ``error: <code>: <message>``, with exit code 1
for an error the cluster answered (not found, conflict, invalid argument), 2 for bad usage and
3 when the cluster cannot be reached or has no leader.

``univrs node`` is the daemon, so registered machines are ``univrs nodeinfo``.
"""

from univrs.cli_state import credits, instance, nodeinfo, workload

__all__ = ["credits", "instance", "nodeinfo", "workload"]
