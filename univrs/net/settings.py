"""Tuning of the websocket transport: sizes, deadlines, queue bounds and redial backoff."""

from __future__ import annotations

import attrs

from univrs.net.backoff import BackoffPolicy

PEER_CONNECTIONS_PER_ADDRESS = 128
"""Room on the raft listener, beyond the fast protocol's per-address bound, for one host's raft
and probe connections: a peer holds one inbound connection and, while it redials, a few
half-open attempts; unlisted ids hold at most ``MAX_UNLISTED_PEERS`` (64) in all."""


@attrs.frozen(kw_only=True)
class TransportSettings:
    """Every deadline is in seconds and applies to one operation.

    A paused peer (SIGSTOP) accepts TCP connections in its kernel but never answers, so every
    connect, websocket handshake, hello and send has a deadline; a connection that misses one is
    abandoned and redialed with backoff.

    A link that is cut without a close (a partition that drops packets, one way or both) still
    accepts writes into the kernel's buffer, and after healing TCP delivers them only at its
    next, exponentially backed-off retransmission (seconds later). So the sender pings every
    ``ping_interval`` and abandons a connection whose pong is ``ping_timeout`` late (while no
    frame is being written: a write has its own ``send_timeout``), then redials at once. The
    redial must succeed soon after the network heals: an attempt whose SYN was lost waits for
    TCP's retransmissions (1 s, 3 s, ... after it started), while a fresh one gets through at
    once; so while an attempt is pending another starts every ``dial_interval``.
    """

    max_payload_size: int = 4 * 1024 * 1024  # largest frame sent or accepted, in bytes
    connect_timeout: float = 2.0  # outbound: TCP connect + websocket handshake; then the hello
    dial_interval: float = 0.25  # outbound: a fresh attempt this often while one is pending
    handshake_timeout: float = 5.0  # inbound: websocket handshake, then again for the hello
    send_timeout: float = 5.0  # writing one frame to a peer
    close_timeout: float = 1.0  # closing handshake before the socket is dropped
    max_control_queue: int = 256  # per peer: heartbeats, votes, responses, ...
    max_bulk_queue: int = 64  # per peer: AppendEntries / InstallSnapshot
    inbound_queue_frames: int = 4  # frames trio-websocket buffers per inbound connection
    backoff: BackoffPolicy = BackoffPolicy()
    stable_after: float = 2.0  # a connection that lasted this long resets the backoff
    ping_interval: float = 0.5  # outbound: a websocket ping this long after the last pong
    ping_timeout: float = 1.0  # outbound: no pong for this long (no write pending): dead link
    # inbound: open connections per remote host on the raft listener, every path (raft, probe,
    # fast client protocol) and every stage (TLS, websocket handshake, hello); one beyond is
    # closed at once. The node sets it to limits.max_connections_per_address (the fast
    # protocol's own bound) plus PEER_CONNECTIONS_PER_ADDRESS.
    max_connections_per_address: int = 384
    # inbound: a listed member's start record moves (one synced write) at most once per this
    # many seconds; a hello that would move it sooner is refused with 1013 (try again), and its
    # sender redials after its backoff. Plaintext hellos are anyone's (docs/security.md).
    start_record_interval: float = 1.0

    def __attrs_post_init__(self) -> None:
        if self.max_payload_size < 1024:
            raise ValueError(f"max_payload_size too small: {self.max_payload_size}")
        for name in (
            "connect_timeout",
            "handshake_timeout",
            "send_timeout",
            "close_timeout",
            "ping_interval",
            "ping_timeout",
            "dial_interval",
            "start_record_interval",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_control_queue < 1 or self.max_bulk_queue < 1 or self.inbound_queue_frames < 1:
            raise ValueError("queue bounds must be positive")
        if self.max_connections_per_address < 1:
            raise ValueError("max_connections_per_address must be positive")
