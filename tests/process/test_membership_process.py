"""Membership and snapshots with real processes: join, snapshot install, leader removal."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any

from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

from .conftest import DEADLINE, MakeCluster, call, leads, serving_leader, univrs, view

SNAPSHOTS = "snapshot_threshold = 40\nsnapshot_trailing_entries = 10\n"


def write_workloads(node: NodeProc, prefix: str, count: int) -> None:
    for i in range(count):
        spec = {"name": f"{prefix}-{i}", "image": "nginx"}
        status, doc = call(node, "POST", "/v1/workloads", {"id": f"{prefix}-{i}", "spec": spec})
        assert status == 201, doc


def digest(node: NodeProc) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = node.get("/v1/node/digest", timeout=5)
        return doc
    except (OSError, ValueError):
        return None


def same_state(a: NodeProc, b: NodeProc) -> bool:
    da, db = digest(a), digest(b)
    return bool(
        da
        and db
        and da["applied_index"] == db["applied_index"]
        and da["state_digest"] == db["state_digest"]
    )


def agreed_leader(a: NodeProc, b: NodeProc) -> bool:
    """Do ``a`` and ``b`` both answer and name the same leader?"""
    sa, sb = a.status(), b.status()
    return bool(sa and sb and sa.get("leader") and sa.get("leader") == sb.get("leader"))


def start_joining(node: NodeProc, target: NodeProc) -> None:
    """`univrs node start --config ... --join target` in the background."""
    with open(node.log_path, "ab") as logf:
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "univrs", "node", "start", "--config", str(node.config_path),
             "--join", target.api_addr],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    node.pid_path.write_text(str(node.proc.pid))


def joined_cluster(make_cluster: MakeCluster, extra: str = "") -> LocalCluster:
    """Three single-node processes; n2 and n3 join n1 with `univrs cluster join`."""
    cluster: LocalCluster = make_cluster(3, extra_config=extra)
    cluster.bootstrap = False
    cluster.start_all()
    n1, n2, n3 = cluster.nodes
    for n in cluster.nodes:
        wait_for(functools.partial(leads, n), DEADLINE, "boot")
    for joiner in (n2, n3):
        result = univrs("cluster", "join", n1.api_addr, "--api", joiner.api_addr)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "as a voter" in result.stdout
    return cluster


def test_join_snapshot_install_and_catch_up(make_cluster: MakeCluster) -> None:
    cluster = joined_cluster(make_cluster, SNAPSHOTS)
    views = [n.status() for n in cluster.nodes]
    assert all(v and v["voters"] == ["n1", "n2", "n3"] for v in views), views
    assert len({(v["leader"], v["term"]) for v in views if v}) == 1
    leader = cluster.wait_leader(DEADLINE)
    write_workloads(leader, "a", 150)  # several snapshots (threshold 40)
    wait_for(
        lambda: all((v := n.status()) and v["snapshot_index"] > 0 for n in cluster.nodes),
        DEADLINE,
        "every node to take a snapshot",
    )
    follower = next(n for n in cluster.nodes if n is not leader)
    cluster.stop(follower)
    stopped_at = digest(leader)
    assert stopped_at is not None
    write_workloads(leader, "b", 150)  # far more than the 10 trailing entries
    wait_for(
        lambda: (v := leader.status()) and v["first_index"] > stopped_at["applied_index"] + 1,
        DEADLINE,
        "the leader to compact past the stopped follower",
    )
    cluster.start(follower)
    wait_for(lambda: same_state(leader, follower), DEADLINE, "the follower to catch up")
    assert "snapshot installed" in follower.log_path.read_text()
    result = univrs("cluster", "members", "--api", follower.api_addr, "--json")
    members = json.loads(result.stdout)["members"]
    assert sorted(m["id"] for m in members) == ["n1", "n2", "n3"]
    assert all(m["kind"] == "voter" for m in members)


def test_removing_the_leader_elects_another_and_writes_go_on(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    leader = serving_leader(cluster)  # we ask a follower's API
    rest = [n for n in cluster.nodes if n is not leader]
    result = univrs("cluster", "remove", leader.node_id, "--api", rest[0].api_addr)
    assert result.returncode == 0, result.stdout + result.stderr
    new = wait_for(lambda: cluster.leader(rest), DEADLINE, "a leader among the rest")
    assert new is not leader
    write_workloads(new, "after", 5)
    view = new.status()
    assert view is not None and leader.node_id not in view["voters"]


def test_interrupted_join_can_be_retried_or_removed(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(2)
    cluster.bootstrap = False
    cluster.write_configs()
    n1, n2 = cluster.nodes
    cluster.start(n1)
    wait_for(lambda: (v := n1.status()) and v["role"] == "leader", DEADLINE, "n1 to lead")
    write_workloads(n1, "w", 20)
    # A join that got as far as "learner" before the joining process died.
    status, doc = call(n1, "POST", "/v1/cluster/members", {"id": "n2", "raft_addr": n2.raft_addr})
    assert status == 201, doc
    # Clean-up: an operator removes the half-joined node.
    result = univrs("cluster", "remove", "n2", "--api", n1.api_addr)
    assert result.returncode == 0, result.stderr
    assert view(n1)["learners"] == []
    # Retry: add it again, then the node itself resumes the join on its empty data dir.
    status, doc = call(n1, "POST", "/v1/cluster/members", {"id": "n2", "raft_addr": n2.raft_addr})
    assert status == 201, doc
    start_joining(n2, n1)
    wait_for(
        lambda: (v := n1.status()) and v["voters"] == ["n1", "n2"], DEADLINE, "n2 to be a voter"
    )
    wait_for(lambda: same_state(n1, n2), DEADLINE, "n2 to hold the same state")
    # Restarting the member with the very same `--join` command (a service unit) just works.
    cluster.stop(n2)  # (two voters: nothing commits while it is down)
    start_joining(n2, n1)
    # Without n2, n1 lost its quorum and stepped down: write once both follow one leader again.
    wait_for(lambda: agreed_leader(n1, n2), DEADLINE, "the two voters to agree on a leader")
    write_workloads(n1, "x", 3)
    wait_for(lambda: same_state(n1, n2), DEADLINE, "the restarted member to catch up")
    assert view(n1)["voters"] == ["n1", "n2"]


def test_join_refuses_a_taken_id_and_an_unreachable_address(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(2)
    cluster.bootstrap = False
    cluster.start_all()
    n1, n2 = cluster.nodes
    for n in cluster.nodes:
        wait_for(functools.partial(leads, n), DEADLINE, "boot")
    unreachable = univrs("cluster", "join", "127.0.0.1:1", "--api", n2.api_addr)
    assert unreachable.returncode != 0 and "cannot reach" in unreachable.stderr
    # n2 pretends to be n1: a node id already in the cluster is refused.
    status, doc = call(n1, "POST", "/v1/cluster/members", {"id": "n1", "raft_addr": n2.raft_addr})
    assert status == 409 and "already a voter" in doc["error"]["message"]
    write_workloads(n2, "mine", 1)  # n2 now holds data of its own cluster
    refused = univrs("cluster", "join", n1.api_addr, "--api", n2.api_addr)
    assert refused.returncode != 0 and "already holds data" in refused.stderr


def test_transfer_leader_and_leave_from_the_cli(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader(DEADLINE)
    target = next(n for n in cluster.nodes if n is not leader)
    result = univrs("cluster", "transfer-leader", target.node_id, "--api", leader.api_addr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"leader is now {target.node_id}" in result.stdout
    assert cluster.wait_leader(DEADLINE) is target
    # The leader leaves gracefully: it hands leadership over first, then is removed.
    result = univrs("cluster", "leave", "--api", target.api_addr)
    assert result.returncode == 0, result.stdout + result.stderr
    rest = [n for n in cluster.nodes if n is not target]
    new = wait_for(lambda: cluster.leader(rest), DEADLINE, "a leader among the others")
    view = new.status()
    assert view is not None and sorted(view["voters"]) == sorted(n.node_id for n in rest)
    write_workloads(new, "after-leave", 3)


def test_join_with_a_data_dir_of_another_cluster_is_refused(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(2)
    cluster.bootstrap = False
    cluster.start_all()
    n1, n2 = cluster.nodes
    for n in cluster.nodes:
        wait_for(functools.partial(leads, n), DEADLINE, "boot")
    write_workloads(n2, "own", 1)
    cluster.stop(n2)
    result = univrs(
        "node", "start", "--config", str(n2.config_path), "--join", n1.api_addr, timeout=60
    )
    assert result.returncode != 0
    assert "belongs to cluster" in result.stderr
