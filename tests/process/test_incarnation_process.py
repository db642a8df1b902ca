"""One id, one incarnation, with real processes: a voter whose data dir is wiped comes back as a
new incarnation, is refused (no second history, no vote, nothing counted), and the documented
replace command (`univrs cluster join --replace`) brings it back as a voter holding every
committed entry."""

from __future__ import annotations

import functools
import shutil
from typing import Any

from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

from .conftest import DEADLINE, MakeCluster, call, univrs
from .test_membership_process import same_state, write_workloads


def members(node: NodeProc) -> dict[str, dict[str, Any]]:
    status, doc = call(node, "GET", "/v1/cluster/members")
    assert status == 200, doc
    return {m["id"]: m for m in doc["members"]}


def all_bound(leader: NodeProc, cluster: LocalCluster) -> bool:
    rows = members(leader)
    return all(
        rows[n.node_id]["incarnation"] == (n.status() or {}).get("incarnation")
        for n in cluster.nodes
    )


def workload_ids(node: NodeProc) -> set[str]:
    doc = node.get("/v1/workloads?consistency=local&limit=1000", timeout=10)
    return {w["id"] for w in doc["items"]}


def holds(node: NodeProc, count: int) -> bool:
    """Does ``node`` hold exactly ``count`` workloads (read locally)?"""
    return len(workload_ids(node)) == count


def test_a_wiped_voter_is_refused_as_a_new_incarnation_then_replaced(
    make_cluster: MakeCluster,
) -> None:
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader(DEADLINE)
    write_workloads(leader, "before", 10)
    # Once the leader has committed in its term it records every member's incarnation.
    wait_for(lambda: all_bound(leader, cluster), DEADLINE, "every member bound")
    victim = next(n for n in cluster.nodes if n is not leader)
    others = [n for n in cluster.nodes if n is not victim]
    old = members(leader)[victim.node_id]["incarnation"]

    cluster.kill(victim)
    shutil.rmtree(victim.data_dir)
    # 1. The same config again: no second history. The peers show that this id served as
    #    another incarnation, so bootstrapping is refused with a clear message.
    refused = univrs("node", "start", "--config", str(victim.config_path), timeout=60)
    assert refused.returncode != 0
    assert "refusing to bootstrap a new cluster" in refused.stderr, refused.stderr
    assert f"{victim.node_id} is incarnation {old}" in refused.stderr
    assert "--replace" in refused.stderr

    # 2. Started to wait for a join, it is a stranger: the members refuse its connections
    #    (and it refuses theirs, which expect the old incarnation); it grants no vote.
    cluster.start(victim, initial_cluster_state="existing")
    view = wait_for(victim.status, DEADLINE, "the wiped node's API")
    new = view["incarnation"]
    assert new != old and view["term"] == 0 and view["vote"] is None
    refusal = f"the configuration lists {victim.node_id} as incarnation {old}, not {new}"
    wait_for(lambda: refusal in leader.log_path.read_text(), DEADLINE, "the leader's refusal")
    expected = f"{victim.node_id} is incarnation {new}, not {old}"
    wait_for(lambda: expected in victim.log_path.read_text(), DEADLINE, "the victim's refusal")
    # The others keep their state and go on committing; the stranger counts for nothing.
    write_workloads(leader, "during", 10)
    for n in others:
        wait_for(functools.partial(holds, n, 20), DEADLINE, "every write on the others")
    status = victim.status()
    assert status is not None and status["term"] == 0 and status["vote"] is None
    assert status["last_index"] == 0
    assert cluster.leader(others) is leader

    # A plain join under the taken id is refused, pointing at the replace.
    plain = univrs("cluster", "join", leader.api_addr, "--api", victim.api_addr)
    assert plain.returncode != 0 and "--replace" in plain.stderr, plain.stderr

    # 3. The documented operator path: one command replaces the old incarnation.
    result = univrs("cluster", "join", leader.api_addr, "--replace", "--api", victim.api_addr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "as a voter" in result.stdout
    rows = members(leader)
    assert rows[victim.node_id]["kind"] == "voter"
    replaced = rows[victim.node_id]["incarnation"]
    assert replaced not in (old, None)
    assert (victim.status() or {}).get("incarnation") == replaced
    write_workloads(leader, "after", 5)
    wait_for(lambda: same_state(leader, victim), DEADLINE, "the replaced member to catch up")
    assert workload_ids(victim) == workload_ids(leader)
    assert len(workload_ids(victim)) == 25
    # A restart keeps the incarnation: the member is itself again, not refused.
    cluster.stop(victim)
    cluster.start(victim)
    wait_for(
        lambda: (v := victim.status()) and v["incarnation"] == replaced and v["leader"],
        DEADLINE,
        "the restarted member to follow the leader",
    )
    write_workloads(leader, "restarted", 2)
    wait_for(lambda: same_state(leader, victim), DEADLINE, "the restarted member to catch up")
