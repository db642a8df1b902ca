"""Whether every node of a fresh local cluster started as itself (``wait_members_up``).

``LocalCluster.with_free_ports`` picks ports that were free a moment ago, then the nodes bind
them a second or more later (their imports). On a machine where other work starts clusters
too, another process can bind one of them in between: the node then exits at once ("api.addr
... is not available: Address already in use"), the other two elect a leader, and whoever
holds the port answers for the missing node. Found in session 19: a bench run's "n1" exited
before its window while a node of another cluster answered its metrics (a 182 ms GC pause
and no log write in the window attributed to n1). ``wait_members_up`` waits until every
member answers its ``/v1/node/status`` with its own id and this cluster's fingerprint, and
raises ``NodeExited`` (exit code and the log's last line) for one that exits first;
``NodeExited.port_taken`` says whether starting again on other ports is the remedy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from univrs.server.removal import cluster_fingerprint

if TYPE_CHECKING:
    from univrs.tools.devcluster import LocalCluster, NodeProc

__all__ = ["NodeExited", "last_log_line", "wait_members_up"]

PORT_TAKEN = "is not available"  # univrs/server/node.py: a listening address already bound


class NodeExited(RuntimeError):
    """A node of a starting local cluster exited (``code``; ``line``: its log's last line)."""

    def __init__(self, node_id: str, code: int | None, line: str) -> None:
        super().__init__(f"node {node_id} exited at start (code {code}): {line or '(no log)'}")
        self.node_id = node_id
        self.code = code
        self.line = line

    @property
    def port_taken(self) -> bool:
        """It could not bind one of its addresses: another process holds that port."""
        return PORT_TAKEN in self.line


def last_log_line(node: NodeProc) -> str:
    """The last non-empty line of a node's log ("" when it has none)."""
    try:
        lines = node.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _up_as_itself(node: NodeProc, fingerprint: str) -> bool:
    doc = node.status()
    return doc is not None and doc.get("id") == node.node_id and doc.get("cluster") == fingerprint


def wait_members_up(cluster: LocalCluster, timeout: float = 60.0) -> None:
    """Wait until every member (not the spares) of a bootstrapped ``cluster`` answers its
    status as itself; ``NodeExited`` when one exits first, TimeoutError after ``timeout``."""
    from univrs.tools.devcluster import wait_for

    fingerprint = cluster_fingerprint(cluster.cluster_id)
    members = [n for n in cluster.nodes if n.node_id not in cluster.spares]
    waiting = list(members)

    def probe() -> bool | None:
        for node in list(waiting):
            if not node.running():
                code = node.proc.poll() if node.proc is not None else None
                raise NodeExited(node.node_id, code, last_log_line(node))
            if _up_as_itself(node, fingerprint):
                waiting.remove(node)
        return not waiting or None

    wait_for(probe, timeout, "every node up as itself")
