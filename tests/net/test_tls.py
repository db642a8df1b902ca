"""Certificates (``univrs.net.certs``), TLS contexts and their reload (``univrs.net.tls``), and
mutual TLS on real raft links between transports on loopback."""

from __future__ import annotations

import logging
import os
import pathlib
import ssl

import pytest
import trio
from cryptography import x509

from tests.net.helpers import heartbeat, make_transport, receive, wait_until
from univrs.net import certs
from univrs.net.tls import (
    CLIENT_URI_PREFIX,
    NODE_URI_PREFIX,
    TlsContexts,
    TlsFiles,
    client_context,
    identity_of,
)


@pytest.fixture
def ca(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "certs"
    certs.create_ca(folder)
    return folder


def _load(path: pathlib.Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def node_files(folder: pathlib.Path, node_id: str, **kw: str) -> TlsFiles:
    cert, key = certs.node_files(folder, node_id)
    if not cert.exists():
        certs.create_node(folder, node_id, ["127.0.0.1", "localhost"])
    return TlsFiles(ca_cert=folder / certs.CA_CERT, cert=cert, key=key, **kw)


# ------------------------------------------------------------------ certificate generation


def test_keys_are_private_and_certificates_name_who_they_are_for(ca: pathlib.Path) -> None:
    old = os.umask(0)  # even a permissive umask must not make a key readable by others
    try:
        cert, key = certs.create_node(ca, "n1", ["127.0.0.1", "n1.example"])
        ccert, ckey = certs.create_client(ca, "ops")
    finally:
        os.umask(old)
    for path in (ca / certs.CA_KEY, key, ckey):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert cert.stat().st_mode & 0o777 == 0o644
    authority = _load(ca / certs.CA_CERT)
    node = _load(cert)
    node.verify_directly_issued_by(authority)
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"{NODE_URI_PREFIX}n1"]
    assert sans.get_values_for_type(x509.DNSName) == ["n1.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    client = _load(ccert)
    client.verify_directly_issued_by(authority)
    csans = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert csans.get_values_for_type(x509.UniformResourceIdentifier) == [f"{CLIENT_URI_PREFIX}ops"]
    cusage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH not in cusage  # cannot serve


def test_nothing_is_overwritten_unless_asked(ca: pathlib.Path) -> None:
    cert, _key = certs.create_node(ca, "n1", ["127.0.0.1"])
    first = cert.read_bytes()
    with pytest.raises(certs.CertError, match="exists"):
        certs.create_node(ca, "n1", ["127.0.0.1"])
    with pytest.raises(certs.CertError, match="exists"):
        certs.create_ca(ca)
    assert cert.read_bytes() == first
    certs.create_node(ca, "n1", ["127.0.0.1"], overwrite=True)
    assert cert.read_bytes() != first


def test_bad_requests_are_refused(ca: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with pytest.raises(certs.CertError, match="node id"):
        certs.create_node(ca, "../n1", ["127.0.0.1"])
    with pytest.raises(certs.CertError, match="--host"):
        certs.create_node(ca, "n1", [])
    with pytest.raises(certs.CertError, match="create-ca"):
        certs.create_client(tmp_path / "nothing-here", "ops")


async def test_a_handshake_shows_each_side_who_the_other_is(ca: pathlib.Path) -> None:
    server = TlsContexts(node_files(ca, "n1")).server()
    cert, key = certs.create_client(ca, "ops")
    client = client_context(ca / certs.CA_CERT, cert, key)
    left, right = trio.testing.memory_stream_pair()
    ours = trio.SSLStream(left, client, server_hostname="127.0.0.1")
    theirs = trio.SSLStream(right, server, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.do_handshake)
        nursery.start_soon(theirs.do_handshake)
    seen_by_client = identity_of(ours.getpeercert())
    seen_by_server = identity_of(theirs.getpeercert())
    assert seen_by_client is not None and seen_by_client.node_id == "n1"
    assert seen_by_server is not None
    assert (seen_by_server.node_id, seen_by_server.client) == (None, "ops")


# ------------------------------------------------------------------ reload (rotation)


def test_contexts_are_rebuilt_when_the_files_change(ca: pathlib.Path) -> None:
    tls = TlsContexts(node_files(ca, "n1"))
    first = tls.server()
    assert tls.server() is first  # unchanged files: the same context
    certs.create_node(ca, "n1", ["127.0.0.1"], overwrite=True)
    second = tls.server()
    assert second is not first and tls.reloads == 1


def test_a_half_rotated_pair_keeps_the_old_context(
    ca: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = node_files(ca, "n1")
    tls = TlsContexts(files)
    first = tls.server()
    other_cert, _ = certs.create_node(ca, "n2", ["127.0.0.1"])
    assert files.cert is not None
    files.cert.write_bytes(other_cert.read_bytes())  # a new certificate, the old key
    with caplog.at_level(logging.WARNING, logger="univrs.tls"):
        assert tls.server() is first
    assert "keeping the old ones" in caplog.text


# ------------------------------------------------------------------ raft links


async def test_mutual_tls_delivers_between_nodes(ca: pathlib.Path) -> None:
    b, b_inbox = make_transport("n2", tls=TlsContexts(node_files(ca, "n2")))
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)
        a, _ = make_transport(
            "n1",
            peers={"n2": f"127.0.0.1:{b.listen_port}"},
            tls=TlsContexts(node_files(ca, "n1")),
        )
        await nursery.start(a.run)
        a.send(heartbeat("n1", "n2"))
        msg = await receive(b_inbox)
        assert msg.src == "n1"
        nursery.cancel_scope.cancel()


async def test_a_certificate_for_another_node_cannot_send_a_message(
    ca: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    b, b_inbox = make_transport("n2", tls=TlsContexts(node_files(ca, "n2")))
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)
        # n3 holds a valid certificate of the cluster CA, but it names n8.
        impostor, _ = make_transport(
            "n3",
            peers={"n2": f"127.0.0.1:{b.listen_port}"},
            tls=TlsContexts(node_files(ca, "n8")),
        )
        await nursery.start(impostor.run)
        impostor.send(heartbeat("n3", "n2"))
        await wait_until(lambda: b.statistics().refused_certificates >= 1)
        assert "certificate is for 'n8'" in caplog.text
        nursery.cancel_scope.cancel()
    assert b_inbox.statistics().current_buffer_used == 0
    assert "n3" not in {p.id for p in b.statistics().peers}  # not one message counted


async def test_a_client_certificate_or_none_is_refused_on_raft(ca: pathlib.Path) -> None:
    b, b_inbox = make_transport("n2", tls=TlsContexts(node_files(ca, "n2")))
    cert, key = certs.create_client(ca, "ops")

    async def client_connector(host: str, port: int) -> trio.abc.Stream:
        return await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=client_context(ca / certs.CA_CERT, cert, key)
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)
        # A transport with no TLS of its own, dialing through a client certificate.
        a, _ = make_transport(
            "n1", peers={"n2": f"127.0.0.1:{b.listen_port}"}, connector=client_connector
        )
        await nursery.start(a.run)
        a.send(heartbeat("n1", "n2"))
        await wait_until(lambda: b.statistics().refused_certificates >= 1)
        # And plaintext to the TLS port.
        plain, _ = make_transport("n4", peers={"n2": f"127.0.0.1:{b.listen_port}"})
        await nursery.start(plain.run)
        plain.send(heartbeat("n4", "n2"))
        await wait_until(lambda: b.statistics().refused_certificates >= 2)
        nursery.cancel_scope.cancel()
    assert b_inbox.statistics().current_buffer_used == 0


async def test_a_dialer_refuses_a_listener_with_another_nodes_certificate(
    ca: pathlib.Path,
) -> None:
    # The address a's map gives for n2 is served by n3 (valid certificate, wrong node).
    c, c_inbox = make_transport("n3", tls=TlsContexts(node_files(ca, "n3")))
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run)
        a, _ = make_transport(
            "n1",
            peers={"n2": f"127.0.0.1:{c.listen_port}"},
            tls=TlsContexts(node_files(ca, "n1")),
        )
        await nursery.start(a.run)
        a.send(heartbeat("n1", "n2"))
        await wait_until(lambda: a.statistics().peer("n2").connect_failures >= 1)
        assert not a.statistics().peer("n2").connected
        nursery.cancel_scope.cancel()
    assert c_inbox.statistics().current_buffer_used == 0


def test_client_context_needs_readable_files(tmp_path: pathlib.Path) -> None:
    with pytest.raises((OSError, ssl.SSLError)):
        client_context(tmp_path / "missing.crt")


def test_the_certs_command_makes_a_usable_set(tmp_path: pathlib.Path) -> None:
    from click.testing import CliRunner

    from univrs.cli.root import main

    folder = str(tmp_path / "c")
    runner = CliRunner()
    for args in (
        ["certs", "create-ca", "--certs-dir", folder],
        ["certs", "create-node", "--node-id", "n1", "--host", "127.0.0.1", "--certs-dir", folder],
        ["certs", "create-client", "ops", "--certs-dir", folder],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    again = runner.invoke(main, ["certs", "create-client", "ops", "--certs-dir", folder])
    assert again.exit_code == 2 and "exists" in again.output
    listed = runner.invoke(main, ["certs", "list", "--certs-dir", folder])
    assert "univrs://node/n1" in listed.output and "univrs://client/ops" in listed.output
    files = TlsFiles(
        ca_cert=tmp_path / "c" / "ca.crt",
        cert=tmp_path / "c" / "node.n1.crt",
        key=tmp_path / "c" / "node.n1.key",
    )
    TlsContexts(files).server()  # loads


async def test_the_probe_travels_over_tls_and_answers_nodes_only(ca: pathlib.Path) -> None:
    from univrs.net.probe import PROBE_PATH, ProbeAnswer, ProbeQuestion, ask_peer, probe_route

    b, _ = make_transport("n1", tls=TlsContexts(node_files(ca, "n1")))
    asked: list[ProbeQuestion] = []

    def answer(q: ProbeQuestion) -> ProbeAnswer:
        asked.append(q)
        return ProbeAnswer(node="n1", same_cluster=True, history=True, member=True, bound=None)

    b.add_route(PROBE_PATH, probe_route(answer, 2.0, admit=b.refuse_without_node_certificate))
    question = ProbeQuestion(src="n3", cluster="c")
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)
        addr = f"127.0.0.1:{b.listen_port}"
        node = TlsContexts(node_files(ca, "n3")).client()
        got = await ask_peer(addr, question, timeout=5, ssl_context=node)
        assert got is not None and got.node == "n1"
        cert, key = certs.create_client(ca, "ops")
        client = client_context(ca / certs.CA_CERT, cert, key)
        assert await ask_peer(addr, question, timeout=5, ssl_context=client) is None
        assert await ask_peer(addr, question, timeout=5) is None  # plaintext
        nursery.cancel_scope.cancel()
    assert len(asked) == 1  # only the node was answered
    assert b.statistics().refused_certificates == 2
