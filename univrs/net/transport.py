"""The raft transport: CBOR frames over websockets between the nodes of one cluster.

Theory of operation.

* Inbound: a ``WebSocketRouter`` listens on the node's raft address and hands ``/raft``
  connections to ``_serve_raft``. The first frame must be a hello (see ``univrs.net.hello``) with
  our wire version, our cluster id and our node id as destination; every following frame is
  decoded into a ``Message`` whose ``src`` is the hello's sender and whose ``dst`` is us, and is
  delivered through the bounded ``inbox`` channel to the driver (the sole owner of the core).
  A bad hello, a malformed, text or oversized frame closes *that* connection with one WARNING
  line; the listener and every other connection carry on. A newer connection from the same
  peer replaces an older one (the peer restarted; the old one may be half-open forever).
* Outbound: one ``PeerLink`` per peer dials it, sends our hello, then pumps that peer's
  two-lane queue (control before bulk) into the connection. ``send`` only queues, so the driver
  never waits on the network.
* Addresses come from ``set_peer_addresses``, which the runtime calls again whenever the
  membership changes; a changed address redials at once, a removed peer's link stops.
* Incarnations (one id, one incarnation: see ``Membership.incarnations``). Our hello carries
  our data dir's incarnation and the one our configuration lists for the peer
  (``bound_incarnation``). A receiver refuses, with ``CLOSE_INCARNATION`` and one WARNING per
  peer and incarnation, a dialer whose incarnation differs from the one its configuration
  lists for that id, and a hello that expects another incarnation of itself; unbound members
  are accepted. A listing is only as fresh as its configuration: the hello also carries the
  index of the sender's newest configuration and whether it binds the sender to its own
  incarnation (``own_binding``), and the side whose configuration is older yields (a node
  that lagged behind a replacement must not refuse its new leader for ever). The dialer's
  link then stops sending (``PeerLink``). After a configuration change the runtime calls
  ``recheck_incarnations``: inbound connections from an incarnation the configuration no
  longer lists are closed, and links whose expectation changed (or that stopped) redial.
  The incarnations learned from accepted hellos (``peer_incarnations``) are what a leader
  records in the configuration. Every message delivered carries its connection's hello
  incarnation in ``Message.sender_incarnation`` (not on the wire; ``_attested``), also for
  a sender let in because it claims a binding newer than our listing (that claim is the
  sender's say-so): the core checks it again against the configuration it holds, which may
  have moved on, and hears a sender of another incarnation than it lists only as a leader
  while it follows no live leader (univrs/raft/senders.py). Without TLS none of this
  authenticates anyone: an incarnation travels in clear text (docs/security.md).
* One exception to that map: the peer that sends us entries. The sender of the newest
  (highest-term, up to the core's ``MAX_TERM``) AppendEntries, Heartbeat or InstallSnapshot
  keeps its link even when the map does not list it, at the address the map last gave it
  or, failing that, the one it advertised in its hello (``Hello.addr``, with this node's dial
  overrides applied). A node whose log is still old (a brand-new member catching up from
  index 1 adopts the bootstrap configuration first) must still be able to answer its leader;
  without this rule it forgot the leader's address and never caught up. An unlisted source
  is dialed only once we send it something: the core answers only senders it accepted, so a
  refused stranger's advertised address is never dialed.
* Unlisted peers are bounded: per-peer state for ids the map does not list is kept for at
  most ``MAX_UNLISTED_PEERS`` of them (oldest forgotten first), and at most that many
  connections from unlisted ids are open at once. A connection closed for breaking the
  protocol is logged at WARNING once per remote host, sender (or "unlisted") and close code.
* TLS (``tls`` set: ``univrs.net.tls``). The listener accepts only TLS; ``/raft`` demands a
  node certificate signed by the cluster CA (refused with HTTP 403 at the websocket
  handshake otherwise) and a hello whose ``src`` is the node id that certificate names
  (closed with a policy violation before a single message is read otherwise). A dialer
  checks the other way round: the peer's certificate must name the node it dials, or the
  connection is dropped before the hello is sent. The certificate binds the node id; the
  hello binds the incarnation (above).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from univrs.errors import ProtocolError
from univrs.net.address import join_host_port, split_host_port
from univrs.net.backoff import Backoff
from univrs.net.hello import WIRE_VERSION, Hello, decode_hello, encode_hello
from univrs.net.peer import (
    CLOSE_INCARNATION,
    RAFT_PATH,
    Connector,
    Encoder,
    PeerLink,
    describe_close,
)
from univrs.net.queue import PeerQueue
from univrs.net.server import RouteHandler, WebSocketRouter
from univrs.net.settings import TransportSettings
from univrs.net.stats import PeerCounters, TransportStatistics
from univrs.net.tls import TlsContexts, current_peer, identity_of
from univrs.raft import MAX_TERM
from univrs.raft.messages import AppendEntries, Heartbeat, InstallSnapshot, Message, NodeId

log = logging.getLogger("univrs.net")

# Websocket close codes (RFC 6455 7.4.1).
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
_MAX_CLOSE_REASON = 120  # a close frame's reason must fit in 123 bytes of UTF-8
_FROM_LEADER = (AppendEntries, Heartbeat, InstallSnapshot)  # what only a leader sends


class Decoder(Protocol):
    """Turns frame bytes into a Raft message (``univrs.codec.decode_message``).

    Raises ``ProtocolError`` on anything malformed or larger than ``max_size``.
    """

    def __call__(self, data: bytes, *, max_size: int) -> Message: ...


def _default_encoder() -> Encoder:
    from univrs.codec import encode_message

    return encode_message


def _default_decoder() -> Decoder:
    from univrs.codec import decode_message

    return decode_message


def _describe_endpoint(endpoint: object) -> str:
    address, port = getattr(endpoint, "address", None), getattr(endpoint, "port", None)
    if address is None or port is None:
        return str(endpoint)
    return join_host_port(str(address), int(port))


def _short(text: str) -> str:
    raw = text.encode()[:_MAX_CLOSE_REASON]
    return raw.decode(errors="ignore")


MAX_UNLISTED_PEERS = 64
"""How many node ids the peer map does not list the transport keeps counters, incarnations and
advertised addresses for (joiners, removed members, made-up ids): the oldest is forgotten
first, so hellos under ever new made-up ids cannot grow the node without bound."""

NO_INCARNATION = ""
"""What a connection attests for a sender whose hello named no incarnation while our
configuration binds its id to one: no incarnation matches it."""


def unbound(_node_id: NodeId) -> str | None:
    """The default binding: no member is bound to an incarnation."""
    return None


def no_binding() -> tuple[int, bool]:
    """The default view of our own configuration: index 0, not bound to our incarnation."""
    return (0, False)


_REPLACE_HINT = (
    "a data dir that lost its state is a new incarnation, not the old member; replace it "
    "with `univrs cluster join <member-api> --replace` (see the README)"
)


@attrs.define(eq=False)
class _Inbound:
    """One accepted inbound connection: who sent the hello, and why we close it (if we do)."""

    scope: trio.CancelScope
    incarnation: str | None
    hello: Hello
    refusal: str | None = None  # set by recheck_incarnations before it cancels ``scope``


@attrs.define(eq=False)
class RaftTransport:
    """Sends and receives Raft messages for one node. Run it with ``run`` or ``open_transport``.

    ``listen_addr`` is ``host:port`` to bind (port 0 picks a free one; see ``listen_port``), or
    None not to listen at all (tests feed connections to ``router.handle_connection``).
    ``peers`` is the initial map of node ids to raft addresses (this node's own entry is
    ignored); later changes go through ``set_peer_addresses`` and show in ``peer_addresses()``.
    ``advertise_addr`` is the raft address our hellos advertise (None: none); ``dial_overrides``
    replace advertised addresses of those peers (as ``NodeConfig.dial`` does for the map).
    ``encode``/``decode`` default to ``univrs.codec``; ``connector`` to ``trio.open_tcp_stream``.
    ``incarnation`` is this node's (its data dir's); ``bound_incarnation(peer)`` the one the
    configuration in effect lists for ``peer`` (None: unbound, or not a member).
    """

    node_id: NodeId
    cluster_id: str
    inbox: trio.abc.SendChannel[Message]
    rng: random.Random
    listen_addr: str | None = "127.0.0.1:0"
    peers: Mapping[NodeId, str] = attrs.field(factory=dict)
    settings: TransportSettings = TransportSettings()
    encode: Encoder = attrs.field(factory=_default_encoder)
    decode: Decoder = attrs.field(factory=_default_decoder)
    connector: Connector = trio.open_tcp_stream
    advertise_addr: str | None = None
    dial_overrides: Mapping[NodeId, str] = attrs.field(factory=dict)
    incarnation: str | None = None
    bound_incarnation: Callable[[NodeId], str | None] = unbound
    own_binding: Callable[[], tuple[int, bool]] = no_binding
    tls: TlsContexts | None = None  # None: plaintext links
    # Called with (peer, seconds) for each answered keepalive ping (the RTT histogram); may be
    # set after the links exist.
    on_rtt: Callable[[NodeId, float], None] | None = None
    router: WebSocketRouter = attrs.field(init=False)
    _configured: dict[NodeId, str] = attrs.field(factory=dict, init=False)  # the runtime's map
    _advertised: dict[NodeId, str] = attrs.field(factory=dict, init=False)  # from their hellos
    # The peer that sent the newest (highest-term) AppendEntries/Heartbeat/InstallSnapshot, and
    # that term: it keeps its link whatever the map says (see the module docstring).
    _source: NodeId | None = attrs.field(default=None, init=False)
    _source_term: int = attrs.field(default=-1, init=False)
    _kept: tuple[NodeId, str] | None = attrs.field(default=None, init=False)  # source, unlisted
    # The entry source once we sent it something (the core accepted it): only then is an
    # unlisted source dialed.
    _answered: NodeId | None = attrs.field(default=None, init=False)
    _links: dict[NodeId, PeerLink] = attrs.field(factory=dict, init=False)
    _counters: dict[NodeId, PeerCounters] = attrs.field(factory=dict, init=False)
    _inbound: dict[NodeId, _Inbound] = attrs.field(factory=dict, init=False)
    # Incarnations named by the hellos we accepted, newest per peer.
    _learned: dict[NodeId, str] = attrs.field(factory=dict, init=False)
    # (peer, its incarnation, our reason) already logged at WARNING: one line per incarnation.
    _warned_refusals: set[tuple[str, str | None, str]] = attrs.field(factory=set, init=False)
    _warned_unknown: set[NodeId] = attrs.field(factory=set, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _listen_port: int | None = attrs.field(default=None, init=False)
    _rejected: int = attrs.field(default=0, init=False)
    _refused_certificates: int = attrs.field(default=0, init=False)
    _warned_certificates: set[tuple[str, str, str]] = attrs.field(factory=set, init=False)
    # (remote host, sender or "unlisted", close code) already logged at WARNING by _refuse.
    _warned_protocol: set[tuple[str, str, int]] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        if self.listen_addr is not None:  # fail early on a bad address
            split_host_port(self.listen_addr, allow_port_zero=True)
        self.router = WebSocketRouter(
            max_message_size=self.settings.max_payload_size,
            handshake_timeout=self.settings.handshake_timeout,
            message_queue_size=self.settings.inbound_queue_frames,
            tls=self.tls,
            max_connections_per_address=self.settings.max_connections_per_address,
        )
        self.router.add_route(RAFT_PATH, self._serve_raft)
        self.set_peer_addresses(self.peers)

    # ---------------------------------------------------------------- public API

    @property
    def listen_port(self) -> int | None:
        """The bound port once ``run`` has started listening, else None."""
        return self._listen_port

    def add_route(self, path: str, handler: RouteHandler) -> None:
        """Serve another websocket path (e.g. ``/client``) on the raft listener."""
        self.router.add_route(path, handler)

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.dst``; never blocks. Undeliverable messages are dropped."""
        link = self._links.get(msg.dst)
        if link is None and msg.dst == self._source and self._answered != msg.dst:
            # The first answer to an unlisted entry source: dial it now. Not on receipt: the
            # core answers only senders it accepted, so a refused stranger's hello address is
            # never dialed (red team: every made-up peer's heartbeat made the node dial it).
            self._answered = msg.dst
            self._sync_links()
            link = self._links.get(msg.dst)
        if link is None:
            self._counter(msg.dst).dropped += 1
            if msg.dst not in self._warned_unknown:
                self._warned_unknown.add(msg.dst)
                log.warning("dropping messages to %s: no address known for it", msg.dst)
            return
        link.enqueue(msg)

    def set_peer_addresses(self, addresses: Mapping[NodeId, str]) -> None:
        """Make ``addresses`` the complete peer map (own id ignored). Raises ValueError on a bad
        address, before changing anything."""
        wanted = {nid: addr for nid, addr in addresses.items() if nid != self.node_id}
        for nid, addr in wanted.items():
            try:
                split_host_port(addr, allow_port_zero=True)
            except ValueError as exc:
                raise ValueError(f"address of {nid}: {exc}") from None
        self._configured = wanted
        self._sync_links()

    @property
    def entry_source(self) -> NodeId | None:
        """The peer that sent the newest AppendEntries/Heartbeat/InstallSnapshot (it is always
        reachable, listed in the map or not), or None."""
        return self._source

    def peer_addresses(self) -> dict[NodeId, str]:
        """The current peer map (without this node)."""
        return {nid: link.address for nid, link in self._links.items() if link.address}

    def _source_address(self, nid: NodeId) -> str | None:
        """Where to reach the entry source ``nid`` when the map does not list it."""
        if nid in self.dial_overrides:
            return self.dial_overrides[nid]
        link = self._links.get(nid)
        if link is not None and link.address:
            return link.address
        return self._advertised.get(nid)

    def _sync_links(self) -> None:
        """Make the links match the map plus the entry source."""
        wanted = dict(self._configured)
        source = self._source
        kept = None
        if (
            source is not None
            and source not in wanted
            and (source == self._answered or source in self._links)
        ):
            addr = self._source_address(source)
            if addr is not None:
                wanted[source] = kept = addr
        if kept is not None and self._kept != (source, kept):
            log.info(
                "keeping a link to %s at %s: it sends us entries, though our configuration "
                "does not list it",
                source,
                kept,
            )
        self._kept = (source, kept) if source is not None and kept is not None else None
        for nid in list(self._links):
            if nid not in wanted:
                self._links.pop(nid).close()
                log.info("forgot peer %s", nid)
        for nid, addr in wanted.items():
            link = self._links.get(nid)
            if link is None:
                self._add_link(nid, addr)
            else:
                link.set_address(addr)
        self._warned_unknown -= set(wanted)

    def peer_incarnations(self) -> dict[NodeId, str]:
        """The incarnation each peer named in the last hello we accepted from it."""
        return dict(self._learned)

    def stopped_links(self) -> dict[NodeId, str]:
        """Peers we stopped sending to (they refused our incarnation or are not the one we
        expect), with the reason."""
        return {nid: link.stopped for nid, link in self._links.items() if link.stopped}

    def recheck_incarnations(self) -> None:
        """The configuration changed: hold every connection to the incarnations it lists.

        An inbound connection whose hello named another incarnation than the one now listed
        for its sender is closed (messages count only from the listed incarnation); a link
        whose expected incarnation changed redials with the new hello.
        """
        for conn in list(self._inbound.values()):
            problem = self._listing_problem(conn.hello)
            if problem is not None and conn.refusal is None:
                conn.refusal = problem
                conn.scope.cancel()
        for nid, link in self._links.items():
            hello = self._hello_for(nid)
            if link.stopped or self.bound_incarnation(nid) != decode_hello(link.hello).expect:
                link.set_hello(hello)  # redial: the peer may accept us now
            else:
                link.hello = hello  # only our configuration index moved: the next dial says so

    def _observe_rtt(self, peer: NodeId, seconds: float) -> None:
        if self.on_rtt is not None:
            self.on_rtt(peer, seconds)

    def statistics(self) -> TransportStatistics:
        """A frozen snapshot of every peer's counters (peers we send to or heard from)."""
        peers = []
        for nid in sorted(set(self._counters) | set(self._links)):
            link = self._links.get(nid)
            peers.append(
                self._counter(nid).snapshot(
                    nid,
                    link.address if link else None,
                    len(link.queue) if link else 0,
                )
            )
        return TransportStatistics(
            node_id=self.node_id,
            listen_port=self._listen_port,
            peers=tuple(peers),
            rejected_connections=self._rejected + self.router.rejected,
            refused_certificates=self._refused_certificates + self.router.tls_refused,
        )

    async def run(
        self, *, task_status: trio.TaskStatus[int | None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and send until cancelled; ``task_status.started`` gets the bound port."""
        if self._nursery is not None:
            raise RuntimeError("transport is already running")
        try:
            async with trio.open_nursery() as nursery:
                if self.listen_addr is not None:
                    host, port = split_host_port(self.listen_addr, allow_port_zero=True)
                    self._listen_port = await nursery.start(self.router.serve, host, port)
                    log.info(
                        "raft transport of %s listening on %s port %d",
                        self.node_id,
                        host,
                        self._listen_port,
                    )
                self._nursery = nursery
                for link in self._links.values():
                    nursery.start_soon(link.run)
                task_status.started(self._listen_port)
                await trio.sleep_forever()  # links added later need the nursery (no listener)
        finally:
            self._nursery = None

    # ---------------------------------------------------------------- outbound

    def _counter(self, nid: NodeId) -> PeerCounters:
        counters = self._counters.get(nid)
        if counters is None:
            counters = self._counters[nid] = PeerCounters()
        return counters

    def _hello_for(self, nid: NodeId) -> bytes:
        config_index, bound = self.own_binding()
        hello = Hello(
            version=WIRE_VERSION,
            cluster=self.cluster_id,
            src=self.node_id,
            dst=nid,
            incarnation=self.incarnation,
            expect=self.bound_incarnation(nid),
            addr=self.advertise_addr,
            config_index=config_index,
            bound=bound,
        )
        return encode_hello(hello)

    def _add_link(self, nid: NodeId, addr: str) -> None:
        link = PeerLink(
            peer_id=nid,
            address=addr,
            hello=self._hello_for(nid),
            settings=self.settings,
            encode=self.encode,
            connector=self._connector_for(nid),
            backoff=Backoff(policy=self.settings.backoff, rng=self.rng),
            counters=self._counter(nid),
            on_rtt=self._observe_rtt,
            queue=PeerQueue(
                max_control=self.settings.max_control_queue,
                max_bulk=self.settings.max_bulk_queue,
            ),
        )
        self._links[nid] = link
        if self._nursery is not None:
            self._nursery.start_soon(link.run)

    def _connector_for(self, nid: NodeId) -> Connector:
        """How the link to ``nid`` opens its byte stream: plain TCP, or TLS whose peer
        certificate must name ``nid``."""
        tls, connect = self.tls, self.connector
        if tls is None:
            return connect

        async def connect_tls(host: str, port: int) -> trio.abc.Stream:
            stream = await connect(host, port)
            try:
                secured = trio.SSLStream(stream, tls.client(), server_hostname=host)
                await secured.do_handshake()
                peer = identity_of(secured.getpeercert())
                if peer is None or peer.node_id != nid:
                    named = peer.node_id if peer is not None else None
                    raise ConnectionRefusedError(
                        f"TLS: the certificate at {join_host_port(host, port)} is for node "
                        f"{named!r}, not {nid!r}"
                    )
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            return secured

        return connect_tls

    # ---------------------------------------------------------------- inbound

    def refuse_without_node_certificate(self, remote: str, route: str) -> str | None:
        """With TLS: the node id of the connection's certificate, or None after logging and
        counting a connection that showed none (it must be refused). Without TLS: ``""``."""
        if self.tls is None:
            return ""
        peer = current_peer()
        if peer is not None and peer.node_id is not None:
            return peer.node_id
        self._rejected += 1
        self._refused_certificates += 1
        shown = "no certificate" if peer is None else f"a certificate of {peer.subject!r}"
        # One WARNING per remote host and certificate (a client may retry in a loop).
        key = (remote.rsplit(":", 1)[0], shown, route)
        level = logging.DEBUG if key in self._warned_certificates else logging.WARNING
        if len(self._warned_certificates) < 1024:
            self._warned_certificates.add(key)
        log.log(
            level,
            "refused %s connection from %s: it showed %s, not a node certificate",
            route,
            remote,
            shown,
        )
        return None

    async def _serve_raft(self, request: WebSocketRequest) -> None:
        remote = _describe_endpoint(request.remote)
        cert_node = self.refuse_without_node_certificate(remote, RAFT_PATH)
        if cert_node is None:
            await request.reject(403, body=b"a node certificate is required")
            return
        ws = await request.accept()
        try:
            hello = await self._read_hello(ws, remote)
            if hello is None:
                return
            if cert_node and hello.src != cert_node:
                self._refused_certificates += 1
                reason = f"hello claims node {hello.src!r} but the certificate is for {cert_node!r}"
                await self._refuse(ws, remote, cert_node, CLOSE_POLICY_VIOLATION, reason)
                return
            if hello.src not in self._configured and self._unlisted_connections() >= (
                MAX_UNLISTED_PEERS
            ):
                reason = f"too many connections from unlisted peers ({MAX_UNLISTED_PEERS})"
                await self._refuse(ws, remote, hello.src, CLOSE_TRY_AGAIN, reason)
                return
            counters = self._counter(hello.src)
            previous = self._inbound.get(hello.src)
            if previous is not None:
                previous.scope.cancel()  # the peer redialed: its old connection is dead or dying
            counters.inbound += 1
            if hello.incarnation is not None:
                self._learned[hello.src] = hello.incarnation
            if hello.addr is not None and self._advertised.get(hello.src) != hello.addr:
                self._advertised[hello.src] = hello.addr
                if hello.src == self._source:
                    self._sync_links()
            link = self._links.get(hello.src)
            if link is not None:
                link.poke()  # the peer is back: redial it now rather than after the backoff
            conn = _Inbound(scope=trio.CancelScope(), incarnation=hello.incarnation, hello=hello)
            self._inbound[hello.src] = conn
            self._forget_unlisted()
            try:
                with conn.scope:
                    await self._read_messages(ws, hello, remote, counters)
            finally:
                counters.inbound -= 1
                if self._inbound.get(hello.src) is conn:
                    del self._inbound[hello.src]
                self._forget_unlisted()
            if conn.refusal is not None:  # recheck_incarnations: no longer the listed one
                await self._refuse_incarnation(ws, remote, hello, conn.refusal)
        finally:
            with trio.move_on_after(self.settings.close_timeout):
                await ws.aclose()

    def _unlisted_connections(self) -> int:
        return sum(1 for nid in self._inbound if nid not in self._configured)

    def _forget_unlisted(self) -> None:
        """Keep per-peer state (counters, learned incarnations, advertised addresses) for at
        most ``MAX_UNLISTED_PEERS`` ids the map does not list, oldest forgotten first; never
        for a peer with a link, an open connection or the entry source."""
        keep = set(self._configured) | set(self._links) | set(self._inbound)
        if self._source is not None:
            keep.add(self._source)
        unlisted = [
            nid
            for nid in dict.fromkeys([*self._counters, *self._learned, *self._advertised])
            if nid not in keep
        ]
        for nid in unlisted[: max(0, len(unlisted) - MAX_UNLISTED_PEERS)]:
            self._counters.pop(nid, None)
            self._learned.pop(nid, None)
            self._advertised.pop(nid, None)

    async def _refuse(
        self, ws: WebSocketConnection, remote: str, who: str, code: int, reason: str
    ) -> None:
        """Close one inbound connection for breaking the protocol. Logged at WARNING once per
        remote host, sender (or "unlisted" for ids the map does not list) and close code, then
        at DEBUG: anyone who reaches the port may send garbage in a loop."""
        self._rejected += 1
        key = (remote.rsplit(":", 1)[0], who if who in self._configured else "unlisted", code)
        level = logging.DEBUG if key in self._warned_protocol else logging.WARNING
        if len(self._warned_protocol) < 1024:
            self._warned_protocol.add(key)
        log.log(level, "closing raft connection from %s (%s): %s", who, remote, reason)
        with trio.move_on_after(self.settings.close_timeout):
            await ws.aclose(code, _short(reason))

    def _stranger(self, peer: NodeId, incarnation: str | None, bound: str) -> str:
        return (
            f"the configuration lists {peer} as incarnation {bound}, "
            f"not {incarnation or '(none given)'}"
        )

    def _incarnation_problem(self, hello: Hello) -> str | None:
        """Why ``hello`` comes from, or is meant for, another incarnation (None: it is fine)."""
        if (
            hello.expect is not None
            and self.incarnation is not None
            and hello.expect != self.incarnation
        ):
            config_index, bound = self.own_binding()
            if not (bound and config_index > hello.config_index):
                return f"{self.node_id} is incarnation {self.incarnation}, not {hello.expect}"
            # The dialer's configuration predates the one binding us: its expectation is stale.
        return self._listing_problem(hello)

    def _attested(self, hello: Hello) -> str | None:
        """The incarnation the messages of ``hello``'s connection carry to the core
        (``Message.sender_incarnation``): the one the hello names, always, also when we let it
        in because it claims a binding newer than our listing. That claim (the hello's ``cfg``
        and ``bound``) is the sender's say-so: attesting nothing for it made the core take a
        made-up incarnation of a member as that member (a forged AppendEntries under the
        leader's id committed a credit mint on a follower). The core holds a sender whose
        incarnation is not the one its configuration binds to the rule for strangers: heard as
        a leader only while the node follows no live leader, which is also how a node that
        lagged behind a replacement hears its replaced leader. A hello that names no
        incarnation where our listing binds one attests ``NO_INCARNATION``, which matches
        none."""
        if hello.incarnation is not None:
            return hello.incarnation
        if self.bound_incarnation(hello.src) is not None:
            return NO_INCARNATION
        return None

    def _listing_problem(self, hello: Hello) -> str | None:
        """Why our configuration refuses the incarnation ``hello`` names (None: it does not).

        A configuration newer than ours that binds the sender to that incarnation wins: our
        listing is the stale one (a member replaced while we lagged, e.g. behind a snapshot
        that still lists its previous incarnation), and refusing it could lock us out of the
        leader for good. An amnesiac data dir binds nothing, so it never passes this way.
        """
        listed = self.bound_incarnation(hello.src)
        if listed is None or hello.incarnation == listed:
            return None
        if hello.bound and hello.config_index > self.own_binding()[0]:
            return None
        return self._stranger(hello.src, hello.incarnation, listed)

    async def _refuse_incarnation(
        self, ws: WebSocketConnection, remote: str, hello: Hello, reason: str
    ) -> None:
        """Close a connection of the wrong incarnation: one WARNING per peer and incarnation."""
        self._rejected += 1
        key = (hello.src, hello.incarnation, reason)
        level = logging.DEBUG if key in self._warned_refusals else logging.WARNING
        self._warned_refusals.add(key)
        log.log(
            level,
            "refusing raft connection from %s (%s): %s; %s",
            hello.src,
            remote,
            reason,
            _REPLACE_HINT,
        )
        with trio.move_on_after(self.settings.close_timeout):
            await ws.aclose(CLOSE_INCARNATION, _short(reason))

    def _closed_by_library(self, exc: ConnectionClosed, remote: str, who: str) -> None:
        """trio-websocket closes a connection itself on an oversized frame: log it like ours."""
        reason = exc.reason
        if reason is not None and reason.code == CLOSE_TOO_BIG:
            self._rejected += 1
            log.warning(
                "closing raft connection from %s (%s): frame larger than max_payload_size %d",
                who,
                remote,
                self.settings.max_payload_size,
            )
        else:
            log.debug("raft connection from %s (%s) %s", who, remote, describe_close(reason))

    async def _read_hello(self, ws: WebSocketConnection, remote: str) -> Hello | None:
        try:
            with trio.fail_after(self.settings.handshake_timeout):
                frame = await ws.get_message()
        except trio.TooSlowError:
            reason = f"no hello within {self.settings.handshake_timeout:g}s"
            await self._refuse(ws, remote, "unknown node", CLOSE_POLICY_VIOLATION, reason)
            return None
        except ConnectionClosed as exc:
            self._closed_by_library(exc, remote, "unknown node")
            return None
        try:
            hello = decode_hello(frame)
        except ProtocolError as exc:
            await self._refuse(ws, remote, "unknown node", CLOSE_PROTOCOL_ERROR, str(exc))
            return None
        problem = None
        if hello.version != WIRE_VERSION:
            problem = f"wire version {hello.version} unsupported (this node speaks {WIRE_VERSION})"
        elif hello.cluster != self.cluster_id:
            # The close reason never names our cluster id: the dialer is not authenticated.
            problem = "cluster id mismatch: this node belongs to another cluster"
        elif hello.dst != self.node_id:
            problem = f"hello addressed to node {hello.dst!r}, but this is {self.node_id!r}"
        elif hello.src == self.node_id:
            problem = f"hello from this node's own id {hello.src!r}"
        if problem is not None:
            await self._refuse(ws, remote, hello.src, CLOSE_POLICY_VIOLATION, problem)
            return None
        problem = self._incarnation_problem(hello)
        if problem is not None:
            await self._refuse_incarnation(ws, remote, hello, problem)
            return None
        log.debug("raft connection from %s (%s) accepted", hello.src, remote)
        return hello

    async def _read_messages(
        self,
        ws: WebSocketConnection,
        hello: Hello,
        remote: str,
        counters: PeerCounters,
    ) -> None:
        peer = hello.src
        attested = self._attested(hello)
        while True:
            try:
                frame = await ws.get_message()
            except ConnectionClosed as exc:
                self._closed_by_library(exc, remote, peer)
                return
            if isinstance(frame, str):
                reason = "text frame (raft frames are binary)"
                await self._refuse(ws, remote, peer, CLOSE_UNSUPPORTED_DATA, reason)
                return
            try:
                msg = self.decode(frame, max_size=self.settings.max_payload_size)
            except ProtocolError as exc:
                reason = f"malformed message: {exc}"
                await self._refuse(ws, remote, peer, CLOSE_PROTOCOL_ERROR, reason)
                return
            except Exception as exc:
                # The decoder must raise only ProtocolError; anything else is its bug, but a
                # remote frame must not be able to crash the node through it.
                log.exception("decoder raised %s on a frame from %s", type(exc).__name__, peer)
                reason = f"undecodable message ({type(exc).__name__})"
                await self._refuse(ws, remote, peer, CLOSE_PROTOCOL_ERROR, reason)
                return
            if msg.src != peer or msg.dst != self.node_id:
                reason = f"message from {msg.src!r} to {msg.dst!r} on {peer!r}'s connection"
                await self._refuse(ws, remote, peer, CLOSE_POLICY_VIOLATION, reason)
                return
            counters.messages_received += 1
            counters.bytes_received += len(frame)
            if attested is not None:
                # What this connection attests of its sender: the core checks it again against
                # the configuration it holds (univrs/raft/senders.py).
                msg = attrs.evolve(msg, sender_incarnation=attested)
            # A term above MAX_TERM is refused by the core: adopting it here would let any
            # sender pin the entry source (and where we dial) for good.
            if isinstance(msg, _FROM_LEADER) and self._source_term <= msg.term <= MAX_TERM:
                self._source_term = msg.term
                if msg.src != self._source:
                    self._source = msg.src
                    self._sync_links()  # before the driver sees it: the answer needs a link
            try:
                await self.inbox.send(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the node is shutting down


@asynccontextmanager
async def open_transport(transport: RaftTransport) -> AsyncIterator[RaftTransport]:
    """Run ``transport`` for the duration of the block (listening when the block starts)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        try:
            yield transport
        finally:
            nursery.cancel_scope.cancel()
