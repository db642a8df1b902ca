"""Wiring a node's parts from its configuration: the transport and the TLS contexts."""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable

import attrs
import trio

from univrs.config import NodeConfig
from univrs.errors import ConfigError
from univrs.net.address import WILDCARD_HOSTS, split_host_port
from univrs.net.settings import PEER_CONNECTIONS_PER_ADDRESS, TransportSettings
from univrs.net.tls import TlsContexts, check_loaded, contexts_for
from univrs.net.transport import RaftTransport, no_binding, unbound
from univrs.raft.messages import Message, NodeId
from univrs.raft.starts import Records, Start, StartBook
from univrs.runtime.capabilities import lease_hold_ms
from univrs.runtime.payload import MAX_PAYLOAD_VERSION


def transport_from_config(
    config: NodeConfig,
    *,
    inbox: trio.abc.SendChannel[Message],
    rng: random.Random,
    leave: Callable[..., bool] | None = None,
    settings: TransportSettings | None = None,
    cluster_id: str | None = None,
    incarnation: str | None = None,
    bound_incarnation: Callable[[NodeId], str | None] = unbound,
    own_binding: Callable[[], tuple[int, bool]] = no_binding,
    start: Start | None = None,
    start_records: Records | None = None,
    save_starts: Callable[[Records], None] | None = None,
) -> RaftTransport:
    """A transport for ``config``: its ids, raft address, payload limit and bootstrap peers.

    ``leave``: the runtime's inbox ``leave`` (messages kept for the driver's next step).

    ``cluster_id`` (the data dir's, once known) overrides the config's; ``incarnation`` and
    ``bound_incarnation`` and ``own_binding`` as in ``RaftTransport``; ``start`` (this start,
    durable), ``start_records`` (the peers' starts accepted before) and ``save_starts`` too."""
    base = settings if settings is not None else TransportSettings()
    return RaftTransport(
        node_id=config.node_id,
        cluster_id=cluster_id or config.cluster_id or "univrs",
        inbox=inbox,
        leave=leave,
        rng=rng,
        listen_addr=config.raft_addr,
        peers=config.dial_addresses(config.bootstrap_addresses()),
        advertise_addr=_advertised_addr(config.raft_addr),
        dial_overrides=dict(config.dial),
        settings=attrs.evolve(
            base,
            max_payload_size=config.max_payload_size,
            max_connections_per_address=(
                config.max_connections_per_address + PEER_CONNECTIONS_PER_ADDRESS
            ),
        ),
        incarnation=incarnation,
        bound_incarnation=bound_incarnation,
        own_binding=own_binding,
        tls=tls_contexts(config),
        payload_version=MAX_PAYLOAD_VERSION,
        lease_hold_ms=lease_hold_ms(config.raft_config(), config.tick_ms),
        start=start,
        start_book=StartBook(dict(start_records or {})),
        save_starts=save_starts,
    )


def tls_contexts(config: NodeConfig) -> TlsContexts | None:
    """The node's TLS contexts (shared by every part of the node), or None: plaintext."""
    return contexts_for(config.tls) if config.tls is not None else None


def client_ssl(config: NodeConfig) -> ssl.SSLContext | None:
    """The context this node dials its peers' APIs and listeners with (None: plaintext)."""
    tls = tls_contexts(config)
    return tls.client() if tls is not None else None


def check_tls(config: NodeConfig) -> str:
    """Load the TLS files once before anything listens (ConfigError naming the problem), and
    say how this node's traffic travels, for its start-up log line."""
    if config.tls is None:
        if config.insecure:
            return "plaintext (tls.insecure: no TLS, on purpose)"
        return "plaintext (loopback only; configure [tls] to listen beyond this machine)"
    try:
        check_loaded(config.tls)
    except ValueError as exc:
        raise ConfigError(f"tls: {exc}") from None
    clients = "required" if config.tls.client_auth == "require" else "optional"
    return f"TLS (peers: node certificates; clients: certificates {clients})"


def _advertised_addr(raft_addr: str) -> str | None:
    """What our hellos advertise: the configured raft address, unless peers could not dial it
    (port 0 or a wildcard host; such a node is not reachable through the membership either)."""
    host, port = split_host_port(raft_addr, allow_port_zero=True)
    if port == 0 or host in WILDCARD_HOSTS:
        return None
    return raft_addr
