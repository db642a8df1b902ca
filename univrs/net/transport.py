"""The raft transport: CBOR frames over websockets between the nodes of one cluster.

Theory of operation.

* Inbound (univrs/net/inbound.py, ``RaftInbound``, which ``RaftTransport`` extends): a
  ``WebSocketRouter`` listens on the node's raft address and hands ``/raft``
  connections to ``_serve_raft``. The first frame must be a hello (see ``univrs.net.hello``) with
  our wire version, our cluster id and our node id as destination; every following frame is
  decoded into the ``Message`` (or, in a batch frame, the messages) it carries, each of whose
  ``src`` must be the hello's sender and ``dst`` us, and they are delivered through the
  bounded ``inbox`` channel to the driver (the sole owner of the core), on the websocket
  library's reader task when nothing waits (univrs/net/inbound_frames.py, wsdirect.py).
  A bad hello, a malformed, text or oversized frame closes *that* connection with one WARNING
  line; the listener and every other connection carry on. A newer connection from the same
  peer replaces an older one (the peer restarted; the old one may be half-open forever).
* Outbound (this module and univrs/net/peer.py): one ``PeerLink`` per peer dials it, sends
  our hello, then pumps that peer's two-lane queue (control before bulk) into the connection,
  what is queued when the pump wakes as one batch frame if the peer's hello said it reads them
  (``Hello.batch``; issue 14: one frame per peer per driver step). ``send`` only queues, so
  the driver never waits on the network; ``send_now`` also writes what the kernel takes at
  once (s17-lat1).
* Addresses come from ``set_peer_addresses``, which the runtime calls again whenever the
  membership changes; a changed address redials at once, a removed peer's link stops.
* Incarnations (one id, one incarnation: see ``Membership.incarnations``). Our hello carries our
  data dir's incarnation and the one our configuration lists for the peer
  (``bound_incarnation``). A receiver refuses, with ``CLOSE_INCARNATION`` and one WARNING per
  peer and incarnation, a dialer whose incarnation differs from the one its configuration lists
  for that id, and a hello that expects another incarnation of itself; unbound members are
  accepted. A listing is only as fresh as its configuration: the hello also carries the index of
  the sender's newest configuration and whether it binds the sender to its own incarnation
  (``own_binding``), and the side whose configuration is older yields (a node that lagged behind
  a replacement must not refuse its new leader for ever). The dialer's link then stops sending
  (``PeerLink``). After a configuration change the runtime calls ``recheck_incarnations``:
  inbound connections from an incarnation the configuration no longer lists are closed, and
  links whose expectation changed (or that stopped) redial. The incarnations learned from
  accepted hellos (``peer_incarnations``) are what a leader records in the configuration; an
  unbound id whose hellos named two incarnations is contested and never offered (a forger's
  hello must not bind a member's id to itself). Every message delivered carries its connection's
  hello incarnation in ``Message.sender_incarnation`` (not on the wire; ``_attested``), also for
  a sender let in because it claims a binding newer than our listing (that claim is the sender's
  say-so): the core checks it again against the configuration it holds, which may have moved on,
  and hears a sender of another incarnation than it lists only as a leader while it follows no
  live leader (univrs/raft/senders.py). Without TLS none of this authenticates anyone: an
  incarnation travels in clear text (docs/security.md).
* One exception to that map: the peer that sends us entries. The sender of the newest
  (highest-term, up to the core's ``MAX_TERM``) AppendEntries, Heartbeat or InstallSnapshot
  keeps its link even when the map does not list it, at the address the map last gave it or,
  failing that, the one it advertised in its hello (``Hello.addr``, with this node's dial
  overrides applied). A node whose log is still old (a brand-new member catching up from index 1
  adopts the bootstrap configuration first) must still be able to answer its leader; without
  this rule it forgot the leader's address and never caught up. An unlisted source is dialed
  only once we send it something: the core answers only senders it accepted, so a refused
  stranger's advertised address is never dialed. The last source we answered keeps its link
  while another, unanswered sender holds the newest term (s13-audit: a refused stranger's
  heartbeat at a high term took the source over and closed the link to the unlisted leader the
  core followed, whose answers were then dropped until an honest term overtook the forged one);
  an answer to leader traffic (an append, heartbeat or snapshot answer) makes its receiver the
  answered source, and lets the one answered before go; not an answer to a listed peer whose
  leader traffic came at a lower term than the answer (the core rejecting a stale leader:
  s14-small, before the unlisted leader's link closed until our next answer to it).
* Unlisted peers are bounded: per-peer state for ids the map does not list is kept for at most
  ``MAX_UNLISTED_PEERS`` of them (oldest forgotten first), and at most that many connections
  from unlisted ids are open at once. A connection closed for breaking the protocol is logged at
  WARNING once per remote host, sender (or "unlisted") and close code.
* TLS (``tls`` set: ``univrs.net.tls``). The listener accepts only TLS; ``/raft`` demands a node
  certificate signed by the cluster CA (refused with HTTP 403 at the websocket handshake
  otherwise) and a hello whose ``src`` is the node id that certificate names (closed with a
  policy violation before a single message is read otherwise). A dialer checks the other way
  round: the peer's certificate must name the node it dials, or the connection is dropped before
  the hello is sent. The certificate binds the node id; the hello binds the incarnation (above).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from univrs.net.address import split_host_port
from univrs.net.backoff import Backoff
from univrs.net.hello import WIRE_VERSION, Hello, decode_hello, encode_hello
from univrs.net.inbound import (
    MAX_UNLISTED_PEERS,
    NO_INCARNATION,
    STALE_COPY_HINT,
    RaftInbound,
    no_binding,
    unbound,
)
from univrs.net.inbound_frames import Decoder, InboundConnection
from univrs.net.peer import (
    RAFT_PATH,
    BatchEncoder,
    Connector,
    Encoder,
    PeerLink,
)
from univrs.net.queue import PeerQueue
from univrs.net.server import RouteHandler, WebSocketRouter
from univrs.net.settings import TransportSettings
from univrs.net.stats import PeerCounters, TransportStatistics
from univrs.net.tls import TlsContexts, node_connector
from univrs.raft.messages import (
    AppendEntriesResponse,
    HeartbeatResponse,
    InstallSnapshotResponse,
    Message,
    NodeId,
)
from univrs.raft.starts import Records, Start, StartBook

__all__ = [
    "MAX_UNLISTED_PEERS",
    "NO_INCARNATION",
    "Decoder",
    "RaftTransport",
    "no_binding",
    "open_transport",
    "unbound",
]

log = logging.getLogger("univrs.net")

# Answers to leader traffic: the core sends one only to a sender it accepted as its leader,
# which then keeps its link even while another sender holds the newest term.
_LEADER_ANSWERS = frozenset((AppendEntriesResponse, HeartbeatResponse, InstallSnapshotResponse))


def _default_encoder() -> Encoder:
    from univrs.codec import encode_message

    return encode_message


def _default_batch_encoder() -> BatchEncoder:
    from univrs.codec import encode_batch

    return encode_batch


def _default_decoder() -> Decoder:
    from univrs.codec import decode_frame

    return decode_frame


@attrs.define(eq=False)
class RaftTransport(RaftInbound):
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
    # None: never send batch frames (this node still reads them: ``decode`` does).
    encode_batch: BatchEncoder | None = attrs.field(factory=_default_batch_encoder)
    # Whether our hellos say we read batch frames (``decode`` does; False only makes this node
    # look like an older one, for tests of mixed versions).
    read_batches: bool = True
    # The newest entry payload version our hellos say we apply (``Hello.payload``): the
    # runtime's (univrs/runtime/payload.py ``MAX_PAYLOAD_VERSION``, which the node passes); 1,
    # the default, announces nothing, like a node older than the announcement.
    payload_version: int = 1
    # What our hellos announce as our vote hold (``Hello.hold``, ms; 0: read leases off):
    # the leader's lease gate (univrs/runtime/capabilities.py ``lease_gate``) reads the peers'.
    lease_hold_ms: int = 0
    connector: Connector = trio.open_tcp_stream
    advertise_addr: str | None = None
    dial_overrides: Mapping[NodeId, str] = attrs.field(factory=dict)
    incarnation: str | None = None
    bound_incarnation: Callable[[NodeId], str | None] = unbound
    own_binding: Callable[[], tuple[int, bool]] = no_binding
    tls: TlsContexts | None = None  # None: plaintext links
    # This data dir's start, durable before the transport exists (univrs/storage/starts.py),
    # named in every hello (None: announce none, like an older build); the starts accepted of
    # the peers (univrs/raft/starts.py) and how to make them durable (None: kept in memory).
    start: Start | None = None
    start_book: StartBook = attrs.field(factory=StartBook)
    save_starts: Callable[[Records], None] | None = None
    # Offered each checked message the direct path delivers (inbound_frames.py): True when it
    # kept the message for the driver's next step instead (the runtime's inbox ``leave``:
    # univrs/runtime/events.py); None: every message goes on ``inbox``.
    leave: Callable[..., bool] | None = None
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
    # The term of the last leader traffic from each listed peer (s14-small: ``send``).
    _leader_terms: dict[NodeId, int] = attrs.field(factory=dict, init=False)
    _links: dict[NodeId, PeerLink] = attrs.field(factory=dict, init=False)
    _counters: dict[NodeId, PeerCounters] = attrs.field(factory=dict, init=False)
    _inbound: dict[NodeId, InboundConnection] = attrs.field(factory=dict, init=False)
    # Incarnations named by the hellos we accepted, newest per peer (the first per unbound
    # peer: a second one contests it, inbound.py ``_learn``).
    _learned: dict[NodeId, str] = attrs.field(factory=dict, init=False)
    # Unbound peers whose hellos named two incarnations: never offered for binding.
    _contested: set[NodeId] = attrs.field(factory=set, init=False)
    # Whether the newest hello we accepted from a peer said it reads batch frames.
    _reads_batches: dict[NodeId, bool] = attrs.field(factory=dict, init=False)
    # (incarnation, payload version) that the newest hello we accepted from a peer named.
    _payload_versions: dict[NodeId, tuple[str | None, int]] = attrs.field(factory=dict, init=False)
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
    _start_lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    # When (trio's clock) each listed peer's start record last moved: at most one move a second.
    _start_moved: dict[NodeId, float] = attrs.field(factory=dict, init=False)
    # Why this node stopped taking part (a peer refused it as an older copy of its data dir).
    _fenced: str | None = attrs.field(default=None, init=False)

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
        self._send(msg, wake=True)

    def send_now(self, msgs: Sequence[Message]) -> None:
        """``send`` one step's ``msgs``, written from this step where a link can (its task
        woken only for the rest: ``PeerLink.flush``, s17-lat1)."""
        links = {id(ln): ln for msg in msgs if (ln := self._send(msg, wake=False)) is not None}
        for link in links.values():
            link.flush()

    def _send(self, msg: Message, *, wake: bool) -> PeerLink | None:
        if self._fenced is not None:
            self._counter(msg.dst).dropped += 1
            return None
        link = self._links.get(msg.dst)
        if (
            self._answered != msg.dst
            and (type(msg) in _LEADER_ANSWERS or (link is None and msg.dst == self._source))
            and not self._answers_a_stale_leader(msg)
        ):
            # The first answer to an unlisted entry source: dial it now. Not on receipt: the
            # core answers only senders it accepted, so a refused stranger's hello address is
            # never dialed (red team: every made-up peer's heartbeat made the node dial it).
            # An answer to another leader (listed or not) lets the one answered before go.
            self._answered = msg.dst
            self._sync_links()
            link = self._links.get(msg.dst)
        if link is None:
            self._counter(msg.dst).dropped += 1
            if msg.dst not in self._warned_unknown:
                self._warned_unknown.add(msg.dst)
                log.warning("dropping messages to %s: no address known for it", msg.dst)
            return None
        link.enqueue(msg, wake=wake)
        return link

    def _answers_a_stale_leader(self, msg: Message) -> bool:
        """``msg`` answers a listed peer whose leader traffic came at a lower term: the
        core's rejection of a stale leader, not a leader it follows (s14-small). It keeps
        the answered source (an unlisted leader's link would close until its next heartbeat,
        s13-audit A6's remainder); the listed peer has its link anyway."""
        heard = self._leader_terms.get(msg.dst)
        return heard is not None and heard < msg.term and msg.dst in self._configured

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
        for nid in [n for n in self._leader_terms if n not in wanted]:
            del self._leader_terms[nid]
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
        answered = self._answered
        if answered is not None and answered != source and answered not in wanted:
            # The source we answered last, while an unanswered sender holds the newest term:
            # its link stays until the core answers another (module docstring).
            addr = self._source_address(answered)
            if addr is not None:
                wanted[answered] = addr
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
        """The incarnation each peer named in the last hello we accepted from it; a peer our
        configuration binds to none whose hellos named two is left out (contested: a forger
        or a wiped data dir, inbound.py ``_learn``)."""
        return {n: i for n, i in self._learned.items() if n not in self._contested}

    def peer_lease_holds(self) -> dict[NodeId, tuple[str | None, int]]:
        """Per peer with an open inbound connection: the incarnation and the vote hold (ms,
        ``Hello.hold``) its hello named. Only open connections count: a peer that restarts
        (perhaps with other settings) counts again only once its new hello arrived."""
        return {nid: (c.incarnation, c.hello.hold) for nid, c in self._inbound.items()}

    def peer_payload_versions(self) -> dict[NodeId, tuple[str | None, int]]:
        """Per peer: the incarnation and the entry payload version named by the newest hello
        we accepted from it (univrs/runtime/capabilities.py)."""
        return self._payload_versions

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

    @property
    def fenced(self) -> str | None:
        """Why this node stopped taking part in the cluster (None: it takes part)."""
        return self._fenced

    def _started(self, peer: NodeId) -> None:
        """We recorded a new start of ``peer``: our next hello to it names it (``seen``)."""
        link = self._links.get(peer)
        if link is not None:
            link.hello = self._hello_for(peer)

    def _refused_as_copy(self, peer: NodeId, reason: str) -> None:
        self._fence(peer, f"{peer} refused it as an older copy of its data dir ({reason})")

    def _fence(self, peer: NodeId, reason: str) -> None:
        """``peer`` refused us as an older copy of our data dir (or its hello named a start of
        ours that we do not have, ``Hello.seen``): we may have voted in a term
        we already voted in, and lack entries we acknowledged. Stop taking part until the
        operator replaces us: send nothing more (no vote, no acknowledgement, and no hello:
        every link is closed), close every inbound connection and refuse new ones. Not
        durable: a restart of this copy is refused again by the peers that recorded the newer
        start (its chain of boot ids forked from theirs), and fenced again by the first
        refusal."""
        if self._fenced is not None:
            return
        self._fenced = reason
        log.error(
            "this node runs an older copy of its data dir: it sends nothing more and refuses "
            "every raft connection (%s); %s",
            reason,
            STALE_COPY_HINT,
            extra={"peer": peer, "reason": reason},
        )
        for link in self._links.values():
            # Closed, not only emptied: a link left running would go on dialing, and each of
            # its hellos would have a peer that never heard the later start record this
            # copy's (forked) start, durably (s15-review2).
            link.close()
        for conn in list(self._inbound.values()):
            conn.scope.cancel()

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
            fenced=self._fenced,
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
            batch=self.read_batches,
            payload=self.payload_version,
            hold=self.lease_hold_ms,
            start=self.start,
            seen=self.start_book.newest(nid),
        )
        return encode_hello(hello)

    def _add_link(self, nid: NodeId, addr: str) -> None:
        link = PeerLink(
            peer_id=nid,
            address=addr,
            hello=self._hello_for(nid),
            settings=self.settings,
            encode=self.encode,
            connector=node_connector(self.connector, self.tls, nid),
            backoff=Backoff(policy=self.settings.backoff, rng=self.rng),
            counters=self._counter(nid),
            on_rtt=self._observe_rtt,
            on_stale_start=self._refused_as_copy,
            encode_batch=self.encode_batch,
            accepts_batches=lambda: self._reads_batches.get(nid, False),
            queue=PeerQueue(
                max_control=self.settings.max_control_queue,
                max_bulk=self.settings.max_bulk_queue,
            ),
        )
        self._links[nid] = link
        if self._fenced is not None:
            link.close()  # a fenced node dials nobody (``_fence``)
        if self._nursery is not None:
            self._nursery.start_soon(link.run)


@asynccontextmanager
async def open_transport(transport: RaftTransport) -> AsyncIterator[RaftTransport]:
    """Run ``transport`` for the duration of the block (listening when the block starts)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        try:
            yield transport
        finally:
            nursery.cancel_scope.cancel()
