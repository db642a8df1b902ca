"""A Trio TCP fault proxy for one ordered peer link (node i dials node j through it).

Theory of operation. A raft peer link carries messages in one direction: node i dials node j
and sends; j answers on its *own* link to i. So one proxy per ordered pair (i -> j), installed
with i's ``[raft.dial]`` override, controls exactly the traffic from i to j, and faults can be
one-way. The proxy listens on loopback, and for each accepted connection dials the target and
pumps bytes both ways (the back direction carries only the websocket handshake, pongs and
closes).

``LinkPolicy`` says what happens to the bytes; ``set_policy`` swaps it at any time:

* ``partitioned``: nothing moves. Pumps stop reading (so the sender's kernel buffer fills and
  its writes stall, as over a real partition where TCP retransmits into the void), and new
  connections are accepted but not dialed onward until the partition heals. Stalled data is
  delivered in order after healing unless the sender gave up on the connection first (the
  transport has a send deadline): like TCP, never corrupted.
* ``retransmit`` (with ``partitioned``): healing is timed as TCP would see it over a real
  network that drops packets. A direction whose data stalled at time S delivers it only at a
  retransmission instant: S + RTO, S + 3 RTO, S + 7 RTO, ... (RTO ``DATA_RTO`` = 0.2 s, Linux's
  minimum, doubling up to ``MAX_RTO``), the first at which the link passes; a connection
  accepted during the partition at time A is dialed onward at A + 1 s, A + 3 s, ... (the SYN's
  initial RTO is 1 s). So a link healed after a 4 s partition stays silent up to ~2.2 s more,
  unless the sender gives up and reconnects. Without it, everything moves at once on healing.
* ``delay`` (+ uniform ``jitter``): each chunk is delivered that long after it was read, in
  order (a chunk never overtakes an earlier one).
* ``loss``: TCP does not lose bytes, it retransmits: so a "dropped packet" is modelled as a
  stall of ``loss_stall`` seconds of that direction (a retransmission timeout) with probability
  ``loss`` per chunk.
* ``reset_rate``: per chunk probability that the connection is reset (RST) instead.

``reset_connections()`` resets every current connection at once. All randomness comes from the
``random.Random`` given to the proxy, so a seeded run injects the same faults for the same
traffic.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import socket
import struct
from collections.abc import Iterator

import attrs
import trio

from univrs.net.address import split_host_port

log = logging.getLogger("univrs.chaos.proxy")

CHUNK = 64 * 1024
QUEUE_CHUNKS = 256  # chunks read but not yet delivered, per direction (delay pipeline)
CONNECT_TIMEOUT = 5.0
DATA_RTO = 0.2  # seconds: the first retransmission timeout of data (Linux's TCP_RTO_MIN)
SYN_RTO = 1.0  # seconds: the first retransmission timeout of a SYN (RFC 6298)
MAX_RTO = 120.0  # seconds: TCP_RTO_MAX


def retransmissions(since: float, first_rto: float) -> Iterator[float]:
    """TCP's retransmission instants of a segment first sent at ``since``: the timeout doubles
    after each one (capped at ``MAX_RTO``)."""
    due, rto = since, first_rto
    while True:
        due += rto
        yield due
        rto = min(rto * 2, MAX_RTO)


@attrs.frozen(kw_only=True)
class LinkPolicy:
    """What the proxy does to the traffic of its link (see the module docstring)."""

    partitioned: bool = False
    delay: float = 0.0  # seconds added to every chunk
    jitter: float = 0.0  # plus a uniform 0..jitter seconds
    loss: float = 0.0  # per chunk probability of a retransmission stall
    loss_stall: float = 0.2  # seconds such a stall lasts
    reset_rate: float = 0.0  # per chunk probability of a connection reset
    retransmit: bool = False  # a partition heals at TCP's retransmission instants

    def __attrs_post_init__(self) -> None:
        for name in ("delay", "jitter", "loss_stall"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        for name in ("loss", "reset_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} is a probability (0..1), not {value!r}")

    @property
    def clean(self) -> bool:
        return self == PASS


PASS = LinkPolicy()
PARTITION = LinkPolicy(partitioned=True)


@attrs.frozen(kw_only=True)
class ProxyStatistics:
    """Counters of one proxy since it started."""

    connections: int  # accepted
    active: int  # open now
    chunks: int  # forwarded, both directions
    bytes: int
    resets: int  # connections reset on purpose
    stalls: int  # loss stalls injected
    held: int  # connections accepted during a partition (dialed onward only after it)


class _Reset(Exception):
    """Raised inside a pump to reset its connection."""


@attrs.define(eq=False)
class FaultProxy:
    """The proxy of one link ``src -> dst``: listens on ``listen`` and forwards to ``target``."""

    src: str
    dst: str
    target: str  # host:port of dst's raft listener
    rng: random.Random
    listen_host: str = "127.0.0.1"
    port: int | None = None  # bound port, once running (0 = any, the default)
    policy: LinkPolicy = PASS
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _conns: set[trio.CancelScope] = attrs.field(factory=set)
    _to_reset: set[trio.CancelScope] = attrs.field(factory=set)
    _connections: int = 0
    _chunks: int = 0
    _bytes: int = 0
    _resets: int = 0
    _stalls: int = 0
    _held: int = 0

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"

    @property
    def address(self) -> str:
        assert self.port is not None, "the proxy is not running"
        return f"{self.listen_host}:{self.port}"

    def set_policy(self, policy: LinkPolicy) -> None:
        """Apply ``policy`` now (wakes stalled pumps and held connections when it heals)."""
        self.policy = policy
        self._changed.set()
        self._changed = trio.Event()

    def reset_connections(self) -> int:
        """Reset every open connection through this link; returns how many."""
        n = len(self._conns)
        for scope in list(self._conns):
            self._to_reset.add(scope)
            scope.cancel()
        return n

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(
            connections=self._connections,
            active=len(self._conns),
            chunks=self._chunks,
            bytes=self._bytes,
            resets=self._resets,
            stalls=self._stalls,
            held=self._held,
        )

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started`` gets the listen address."""
        listeners = await trio.open_tcp_listeners(self.port or 0, host=self.listen_host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.address)

    async def _wait_open(self) -> None:
        while self.policy.partitioned:
            await self._changed.wait()

    async def _wait_to_deliver(self, first_rto: float) -> None:
        """Until something stalled since now may cross: at once if the link passes; else when
        the partition heals or, under ``retransmit``, at the first retransmission instant at
        which the link passes (see the module docstring)."""
        if not self.policy.partitioned:
            return
        if not self.policy.retransmit:
            await self._wait_open()
            return
        for due in retransmissions(trio.current_time(), first_rto):
            await trio.sleep_until(due)
            if not self.policy.partitioned:
                return

    async def _handle(self, client: trio.SocketStream) -> None:
        self._connections += 1
        scope = trio.CancelScope()
        self._conns.add(scope)
        upstream: trio.SocketStream | None = None
        try:
            with scope:
                if self.policy.partitioned:
                    self._held += 1
                await self._wait_to_deliver(SYN_RTO)
                host, port = split_host_port(self.target)
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        upstream = await trio.open_tcp_stream(host, port)
                except (OSError, trio.TooSlowError):
                    return  # target down: the dialer sees its connection closed
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
                except* _Reset:
                    self._to_reset.add(scope)
        finally:
            self._conns.discard(scope)
            reset = scope in self._to_reset
            self._to_reset.discard(scope)
            if reset:
                self._resets += 1
            for stream in (client, upstream):
                if stream is not None:
                    await _close(stream, reset=reset)

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, both: trio.CancelScope
    ) -> None:
        """Copy src to dst under the policy. Reading and delivering are two tasks joined by a
        bounded channel, so a delayed chunk does not stop later ones from being read."""
        send, recv = trio.open_memory_channel[tuple[float, bytes]](QUEUE_CHUNKS)

        async def reader() -> None:
            last_due = 0.0
            async with send:
                while True:
                    await self._wait_open()
                    try:
                        data = await src.receive_some(CHUNK)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        return
                    p = self.policy
                    if p.reset_rate and self.rng.random() < p.reset_rate:
                        raise _Reset
                    due = trio.current_time() + p.delay
                    if p.jitter:
                        due += self.rng.uniform(0, p.jitter)
                    if p.loss and self.rng.random() < p.loss:
                        due += p.loss_stall
                        self._stalls += 1
                    last_due = max(last_due, due)  # in order: never overtake a chunk
                    try:
                        await send.send((last_due, data))
                    except trio.BrokenResourceError:
                        return  # the writer is gone (its side broke)

        async def writer() -> None:
            async with recv:
                async for due, data in recv:
                    await trio.sleep_until(due)
                    await self._wait_to_deliver(DATA_RTO)
                    try:
                        await dst.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        both.cancel()
                        return
                    self._chunks += 1
                    self._bytes += len(data)
            # src closed: pass the end on, then the whole connection is done
            both.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(writer)


async def _close(stream: trio.SocketStream, *, reset: bool) -> None:
    if reset:
        # SO_LINGER with a zero timeout makes close() send an RST instead of a FIN.
        with contextlib.suppress(OSError):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with trio.CancelScope(shield=True):
        await stream.aclose()
