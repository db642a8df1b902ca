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

``start_fresh`` does that for every harness that starts a fresh cluster on picked ports
(``LocalCluster.start_all``: the process tests, the chaos runner, the benches): up to
``START_ATTEMPTS`` starts, the failed attempt's folder kept aside as ``FOLDER-attemptN``. Where
the ports cannot change (a node restarted on its ports, ``scripts/cluster``'s base port),
``raise_if_port_taken`` turns the wait for a node that already exited into a ``NodeExited``
naming the taken address instead of a timeout.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from univrs.server.removal import cluster_fingerprint
from univrs.tools.polling import wait_for

__all__ = [
    "START_ATTEMPTS",
    "NodeExited",
    "last_line_of",
    "last_log_line",
    "raise_if_port_taken",
    "start_fresh",
    "wait_members_up",
]

PORT_TAKEN = "is not available"  # univrs/server/node.py: a listening address already bound
TAIL_BYTES = 16384  # of a node's log: its last line
START_ATTEMPTS = 3  # starts of a fresh cluster on picked ports, each on other ports


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


class NodeProc(Protocol):
    """What this module uses of a ``devcluster.NodeProc`` (devcluster imports this module)."""

    @property
    def node_id(self) -> str: ...
    @property
    def proc(self) -> subprocess.Popen[bytes] | None: ...
    @property
    def log_path(self) -> pathlib.Path: ...
    def running(self) -> bool: ...
    def status(self) -> dict[str, Any] | None: ...


class LocalCluster(Protocol):
    """What this module uses of a ``devcluster.LocalCluster``."""

    @property
    def folder(self) -> pathlib.Path: ...
    @property
    def nodes(self) -> Sequence[NodeProc]: ...
    @property
    def spares(self) -> frozenset[str]: ...
    @property
    def bootstrap(self) -> bool: ...
    @property
    def cluster_id(self) -> str: ...
    def start_members(self, **kw: Any) -> None: ...
    def stop_all(self) -> None: ...
    def repick_ports(self) -> None: ...


def last_log_line(node: NodeProc) -> str:
    """The last non-empty line of a node's log ("" when it has none); reads only its tail (the
    waits of ``LocalCluster`` ask this of every exited node on each poll)."""
    return last_line_of(node.log_path)


def last_line_of(path: pathlib.Path) -> str:
    """The last non-empty line of a log file ("" when it has none or cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - TAIL_BYTES))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _up_as_itself(node: NodeProc, fingerprint: str | None) -> bool:
    """``node`` answers as itself (and, with a ``fingerprint``, as a member of that cluster)."""
    doc = node.status()
    if doc is None or doc.get("id") != node.node_id:
        return False
    return fingerprint is None or doc.get("cluster") == fingerprint


def wait_members_up(cluster: LocalCluster, timeout: float = 60.0) -> None:
    """Wait until every member (not the spares) of a bootstrapped ``cluster`` answers its
    status as itself; ``NodeExited`` when one exits first, TimeoutError after ``timeout``."""
    fingerprint = cluster_fingerprint(cluster.cluster_id) if cluster.bootstrap else None
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


def raise_if_port_taken(nodes: Iterable[NodeProc]) -> None:
    """``NodeExited`` for a node of ``nodes`` that we started and that exited because another
    process holds one of its ports (its log's last line names the address); nothing else."""
    for node in nodes:
        code = node.proc.poll() if node.proc is not None else None
        if code is not None and PORT_TAKEN in (line := last_log_line(node)):
            raise NodeExited(node.node_id, code, line)


def start_fresh(
    cluster: LocalCluster,
    attempts: int = START_ATTEMPTS,
    timeout: float = 60.0,
    **kw: Any,
) -> None:
    """Start a fresh cluster on picked ports (``kw``: ``LocalCluster.start``'s) and wait until
    every member is up as itself. A node that exited because its port was taken: stop every
    node, keep the attempt's folder as ``FOLDER-attemptN``, pick other ports and start again.
    ``NodeExited`` for another exit, the other nodes left running; ``NodeExited`` for a port
    taken on the last attempt, or TimeoutError as ``wait_members_up``, every node stopped."""
    folder = cluster.folder
    for attempt in range(1, attempts + 1):
        cluster.start_members(**kw)
        try:
            wait_members_up(cluster, timeout)
            return
        except NodeExited as exc:
            if not exc.port_taken:
                raise  # the other nodes run on: the caller decides (a test may expect it)
            cluster.stop_all()
            if attempt == attempts:
                raise
            kept = folder.with_name(f"{folder.name}-attempt{attempt}")
            shutil.rmtree(kept, ignore_errors=True)
            folder.rename(kept)  # its files stay for a look; the next attempt starts afresh
            cluster.repick_ports()
            print(f"warning: {exc}; starting again on other ports ({kept})", file=sys.stderr)
        except BaseException:
            cluster.stop_all()
            raise
