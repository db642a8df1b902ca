"""The secure default end to end: `scripts/cluster start` brings up three nodes with mutual TLS
and API tokens, `scripts/cluster env` points the CLI at them, and then

* a raft connection without a valid certificate is refused at the handshake;
* a client with a certificate but no token gets 401;
* a `read` token cannot write, a `write` token cannot mint or change membership, an `admin`
  token can;
* the CLI's commands work with the certificates and UNIVRS_TOKEN set (issue 12, "Done when").
"""

from __future__ import annotations

import json
import pathlib
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

import pytest
import trio

from tests.process.test_tls_process import FAKE, _api_json, _raft_attempt
from univrs.net.tls import client_context
from univrs.tools.devcluster import LocalCluster

from .conftest import univrs

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_base_port() -> int:
    """A base port whose nodes' ports (base+1..3 and base+101..103) are free right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1]) - 1
        if base + 103 > 65535:
            continue
        ports = [base + i for i in (1, 2, 3, 101, 102, 103)]
        try:
            held = []
            for p in ports:
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError("no free port range")


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "cluster"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )


@pytest.fixture
def started(tmp_path: pathlib.Path) -> Iterator[tuple[LocalCluster, dict[str, str]]]:
    folder = tmp_path / "secure"
    base = _free_base_port()
    try:
        result = _script("start", "--dir", str(folder), "--base-port", str(base))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "mutual TLS, API tokens" in result.stdout, result.stdout
        env = _exports(_script("env", "--dir", str(folder), "--base-port", str(base)).stdout)
        cluster = LocalCluster.plan(folder, size=3, base_port=base, tls=True)
        yield cluster, env
    finally:
        _script("stop", "--dir", str(folder))  # by the PIDs it recorded


def _exports(text: str) -> dict[str, str]:
    """The variables of `scripts/cluster env` (``$(cat FILE)`` read as the shell would)."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if value.startswith("$(cat ") and value.endswith(")"):
            value = pathlib.Path(value[len("$(cat ") : -1]).read_text().strip()
        env[name] = value
    return env


def _cli(
    env: dict[str, str], *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    full = dict(env) if token is None else {**env, "UNIVRS_TOKEN": token}
    return univrs(*args, timeout=120, env=full)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _denied(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, result.stdout
    assert "permission-denied" in result.stderr or "lacks the role" in result.stderr, result.stderr


def test_the_default_local_cluster_is_secured_end_to_end(
    started: tuple[LocalCluster, dict[str, str]],
) -> None:
    cluster, env = started
    assert {"UNIVRS_API", "UNIVRS_CA_CERT", "UNIVRS_CLIENT_CERT", "UNIVRS_TOKEN"} <= set(env)
    assert env["UNIVRS_API"].startswith("https://")
    n1 = cluster.nodes[0]

    # Raft without a valid certificate: refused at the handshake, nothing delivered.
    no_cert = ssl.create_default_context(cafile=env["UNIVRS_CA_CERT"])
    no_cert.check_hostname = False
    assert trio.run(_raft_attempt, n1, None, FAKE, cluster.cluster_id) == "refused"
    assert trio.run(_raft_attempt, n1, no_cert, FAKE, cluster.cluster_id) == "refused"

    # A client with a certificate but no token: 401.
    client_tls = client_context(
        pathlib.Path(env["UNIVRS_CA_CERT"]),
        pathlib.Path(env["UNIVRS_CLIENT_CERT"]),
        pathlib.Path(env["UNIVRS_CLIENT_KEY"]),
    )
    status, body = _api_json(n1, "/v1/workloads", client_tls)
    assert status == 401 and body["error"]["code"] == "unauthenticated", body

    admin = env["UNIVRS_TOKEN"]
    secrets = {}
    for role in ("read", "write", "credits"):
        made = json.loads(
            _ok(_cli(env, "token", "create", "--role", role, f"{role}-e2e", "--json"))
        )
        secrets[role] = made["secret"]

    # read: reads only.
    _ok(_cli(env, "workload", "list", token=secrets["read"]))
    _denied(_cli(env, "workload", "create", "--name", "r", "--image", "i", token=secrets["read"]))
    # write: workloads, not credits, not membership.
    _ok(
        _cli(env, "workload", "create", "--name", "web", "--image", "nginx", token=secrets["write"])
    )
    _denied(_cli(env, "credits", "mint", "alice", "5", "--reason", "t", token=secrets["write"]))
    _denied(_cli(env, "cluster", "remove", "n3", token=secrets["write"]))
    _denied(_cli(env, "cluster", "members", token=secrets["write"]))
    # credits: mint.
    _ok(_cli(env, "credits", "mint", "alice", "5", "--reason", "t", token=secrets["credits"]))

    # admin (the CLI's UNIVRS_TOKEN): every command works with the certificates and token.
    for args in (
        ("cluster", "status"),
        ("cluster", "members"),
        ("workload", "get", "--name", "web"),
        ("workload", "scale", "--name", "web", "3"),
        ("nodeinfo", "register", "m1", "--cpu-millis", "4000", "--memory-bytes", "8000000000"),
        ("nodeinfo", "heartbeat", "m1"),
        ("nodeinfo", "list"),
        ("credits", "mint", "bob", "7", "--reason", "t"),
        ("credits", "transfer", "bob", "alice", "2"),
        ("credits", "balance", "alice"),
        ("token", "list"),
        ("watch", "workloads", "--from", "1", "--count", "1"),
        ("cluster", "snapshot"),
    ):
        _ok(_cli(env, *args, token=admin))
    web = json.loads(_ok(_cli(env, "workload", "get", "--name", "web", "--json")))
    _ok(_cli(env, "nodeinfo", "heartbeat", "m1"))  # its TTL (10 s) may have lapsed meanwhile
    _ok(_cli(env, "instance", "create", web["id"], "--node", "m1"))
    # The reconciler (on by default) places web's 3 replicas on m1 and removes the surplus
    # instance made by hand: wait until it has nothing left to do (m1's TTL may lapse under a
    # slow CLI, and then its instances go: the snapshot's count is not the point here).
    deadline = time.monotonic() + 60
    while not json.loads(_ok(_cli(env, "reconcile", "status", "--json")))["converged"]:
        assert time.monotonic() < deadline, "the reconciler did not converge"
        time.sleep(0.5)  # polls a condition, with the deadline above
    balance = _ok(_cli(env, "credits", "balance", "alice", "--json"))
    assert json.loads(balance)["balance"] == 7, balance
    backup = pathlib.Path(env["UNIVRS_CA_CERT"]).parent.parent / "backup.snap"
    _ok(_cli(env, "snapshot", "save", str(backup)))
    described = _ok(_cli(env, "snapshot", "status", str(backup)))
    assert re.search(r"1 workloads, \d+ instances, 1 nodes", described), described
