"""A secured three-node cluster (the same path as `scripts/cluster start`): mutual TLS between
peers, client certificates, the join check, certificate rotation, and the insecure-refusal
rule, against real node processes on loopback.

A raft connection without a valid certificate -- none, one from another CA, or a valid one
whose node id is not the hello's ``src`` -- is refused at the handshake and delivers no
message: the node's own count of messages received from the claimed sender stays at zero,
while a connection with the right certificate gets its (harmless, stale) message counted.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    connect_websocket,
)

from tests.process.conftest import DEADLINE, serving_leader
from univrs.client.sync import SyncClient
from univrs.codec import encode_message
from univrs.net import certs
from univrs.net.address import split_host_port
from univrs.net.hello import WIRE_VERSION, Hello, encode_hello
from univrs.net.tls import client_context, identity_of
from univrs.raft.messages import Heartbeat
from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

FAKE = "n9"  # the sender our forged connections claim to be (never a member)
ATTEMPT = 20.0  # seconds for a forged connection to get through its handshakes (loaded CI)


@pytest.fixture
def secure(tmp_path: pathlib.Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster.with_free_ports(tmp_path / "cluster", size=3, spares=1, tls=True)
    cluster.start_all()
    try:
        serving_leader(cluster)  # the tests ask followers too
        yield cluster
    finally:
        cluster.stop_all()


def _transport(node: NodeProc) -> dict[str, Any]:
    status = node.status()
    assert status is not None, f"{node.node_id} does not answer"
    doc: dict[str, Any] = status["transport"]
    return doc


async def _raft_attempt(
    node: NodeProc, context: ssl.SSLContext | None, src: str, cluster: str
) -> str:
    """Dial ``node``'s raft listener as ``src``, send a hello and one stale Heartbeat, and say
    how it went: "refused" at the TLS or websocket handshake, "closed: <reason>" when the
    node closed the connection after the hello, "delivered" when the node counted the
    Heartbeat as received from ``src``.

    With TLS 1.3 a client learns that the server refused its certificate only at its next
    read, and trio-websocket then never finishes its handshake: a handshake that does not
    finish within ``ATTEMPT`` counts as refused too (the node's counters are the proof)."""
    host, port = split_host_port(node.raft_addr)
    hello = Hello(
        version=WIRE_VERSION,
        cluster=cluster,
        src=src,
        dst=node.node_id,
        incarnation=None,
        expect=None,
        addr=None,
    )
    beat = Heartbeat(term=0, src=src, dst=node.node_id, commit=0)
    seen = _transport(node)["messages_received"].get(src, 0)
    result = "neither closed nor delivered"
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(ATTEMPT):
                ws = await connect_websocket(nursery, host, port, "/raft", use_ssl=context or False)
                await ws.send_message(encode_hello(hello))
                await ws.send_message(encode_message(beat))
        except ConnectionClosed as exc:
            # The node may close after the hello before our Heartbeat is sent: a close frame
            # with a reason is the node's answer to the hello, not a handshake refusal.
            nursery.cancel_scope.cancel()
            # (1006, abnormal closure, means no close frame came: the handshake failed.)
            answered = exc.reason is not None and exc.reason.code != 1006
            return f"closed: {exc.reason}" if answered else "refused"
        except (
            ConnectionRejected,
            HandshakeError,
            trio.BrokenResourceError,
            trio.TooSlowError,
            OSError,
        ):
            nursery.cancel_scope.cancel()
            return "refused"

        async def closed() -> None:
            nonlocal result
            try:
                await ws.get_message()  # the node never sends on this connection
            except ConnectionClosed as exc:
                result = f"closed: {exc.reason}"
            nursery.cancel_scope.cancel()

        def counted() -> bool:
            return bool(_transport(node)["messages_received"].get(src, 0) > seen)

        async def delivered() -> None:
            nonlocal result
            with contextlib.suppress(TimeoutError):
                await trio.to_thread.run_sync(lambda: wait_for(counted, DEADLINE, "delivery"))
                result = "delivered"
            nursery.cancel_scope.cancel()

        nursery.start_soon(closed)
        nursery.start_soon(delivered)
    with trio.move_on_after(1.0):
        await ws.aclose()
    return result


def _api_json(
    node: NodeProc, path: str, context: ssl.SSLContext | None, body: Any = None, **headers: str
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"https://{node.api_addr}{path}",
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def test_raft_links_demand_a_node_certificate_naming_the_sender(
    secure: LocalCluster, tmp_path: pathlib.Path
) -> None:
    leader = secure.wait_leader(DEADLINE)
    target = next(n for n in secure.nodes[:3] if n is not leader)  # a follower is just as good
    before = _transport(target)
    assert before["tls"] is True
    ca = secure.certs_dir / certs.CA_CERT

    # 1. No certificate at all: refused at the handshake.
    outcome = await _raft_attempt(target, client_context(ca), FAKE, secure.cluster_id)
    assert outcome == "refused"

    # 2. A node certificate for the same id, from another CA: refused at the TLS handshake.
    other = tmp_path / "other-ca"
    certs.create_ca(other)
    cert, key = certs.create_node(other, FAKE, ["127.0.0.1"])
    foreign = client_context(other / certs.CA_CERT, cert, key)
    foreign.load_verify_locations(ca)  # so that our side accepts the node's certificate
    outcome = await _raft_attempt(target, foreign, FAKE, secure.cluster_id)
    assert outcome == "refused"

    # 3. A valid certificate of the cluster CA, for another node than the hello claims.
    cert, key = certs.create_node(secure.certs_dir, "n8", ["127.0.0.1"])
    impostor = client_context(ca, cert, key)
    outcome = await _raft_attempt(target, impostor, FAKE, secure.cluster_id)
    assert outcome.startswith("closed") and "POLICY_VIOLATION" in outcome, outcome

    after = _transport(target)
    assert after["messages_received"].get(FAKE, 0) == 0
    # The impostor is counted before its connection closes. A failed TLS handshake is counted
    # when the node's side of it ends, which on a loaded machine may be after the dialer gave
    # up and hung up (then it is an aborted connection, not a refused certificate): the
    # handshake refusals are counted in tests/net/test_tls.py, where nothing races.
    assert after["refused_certificates"] >= before["refused_certificates"] + 1

    # Control: the right certificate for the claimed id gets its message delivered (and
    # counted), so the zeros above mean something.
    cert, key = certs.create_node(secure.certs_dir, FAKE, ["127.0.0.1"])
    outcome = await _raft_attempt(target, client_context(ca, cert, key), FAKE, secure.cluster_id)
    assert outcome == "delivered"
    assert secure.wait_leader(DEADLINE).node_id == leader.node_id


def test_clients_with_certificates_work_and_others_are_refused(secure: LocalCluster) -> None:
    leader = secure.wait_leader(DEADLINE)
    ca, cert, key = secure.client_files("ops")
    with SyncClient(api=leader.api_addr, ssl_context=client_context(ca, cert, key)) as client:
        client.mint_credits("alice", 100, "tls test")
        assert client.balance("alice")["balance"] == 100

    # REST without a client certificate (client_auth = "require"): no answer at all.
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        _api_json(leader, "/v1/health", client_context(ca))
    # Plain HTTP to the HTTPS port: nothing either.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://{leader.api_addr}/v1/health", timeout=5)
    # The CLI with the certificate in its environment.
    env = {
        "UNIVRS_API": f"https://{leader.api_addr}",
        "UNIVRS_CA_CERT": str(ca),
        "UNIVRS_CLIENT_CERT": str(cert),
        "UNIVRS_CLIENT_KEY": str(key),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "univrs", "credits", "balance", "alice", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout)["balance"] == 100
    out = subprocess.run(
        [sys.executable, "-m", "univrs", "cluster", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout)["leader"] == leader.node_id
    backup = secure.folder / "backup.univrs"
    out = subprocess.run(
        [sys.executable, "-m", "univrs", "snapshot", "save", str(backup)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert backup.stat().st_size > 0


def test_join_needs_the_token_or_the_joiners_node_certificate(secure: LocalCluster) -> None:
    leader = secure.wait_leader(DEADLINE)
    client = secure.client_ssl("ops")  # a valid client certificate: not the joiner's
    member = {"id": "n7", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"}
    status, doc = _api_json(leader, "/v1/cluster/members", client, member)
    assert status == 403 and doc["error"]["code"] == "permission-denied", doc
    status, doc = _api_json(
        leader, "/v1/cluster/members", client, member, **{"X-Univrs-Join-Token": "wrong" * 4}
    )
    assert status == 403, doc
    members = {m["id"] for m in _api_json(leader, "/v1/cluster/members", client)[1]["members"]}
    assert "n7" not in members

    # The spare joins with its node certificate alone (no token in its config), through a
    # follower (which forwards to the leader, showing its own node certificate).
    spare = secure.node("n4")
    config = spare.config_path.read_text()
    token_line = f'token_file = "{secure.join_token_path}"\n'
    assert token_line in config
    spare.config_path.write_text(config.replace("[join]\n" + token_line, ""))
    follower = next(n for n in secure.nodes[:3] if n is not leader)
    secure.start(spare, join=follower.api_addr)

    def joined() -> bool:
        join = (spare.status() or {}).get("join") or {}
        return bool(join.get("state") == "voter")

    wait_for(joined, 90.0, "n4 to join as a voter")
    assert secure.wait_leader(DEADLINE).node_id == leader.node_id


def test_a_rotated_node_certificate_serves_new_connections_and_the_leader_stays(
    secure: LocalCluster,
) -> None:
    leader = secure.wait_leader(DEADLINE)
    term = leader.status()["term"]  # type: ignore[index]
    node = secure.nodes[0]
    ca = secure.certs_dir / certs.CA_CERT

    def serial(addr: str) -> int:
        host, port = split_host_port(addr)
        context = client_context(ca, *secure.client_files("ops")[1:])
        import socket

        with (
            socket.create_connection((host, port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            seen = identity_of(tls.getpeercert())
        assert seen is not None and seen.node_id == node.node_id
        from cryptography import x509

        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    old = serial(node.raft_addr)
    assert serial(node.api_addr) == old
    certs.create_node(secure.certs_dir, node.node_id, ["127.0.0.1", "localhost"], overwrite=True)
    new = serial(node.raft_addr)
    assert new != old
    assert serial(node.api_addr) == new
    after = secure.wait_leader(DEADLINE)
    assert after.node_id == leader.node_id
    assert after.status()["term"] == term  # type: ignore[index]


@pytest.mark.parametrize(
    "flags",
    [["--raft-addr", "0.0.0.0:0"], ["--api-addr", "0.0.0.0:0"]],
    ids=["raft", "api"],
)
def test_a_node_beyond_loopback_without_tls_refuses_to_start(
    tmp_path: pathlib.Path, flags: list[str]
) -> None:
    cmd = [sys.executable, "-m", "univrs", "node", "start", "--data-dir", str(tmp_path / "d")]
    out = subprocess.run([*cmd, *flags], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "no TLS is configured" in out.stderr and "--insecure" in out.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything


def test_a_node_with_unloadable_tls_files_refuses_to_start(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "certs"
    certs.create_ca(folder)
    cert, _key = certs.create_node(folder, "n1", ["127.0.0.1"])
    _other_cert, other_key = certs.create_node(folder, "n2", ["127.0.0.1"])
    cmd = [sys.executable, "-m", "univrs", "node", "start", "--data-dir", str(tmp_path / "d")]
    cmd += ["--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"]
    cmd += ["--ca-cert", str(folder / "ca.crt"), "--cert", str(cert), "--key", str(other_key)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "bad TLS files" in out.stderr
