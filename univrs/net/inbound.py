"""The inbound half of the raft transport (``RaftInbound``, which ``RaftTransport`` extends):
accepting ``/raft`` connections, checking the hello (versions, ids, incarnations, the node
certificate with TLS), then reading frames, refusing bad ones, and delivering their messages
to the driver's inbox (inbound_frames.py, ``FrameReading``). The theory of operation of the
whole transport is in transport.py; the outbound half (links, dialing, sending) is there and
in peer.py.

Every refusal closes *that* connection only, with a close code (RFC 6455 7.4) and one WARNING
line per remote host, sender and reason (then DEBUG): anyone who reaches the port may send
garbage in a loop, and the listener and every other connection carry on. A frame is decoded
and every message in it checked (sender and destination) before any of it is delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from univrs.errors import ProtocolError, StorageError
from univrs.net import wsfast
from univrs.net.address import join_host_port
from univrs.net.hello import WIRE_VERSION, Hello, decode_hello
from univrs.net.inbound_frames import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TRY_AGAIN,
    Decoder,
    FrameReading,
    InboundConnection,
    short_reason,
)
from univrs.net.inbound_starts import StartChecks, StartTooSoon
from univrs.net.peer import (
    CLOSE_INCARNATION,
    CLOSE_STALE_START,
    RAFT_PATH,
    PeerLink,
)
from univrs.net.settings import TransportSettings
from univrs.net.stats import PeerCounters
from univrs.net.tls import TlsContexts, current_peer
from univrs.raft.messages import Message, NodeId
from univrs.raft.starts import Records, Start, StartBook

log = logging.getLogger("univrs.net")

# Refusals of a listed id at another incarnation logged at WARNING (one per id, incarnation and
# reason); past it, at DEBUG.
MAX_WARNED_INCARNATIONS = 1024


def _describe_endpoint(endpoint: object) -> str:
    address, port = getattr(endpoint, "address", None), getattr(endpoint, "port", None)
    if address is None or port is None:
        return str(endpoint)
    return join_host_port(str(address), int(port))


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
STALE_COPY_HINT = (
    "an older copy of a member's data dir (a VM snapshot rolled back, a copy put back) may "
    "have lost votes and entries it acknowledged: stop it and replace the member with an empty "
    "data dir (`univrs cluster join <member-api> --replace`, see the README)"
)


class RaftInbound(StartChecks, FrameReading):
    """The inbound half of ``RaftTransport`` (its fields are declared and documented there;
    this class only names the ones its methods use)."""

    node_id: NodeId
    cluster_id: str
    inbox: trio.abc.SendChannel[Message]
    settings: TransportSettings
    decode: Decoder
    incarnation: str | None
    bound_incarnation: Callable[[NodeId], str | None]
    own_binding: Callable[[], tuple[int, bool]]
    tls: TlsContexts | None
    start_book: StartBook
    start: Start | None
    save_starts: Callable[[Records], None] | None
    _start_lock: trio.Lock
    _fenced: str | None
    _configured: dict[NodeId, str]
    _advertised: dict[NodeId, str]
    _source: NodeId | None
    _source_term: int
    _leader_terms: dict[NodeId, int]
    _links: dict[NodeId, PeerLink]
    _counters: dict[NodeId, PeerCounters]
    _inbound: dict[NodeId, InboundConnection]
    _learned: dict[NodeId, str]
    _contested: set[NodeId]
    _reads_batches: dict[NodeId, bool]
    _payload_versions: dict[NodeId, tuple[str | None, int]]
    _warned_refusals: set[tuple[str, str | None, str]]
    _rejected: int
    _refused_certificates: int
    _warned_certificates: set[tuple[str, str, str]]
    _warned_protocol: set[tuple[str, str, int]]

    def _sync_links(self) -> None:
        """Make the links match the map plus the entry source (``RaftTransport``)."""
        raise NotImplementedError

    def _counter(self, nid: NodeId) -> PeerCounters:
        counters = self._counters.get(nid)
        if counters is None:
            counters = self._counters[nid] = PeerCounters()
        return counters

    def count_rejected(self) -> None:
        """Count one inbound connection another route of this listener closed for breaking
        its protocol (``/client``: a bad hello or frame), in ``rejected_connections``."""
        self._rejected += 1

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
        wsfast.install(ws)  # a message's parts are bounded from the hello on (s26-fuzz)
        try:
            hello = await self._read_hello(ws, remote)
            if hello is None:
                return
            if cert_node and hello.src != cert_node:
                self._refused_certificates += 1
                reason = f"hello claims node {hello.src!r} but the certificate is for {cert_node!r}"
                await self._refuse(ws, remote, cert_node, CLOSE_POLICY_VIOLATION, reason)
                return
            if self._fenced is not None:
                reason = f"{self.node_id} stopped taking part: {self._fenced}"
                await self._refuse(ws, remote, hello.src, CLOSE_TRY_AGAIN, reason)
                return
            copy = self._seen_problem(hello)
            if copy is not None:  # we are the older copy: stop before reading a message
                self._fence(hello.src, copy)
                await self._refuse(ws, remote, hello.src, CLOSE_TRY_AGAIN, copy)
                return
            try:
                stale = await self._check_start(hello)
            except StorageError as exc:  # the record is not durable: deliver nothing, go on
                log.error("cannot record the start of %s: %s", hello.src, exc)
                reason = f"{self.node_id} cannot record its start now"
                await self._refuse(ws, remote, hello.src, CLOSE_TRY_AGAIN, reason)
                return
            except StartTooSoon as exc:  # one synced write per id a second: redial later
                await self._refuse(ws, remote, hello.src, CLOSE_TRY_AGAIN, str(exc))
                return
            if stale is not None:
                await self._refuse_incarnation(ws, remote, hello, stale, CLOSE_STALE_START)
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
                self._learn(hello.src, hello.incarnation)
            self._reads_batches[hello.src] = hello.batch
            self._payload_versions[hello.src] = (hello.incarnation, hello.payload)
            if hello.addr is not None and self._advertised.get(hello.src) != hello.addr:
                self._advertised[hello.src] = hello.addr
                if hello.src == self._source:
                    self._sync_links()
            link = self._links.get(hello.src)
            if link is not None:
                link.poke()  # the peer is back: redial it now rather than after the backoff
            conn = InboundConnection(
                scope=trio.CancelScope(), incarnation=hello.incarnation, hello=hello
            )
            self._inbound[hello.src] = conn
            self._forget_unlisted()
            try:
                with conn.scope:
                    await self._read_messages(ws, conn, remote, counters, self._attested(hello))
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

    def _learn(self, peer: NodeId, incarnation: str) -> None:
        """Note the incarnation ``peer``'s hello named (``peer_incarnations``: what a leader
        binds unbound members to). Hellos are the sender's say-so: while our configuration
        binds ``peer`` to no incarnation, a second one under its id (a forger's made-up one,
        or a wiped data dir: either way not the member we first heard) contests the id, and
        a contested id is not offered for binding (one WARNING). Binding the newest hello's
        let a forger's hello, in the window after a bootstrap, bind a member's id to the
        forger: the real member refused, the forger counted as it."""
        seen = self._learned.get(peer)
        if seen is None or seen == incarnation or self.bound_incarnation(peer) is not None:
            self._learned[peer] = incarnation
            return
        if peer not in self._contested:
            self._contested.add(peer)
            log.warning(
                "two incarnations under one unbound member id %s (%s, then %s): not binding "
                "it; if its data dir was replaced, rejoin it with `univrs cluster join "
                "--replace`",
                peer,
                seen,
                incarnation,
            )

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
            for nid in dict.fromkeys(
                [
                    *self._counters,
                    *self._learned,
                    *self._advertised,
                    *self._reads_batches,
                    *self._payload_versions,
                ]
            )
            if nid not in keep
        ]
        for nid in unlisted[: max(0, len(unlisted) - MAX_UNLISTED_PEERS)]:
            self._counters.pop(nid, None)
            self._learned.pop(nid, None)
            self._contested.discard(nid)
            self._advertised.pop(nid, None)
            self._reads_batches.pop(nid, None)
            self._payload_versions.pop(nid, None)

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
        self,
        ws: WebSocketConnection,
        remote: str,
        hello: Hello,
        reason: str,
        code: int = CLOSE_INCARNATION,
    ) -> None:
        """Close a connection of the wrong incarnation (``code``: or of an older copy of the
        right one, ``CLOSE_STALE_START``): one WARNING per peer, incarnation and reason."""
        self._rejected += 1
        key = (hello.src, hello.incarnation, reason)
        # The incarnation is the sender's to choose: past MAX_WARNED_INCARNATIONS keys a new
        # one is logged at DEBUG and not kept (s13-audit: one key and one WARNING per made-up
        # incarnation, for the node's lifetime).
        warned = self._warned_refusals
        level = logging.WARNING
        if key in warned or len(warned) >= MAX_WARNED_INCARNATIONS:
            level = logging.DEBUG
        else:
            warned.add(key)
        log.log(
            level,
            "refusing raft connection from %s (%s): %s; %s",
            hello.src,
            remote,
            reason,
            STALE_COPY_HINT if code == CLOSE_STALE_START else _REPLACE_HINT,
        )
        with trio.move_on_after(self.settings.close_timeout):
            await ws.aclose(code, short_reason(reason))

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
