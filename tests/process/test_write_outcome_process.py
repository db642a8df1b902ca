"""A write in flight on a leader that is cut off, while a new leader commits and compacts past
it (issue 10, bug 5), with real processes and the chaos fault proxy on every peer link.

The leader's inbound links are partitioned (its own messages still go out, so its append of
the write reaches the others); the others elect a new leader, which commits the write, writes
on and takes a snapshot that compacts its log past it; then the partition heals and the old
leader installs that snapshot over its pending proposal. The write must be applied exactly
once, and its client (on the old leader, no client-side retries) must get a success or an
unknown outcome, never a false 409/404. Before the fix the old leader proposed it again: a
mint applied twice, an If-Match update was answered 409.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from univrs.chaos.proxy import PARTITION, PASS, FaultProxy
from univrs.client.connection import Connection
from univrs.errors import UnivrsError
from univrs.net.http import request_json
from univrs.tools.devcluster import LocalCluster, NodeProc

from .conftest import DEADLINE, until

T = TypeVar("T")
# Snapshots only when asked (`POST /v1/cluster/snapshot`), compacting the whole log.
CONFIG = "snapshot_threshold = 1000000\nsnapshot_trailing_entries = 0\n"
ANSWER_MS = 90_000  # the in-flight write's deadline: far beyond the whole scenario


async def http(node: NodeProc, method: str, path: str, body: Any = None) -> Any:
    response = await request_json(node.api_addr, method, path, body=body, timeout=30.0)
    assert response.status in (200, 201), (method, path, response.status, response.body)
    return response.body


async def local_get(node: NodeProc, path: str) -> Any:
    sep = "&" if "?" in path else "?"
    response = await request_json(
        node.api_addr, "GET", f"{path}{sep}consistency=local", timeout=10.0
    )
    return response.body if response.status == 200 else None


async def same_everywhere(cluster: LocalCluster) -> None:
    def agreed() -> bool:
        try:
            views = [n.get("/v1/node/digest", timeout=5) for n in cluster.nodes]
        except (OSError, ValueError):
            return False
        return len({(v["applied_index"], v["state_digest"]) for v in views}) == 1

    await until(agreed, "every node to hold the same state")


async def write_in_flight_on_a_cut_off_leader(
    nursery: trio.Nursery,
    cluster: LocalCluster,
    proxies: dict[tuple[str, str], FaultProxy],
    op: str,
    args: dict[str, Any],
    applied_on: Callable[[NodeProc], Any],
) -> tuple[NodeProc, NodeProc, Any]:
    """Run the scenario of the module docstring for one write; returns (old leader, new
    leader, the write's answer: a result or an UnivrsError). ``applied_on(node)`` (async) tells
    whether the write has applied on ``node``."""
    old = await until(cluster.leader, "a leader")
    others = [n for n in cluster.nodes if n is not old]
    conn = await Connection.open(nursery, old.raft_addr)  # client link: not through a proxy
    inbound = [p for (_src, dst), p in proxies.items() if dst == old.node_id]
    for proxy in inbound:
        proxy.set_policy(PARTITION)
    answer: list[Any] = []

    async def send() -> None:
        try:
            answer.append((await conn.request(op, args, timeout_ms=ANSWER_MS))[0])
        except UnivrsError as exc:
            answer.append(exc)

    nursery.start_soon(send)
    new = await until(lambda: cluster.leader(others), "a new leader among the others")
    deadline = trio.current_time() + DEADLINE * 2
    while not await applied_on(new):
        assert trio.current_time() < deadline, "the write never applied on the new leader"
        await trio.sleep(0.05)
    for i in range(5):
        await http(new, "POST", "/v1/workloads", {"spec": {"name": f"after-{i}", "image": "x"}})
    snap = await http(new, "POST", "/v1/cluster/snapshot", {})
    old_view = await until(old.status, "the old leader's status")
    new_view = await until(new.status, "the new leader's status")
    assert new_view["first_index"] > old_view["last_index"], (new_view, old_view, snap)
    assert not answer, f"the cut-off leader answered before it could know: {answer}"
    for proxy in inbound:
        proxy.set_policy(PASS)
    with trio.move_on_after(ANSWER_MS / 1000):
        while not answer:
            await trio.sleep(0.05)
    assert answer, "the write on the old leader was never answered"
    conn.close()
    await until(
        lambda: "snapshot installed" in old.log_path.read_text(),
        "the old leader to install the new leader's snapshot",
    )
    return old, new, answer[0]


def assert_success_or_unknown(answer: Any) -> None:
    if isinstance(answer, UnivrsError):
        assert getattr(answer, "outcome_unknown", False), (
            f"a write that applied was answered {answer.code} ({answer.http_status}): {answer}"
        )
        assert answer.http_status == 503


async def test_a_write_in_flight_on_a_cut_off_leader_applies_once(
    make_cluster: Callable[..., LocalCluster], nursery: trio.Nursery
) -> None:
    cluster = make_cluster(3, extra_config=CONFIG)
    proxies: dict[tuple[str, str], FaultProxy] = {}
    for src in cluster.nodes:
        for dst in cluster.nodes:
            if src is not dst:
                proxy = FaultProxy(
                    src=src.node_id, dst=dst.node_id, target=dst.raft_addr, rng=random.Random(0)
                )
                await nursery.start(proxy.run)
                proxies[(src.node_id, dst.node_id)] = proxy
                cluster.dial.setdefault(src.node_id, {})[dst.node_id] = proxy.address
    await trio.to_thread.run_sync(cluster.start_all)
    leader = await until(cluster.leader, "a leader")

    # 1. A keyless mint: replayed, it applies twice (and the client sees a success).
    await http(leader, "POST", "/v1/credits/mint", {"to_peer": "p", "amount": 1, "reason": "a"})

    async def minted(node: NodeProc) -> bool:
        doc = await local_get(node, "/v1/credits/balances/p")
        return bool(doc) and doc["balance"] >= 11

    mint = {"to_peer": "p", "amount": 10, "reason": "in flight"}
    _, _, answer = await write_in_flight_on_a_cut_off_leader(
        nursery, cluster, proxies, "credits.mint", mint, minted
    )
    assert_success_or_unknown(answer)
    await same_everywhere(cluster)
    for node in cluster.nodes:
        doc = await local_get(node, "/v1/credits/balances/p")
        assert doc["balance"] == 11, f"{node.node_id}: {doc}: the mint applied more than once"

    # 2. A keyless If-Match update: replayed, it is answered 409 although it applied.
    leader = await until(cluster.leader, "a leader")
    created = await http(
        leader, "POST", "/v1/workloads", {"id": "w", "spec": {"name": "w", "image": "v1"}}
    )

    async def updated(node: NodeProc) -> bool:
        doc = await local_get(node, "/v1/workloads/w")
        return bool(doc) and doc["spec"]["image"] == "v2"

    update = {
        "id": "w",
        "spec": {"name": "w", "image": "v2"},
        "expected_version": created["version"],
    }
    _, _, answer = await write_in_flight_on_a_cut_off_leader(
        nursery, cluster, proxies, "workload.update", update, updated
    )
    assert_success_or_unknown(answer)
    await same_everywhere(cluster)
    for node in cluster.nodes:
        doc = await local_get(node, "/v1/workloads/w")
        assert doc["spec"]["image"] == "v2"
