"""TLS for every listener and every dial: one cluster CA, node and client certificates.

Theory of operation.

* Files. A node is pointed at three PEM files (``TlsFiles``): the cluster CA's certificate,
  its own certificate and its private key (``univrs certs`` creates them). A node certificate
  names its node id as a SAN URI ``univrs://node/<id>`` and is good for both ends of a TLS
  connection; a client certificate names ``univrs://client/<name>`` and is good only for the
  client end (``univrs.net.certs``).
* Contexts. ``TlsContexts`` builds the ``ssl.SSLContext`` objects from the files and hands the
  same ones out until a file changes (its size or modification time): every new connection,
  accepted or dialed, asks for its context, so replacing a node's certificate and key takes
  effect at the next connection, without a restart and without touching the connections that
  are up (rotation, docs/security.md). A pair of files caught half-replaced (a key that does
  not match its certificate) is reported once and the previous context stays in use.
* Peer identity. ``identity_of`` reads the node id or client name from a verified peer
  certificate. Listeners that wrap connections themselves (the raft listener; the REST
  API through hypercorn) record where the connection's peer certificate can be read in a
  context variable for the handlers of that connection: ``current_peer()``.
* Who checks what. The TLS handshake checks that the peer's certificate is signed by the
  cluster CA (and, for a dialer, that the certificate names the host dialed); a raft link
  additionally checks that the certificate's node id is the node the hello claims or the
  dialer expects (``univrs.net.transport``).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import pathlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from univrs.net.address import join_host_port

log = logging.getLogger("univrs.tls")

NODE_URI_PREFIX = "univrs://node/"
CLIENT_URI_PREFIX = "univrs://client/"
CLIENT_AUTH_MODES = ("require", "optional")


@attrs.frozen(kw_only=True)
class TlsFiles:
    """Where a node's (or a client's) TLS material lives.

    ``client_auth`` applies to the client-facing parts (the REST API and the fast client
    protocol): ``require`` demands a certificate signed by the cluster CA from every client;
    ``optional`` lets a client without one in (it authenticates with a token instead), while
    a certificate that is presented must still be valid. Raft links always demand a node
    certificate, whatever this says.
    """

    ca_cert: pathlib.Path
    cert: pathlib.Path | None = None
    key: pathlib.Path | None = None
    client_auth: str = "require"

    def __attrs_post_init__(self) -> None:
        if self.client_auth not in CLIENT_AUTH_MODES:
            raise ValueError(f"client_auth must be one of {CLIENT_AUTH_MODES}")
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both a certificate and its key, or neither")


@attrs.frozen
class PeerIdentity:
    """Who a verified peer certificate names: a node id, a client name, or neither."""

    node_id: str | None
    client: str | None
    subject: str


def identity_of(cert: dict[str, Any] | None) -> PeerIdentity | None:
    """The identity in ``cert`` (``SSLObject.getpeercert()``, a verified certificate), or
    None when the peer presented none."""
    if not cert:
        return None
    node = client = None
    for kind, value in cert.get("subjectAltName", ()):
        if kind != "URI" or not isinstance(value, str):
            continue
        if value.startswith(NODE_URI_PREFIX) and node is None:
            node = value[len(NODE_URI_PREFIX) :] or None
        elif value.startswith(CLIENT_URI_PREFIX) and client is None:
            client = value[len(CLIENT_URI_PREFIX) :] or None
    subject = ",".join(
        f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn if isinstance(v, str)
    )
    return PeerIdentity(node_id=node, client=client, subject=subject)


# ------------------------------------------------------------------- the peer of a connection

PeerSource = Callable[[], dict[str, Any] | None]
_peer_source: contextvars.ContextVar[PeerSource | None] = contextvars.ContextVar(
    "univrs_tls_peer", default=None
)


def set_peer_source(source: PeerSource | None) -> None:
    """Record, for the current task (and the tasks it starts), where the peer certificate of
    the connection it serves can be read (``SSLObject.getpeercert``)."""
    _peer_source.set(source)


def current_peer() -> PeerIdentity | None:
    """The verified identity of the peer of the connection the current task serves, or None
    (plaintext, or a TLS client that presented no certificate)."""
    source = _peer_source.get()
    if source is None:
        return None
    try:
        return identity_of(source())
    except (ValueError, ssl.SSLError):  # handshake not done: no peer certificate yet
        return None


# ------------------------------------------------------------------------------- contexts


def _signature(paths: tuple[pathlib.Path | None, ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for p in paths:
        if p is None:
            out.append((0, 0))
            continue
        st = os.stat(p)
        out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def _base(purpose: ssl.Purpose, files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose, cafile=str(files.ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.cert is not None and files.key is not None:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx


def build_server_context(files: TlsFiles, *, require_client_cert: bool) -> ssl.SSLContext:
    """A listener's context: our certificate; clients verified against the CA (required, or
    checked only when presented)."""
    if files.cert is None:
        raise ValueError("a listener needs a certificate and key")
    ctx = _base(ssl.Purpose.CLIENT_AUTH, files)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def build_client_context(files: TlsFiles) -> ssl.SSLContext:
    """A dialer's context: the server verified against the CA and the host dialed; our own
    certificate presented when we have one."""
    return _base(ssl.Purpose.SERVER_AUTH, files)


@attrs.define(eq=False)
class TlsContexts:
    """The contexts of one set of files, rebuilt when a file changes (see the module
    docstring). ``server()`` for the raft listener and the REST API (a client certificate
    required unless ``client_auth`` is optional: ``/client`` shares the raft listener, and the
    ``/raft`` and ``/probe`` routes demand a node certificate themselves); ``client()`` for
    every dial."""

    files: TlsFiles
    reloads: int = 0  # contexts rebuilt after a file changed (statistics)
    _cache: dict[str, tuple[tuple[tuple[int, int], ...], ssl.SSLContext]] = attrs.field(
        factory=dict, init=False
    )

    @property
    def require_client_cert(self) -> bool:
        return self.files.client_auth == "require"

    def server(self) -> ssl.SSLContext:
        return self._get("server", self._server)

    def client(self) -> ssl.SSLContext:
        return self._get("client", lambda: build_client_context(self.files))

    def _server(self) -> ssl.SSLContext:
        return build_server_context(self.files, require_client_cert=self.require_client_cert)

    def _get(self, kind: str, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        f = self.files
        try:
            sig = _signature((f.ca_cert, f.cert, f.key))
        except OSError as exc:
            cached = self._cache.get(kind)
            if cached is None:
                raise
            log.warning("cannot read TLS files, keeping the loaded ones: %s", exc)
            return cached[1]
        cached = self._cache.get(kind)
        if cached is not None and cached[0] == sig:
            return cached[1]
        try:
            ctx = build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            if cached is None:
                raise
            # A rotation caught half-way (new certificate, old key): keep serving.
            log.warning("cannot load the changed TLS files, keeping the old ones: %s", exc)
            return cached[1]
        if cached is not None:
            self.reloads += 1
            log.info("TLS files changed: new connections use the new certificate")
        self._cache[kind] = (sig, ctx)
        return ctx


@functools.lru_cache(maxsize=64)
def contexts_for(files: TlsFiles) -> TlsContexts:
    """The one ``TlsContexts`` of ``files`` in this process (so every part of a node shares
    one cache and one reload)."""
    return TlsContexts(files)


def client_context(
    ca_cert: str | os.PathLike[str],
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A dialer's context from file names (the CLI and the Python client)."""
    files = TlsFiles(
        ca_cert=pathlib.Path(ca_cert),
        cert=pathlib.Path(cert) if cert is not None else None,
        key=pathlib.Path(key) if key is not None else None,
    )
    return build_client_context(files)


def check_loaded(files: TlsFiles) -> None:
    """Load ``files`` once (start-up): raises ValueError naming what is wrong."""
    try:
        build_server_context(files, require_client_cert=True)
    except ssl.SSLError as exc:  # an OSError too: first
        raise ValueError(f"bad TLS files ({files.cert}, {files.key}): {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read TLS files: {exc}") from None


def node_connector(
    connect: Callable[[str, int], Awaitable[trio.abc.Stream]],
    tls: TlsContexts | None,
    nid: str,
) -> Callable[[str, int], Awaitable[trio.abc.Stream]]:
    """How a raft link to ``nid`` opens its byte stream: ``connect`` (plain TCP) without TLS;
    with it, a TLS stream whose peer certificate must name ``nid`` (anything else is refused
    before the hello is sent). Moved here from univrs/net/transport.py in session 19."""
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
