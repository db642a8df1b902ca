"""The websocket transport between nodes: raft frames on ``/raft``, other paths routed alongside.

Use ``RaftTransport`` (run it with ``open_transport`` or ``nursery.start(transport.run)``),
``send(msg)`` from the driver, read delivered messages from the inbox channel you pass in,
and call ``set_peer_addresses`` when the membership changes. See ``transport.py`` for the
theory of operation.
"""

from univrs.net.backoff import Backoff, BackoffPolicy
from univrs.net.hello import WIRE_VERSION, Hello
from univrs.net.peer import RAFT_PATH
from univrs.net.server import WebSocketRouter
from univrs.net.settings import TransportSettings
from univrs.net.stats import PeerStatistics, TransportStatistics
from univrs.net.transport import RaftTransport, open_transport

__all__ = [
    "RAFT_PATH",
    "WIRE_VERSION",
    "Backoff",
    "BackoffPolicy",
    "Hello",
    "PeerStatistics",
    "RaftTransport",
    "TransportSettings",
    "TransportStatistics",
    "WebSocketRouter",
    "open_transport",
]
