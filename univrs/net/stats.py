"""Per-peer transport statistics: mutable counters inside, frozen snapshots outside."""

from __future__ import annotations

import attrs

from univrs.raft.messages import NodeId


@attrs.frozen(kw_only=True)
class PeerStatistics:
    """A snapshot of one peer's counters, as returned by ``RaftTransport.statistics()``.

    ``connected`` is the outbound connection (ours to the peer); ``inbound`` counts the peer's
    connections to us that passed the hello. ``reconnects`` counts successful outbound
    connections after the first; ``connect_failures`` the attempts that did not get through the
    hello. ``dead_links`` counts outbound connections abandoned because a ping went unanswered
    (see ``TransportSettings.ping_timeout``). ``dropped`` counts outbound messages lost: queue
    overflow, oversized, unknown address, or in flight when a connection failed.
    """

    id: NodeId
    address: str | None
    connected: bool
    inbound: int
    reconnects: int
    connect_failures: int
    dead_links: int
    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    dropped: int
    queued: int
    frames_sent: int = 0  # websocket frames written (a batch frame carries several messages)


@attrs.frozen(kw_only=True)
class TransportStatistics:
    """A snapshot of the whole transport: one entry per known peer, sorted by id."""

    node_id: NodeId
    listen_port: int | None
    peers: tuple[PeerStatistics, ...]
    rejected_connections: int  # inbound connections closed for a bad hello, frame or path
    # Of those, refused for their certificate: a failed TLS handshake (none, or not signed by
    # the cluster CA), no node certificate on /raft or /probe, or a hello whose src is not the
    # node the certificate names.
    refused_certificates: int = 0
    # Why the node stopped taking part (a peer refused it as an older copy of its data dir,
    # univrs/raft/starts.py), or None.
    fenced: str | None = None

    def peer(self, node_id: NodeId) -> PeerStatistics:
        """The entry for ``node_id`` (KeyError if the transport never heard of it)."""
        for p in self.peers:
            if p.id == node_id:
                return p
        raise KeyError(node_id)


@attrs.define(eq=False)
class PeerCounters:
    """Mutable counters of one peer, updated by its link and its inbound connections."""

    connected: bool = False
    inbound: int = 0
    connects: int = 0
    connect_failures: int = 0
    dead_links: int = 0
    messages_sent: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    dropped: int = 0

    def snapshot(self, node_id: NodeId, address: str | None, queued: int) -> PeerStatistics:
        return PeerStatistics(
            id=node_id,
            address=address,
            connected=self.connected,
            inbound=self.inbound,
            reconnects=max(0, self.connects - 1),
            connect_failures=self.connect_failures,
            dead_links=self.dead_links,
            messages_sent=self.messages_sent,
            frames_sent=self.frames_sent,
            bytes_sent=self.bytes_sent,
            messages_received=self.messages_received,
            bytes_received=self.bytes_received,
            dropped=self.dropped,
            queued=queued,
        )
