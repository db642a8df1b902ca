"""What the API layer may use of a running node (``NodeHandle``).

The server (``univrs.server.node.Node``) assembles a node and hands itself to the API as a
``NodeHandle``: the API depends on this narrow interface, never on the server package, so the
layers stay one-way (docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from univrs.config import NodeConfig
    from univrs.net.transport import RaftTransport
    from univrs.raft.ready import Status
    from univrs.runtime.driver import RaftRuntime
    from univrs.runtime.liveness import Liveness
    from univrs.runtime.metrics import NodeMetrics
    from univrs.sm.store import StateStore
    from univrs.storage import LogStore


class NodeHandle(Protocol):
    """A running node as the API sees it: its parts (read them, do not replace them), its
    status, and the few actions only a whole node can take."""

    config: NodeConfig
    runtime: RaftRuntime
    liveness: Liveness  # the leader's heartbeat tracker (node.heartbeat notes heartbeats)
    transport: RaftTransport
    metrics: NodeMetrics
    storage: LogStore
    cluster_id: str
    raft_port: int | None
    api_port: int | None
    join: dict[str, Any]  # join progress, for `univrs cluster join` to show

    @property
    def node_id(self) -> str: ...

    @property
    def store(self) -> StateStore:
        """This node's StateStore (``univrs.api.store.RaftStateStore``)."""
        ...

    def status(self) -> Status: ...

    def describe(self) -> dict[str, Any]:
        """This node's own view as plain JSON-able data (/v1/node/status)."""
        ...

    async def answer_join(
        self, target: str, *, replace: bool, token: str | None = None, api_token: str | None = None
    ) -> tuple[int, dict[str, Any], Any | None]:
        """Answer a request to join ``target``'s cluster: (HTTP status, body, a join to start
        by restarting once the answer is sent, or None). Raises Conflict when refused.
        ``token``: the join token; ``api_token``: the caller's API token, carried to the
        cluster being joined."""
        ...

    def request_rejoin(self, info: Any) -> None:
        """Stop this (pristine) node and start it again empty, joining ``info``'s cluster."""
        ...
