"""Tokens with real processes: a 3-node cluster with `[auth] enabled = true`, driven by the CLI
with UNIVRS_TOKEN and by plain HTTP."""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable
from typing import Any

from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

from .conftest import DEADLINE, serving_leader
from .conftest import call as call_api
from .conftest import univrs as run_cli

AUTH = "[auth]\nenabled = true\n"


def univrs(api: str, token: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI against ``api`` as ``token``'s holder (the environment, as a user sets it)."""
    return run_cli(*args, timeout=120, env={"UNIVRS_API": api, "UNIVRS_TOKEN": token or ""})


def call(
    node: NodeProc, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    return call_api(node, method, path, body, token=token)


def leads(node: NodeProc) -> bool:
    view = node.status()
    return bool(view and view["role"] == "leader")


def test_tokens_and_roles_across_processes(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(size=3, extra_config=AUTH)
    cluster.start_all()
    leader = serving_leader(cluster)
    follower = next(n for n in cluster.nodes if n.node_id != leader.node_id)
    api = follower.api_addr

    status, body = call(follower, "GET", "/v1/workloads", None)
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    boot = univrs(api, None, "token", "bootstrap", "--json")
    assert boot.returncode == 0, boot.stderr
    admin = json.loads(boot.stdout)["secret"]

    def token(role: str) -> str:
        made = univrs(api, admin, "token", "create", "--role", role, f"{role}-ci", "--json")
        assert made.returncode == 0, made.stderr
        return str(json.loads(made.stdout)["secret"])

    read, write = token("read"), token("write")

    def known_everywhere(secret: str) -> bool:
        return all(call(n, "GET", "/v1/workloads", secret)[0] == 200 for n in cluster.nodes)

    wait_for(lambda: known_everywhere(read) and known_everywhere(write), DEADLINE, "tokens")

    spec = {"spec": {"name": "web", "image": "nginx"}}
    assert call(follower, "POST", "/v1/workloads", read, spec)[0] == 403
    assert call(follower, "POST", "/v1/workloads", write, spec)[0] == 201
    mint = {"to_peer": "alice", "amount": 3, "reason": "test"}
    assert call(follower, "POST", "/v1/credits/mint", write, mint)[0] == 403
    assert call(follower, "DELETE", f"/v1/cluster/members/{follower.node_id}", write)[0] == 403
    assert call(follower, "POST", "/v1/credits/mint", admin, mint)[0] == 200

    # The CLI with UNIVRS_TOKEN, through a follower (writes are forwarded with the token).
    for args in (
        ("workload", "list"),
        ("workload", "create", "--name", "api", "--image", "nginx", "--id", "api"),
        ("workload", "scale", "api", "2"),
        ("credits", "balance", "alice"),
        ("cluster", "members"),
        ("cluster", "status"),
        ("token", "list"),
    ):
        done = univrs(api, admin, *args)
        assert done.returncode == 0, (args, done.stderr)
    denied = univrs(api, read, "workload", "delete", "api")
    assert denied.returncode == 1 and "permission-denied" in denied.stderr
    members = univrs(api, write, "cluster", "members")
    assert members.returncode != 0

    # Revoke the write token: every process refuses it once the revoke applied there.
    listed = univrs(api, admin, "token", "list", "--json")
    write_id = next(t["id"] for t in json.loads(listed.stdout)["items"] if t["name"] == "write-ci")
    assert univrs(leader.api_addr, admin, "token", "revoke", write_id).returncode == 0
    wait_for(
        lambda: all(call(n, "GET", "/v1/workloads", write)[0] == 401 for n in cluster.nodes),
        DEADLINE,
        "the revoke on every node",
    )


def test_join_a_cluster_with_auth_carries_the_callers_token(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(size=2, extra_config=AUTH)
    cluster.bootstrap = False  # two single-node clusters; n2 joins n1's
    cluster.start_all()
    n1, n2 = cluster.nodes
    for n in cluster.nodes:
        wait_for(functools.partial(leads, n), DEADLINE, "boot")
    boot = univrs(n1.api_addr, None, "token", "bootstrap", "--json")
    assert boot.returncode == 0, boot.stderr
    admin = json.loads(boot.stdout)["secret"]

    refused = univrs(n2.api_addr, None, "cluster", "join", n1.api_addr)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    joined = univrs(n2.api_addr, admin, "cluster", "join", n1.api_addr)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert "as a voter" in joined.stdout
    # n2 now holds n1's tokens (replicated): the admin token works there, nothing else does.
    wait_for(lambda: call(n2, "GET", "/v1/cluster/members", admin)[0] == 200, DEADLINE, "n2")
    assert call(n2, "GET", "/v1/cluster/members", None)[0] == 401
