"""The REST API on a real 3-node cluster: forwarding, consistency, versions, idempotency."""

from __future__ import annotations

import pathlib

import trio

from tests.api.helpers import WORKLOAD, Cluster, open_cluster, wait_until
from univrs.net.http import HttpResponse
from univrs.raft.ready import Role
from univrs.server.node import Node


async def _session_key(cluster: Cluster, node_index: int = 0) -> str:
    node = cluster.running()[node_index]
    r = await cluster.http(node, "POST", "/v1/sessions")
    assert r.status == 201, r.body
    key = r.body["client_id"]
    assert isinstance(key, str), r.body
    return key


async def test_create_on_a_follower_is_readable_everywhere(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        follower = cluster.followers()[0]
        created = await cluster.http(follower, "POST", "/v1/workloads", {"spec": WORKLOAD})
        assert created.status == 201, created.body
        wid = created.body["id"]
        assert len(wid) == 32  # uuid4 hex, assigned by the serving node
        assert created.headers["location"] == f"/v1/workloads/{wid}"
        assert created.headers["etag"] == f'"{created.body["version"]}"'
        assert created.body["spec"]["labels"] == {"tier": "web"}
        t0 = trio.current_time()
        for node in cluster.running():
            # Linearizable (the default): the write is visible at once, on every node.
            got = await cluster.http(node, "GET", f"/v1/workloads/{wid}")
            assert got.status == 200, (node.node_id, got.body)
            assert got.body["version"] == created.body["version"]
            assert got.headers["x-univrs-consistency"] == "linearizable"
        for node in cluster.running():
            # Local: served from the node's own state; within 100 ms (the design's criterion).
            async def local(node: Node = node) -> HttpResponse | None:
                r = await cluster.http(node, "GET", f"/v1/workloads/{wid}?consistency=local")
                return r if r.status == 200 else None

            start = trio.current_time()
            r = await wait_until(local, f"{node.node_id} to apply the create", timeout=10)
            lag_ms = (trio.current_time() - start) * 1000
            print(f"local read on {node.node_id}: visible after {lag_ms:.1f} ms")
            assert r.headers["x-univrs-consistency"] == "local"
            assert int(r.headers["x-univrs-applied-index"]) >= created.body["version"]
            assert int(r.headers["x-univrs-behind"]) >= 0
            contact = r.headers["x-univrs-leader-contact-ms"]
            if node.status().role is Role.LEADER:
                assert contact == "0"
            else:  # followers hear from the leader at least every heartbeat (150 ms)
                assert contact == "unknown" or 0 <= int(contact) < 5000, contact
        print(f"all reads done {1000 * (trio.current_time() - t0):.1f} ms after the create")


async def test_local_read_lag_after_a_write(tmp_path: pathlib.Path) -> None:
    """Followers apply a write soon after the leader acknowledged it; the lag is printed (the
    design's criterion is 100 ms), not asserted: timing on shared CI cores is noise."""
    async with open_cluster(tmp_path) as cluster:
        leader = await cluster.wait_leader()
        followers = cluster.followers()
        lags = []
        for i in range(5):
            spec = {**WORKLOAD, "name": f"lag-{i}"}
            created = await cluster.http(leader, "POST", "/v1/workloads", {"spec": spec})
            assert created.status == 201
            acked = trio.current_time()
            version = created.body["version"]
            for node in followers:

                def applied(node: Node = node, version: int = version) -> bool:
                    return node.runtime.sm.last_applied_index >= version

                await wait_until(
                    applied,
                    "a follower to apply",
                    timeout=10,
                    every=0.001,
                )
                lags.append((trio.current_time() - acked) * 1000)
        lags.sort()
        median = lags[len(lags) // 2]
        print(
            f"follower apply lag after the leader's ack: median {median:.1f} ms, max {lags[-1]:.1f}"
        )
        assert len(lags) == 5 * len(followers)


async def test_version_conflicts(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        follower = cluster.followers()[0]
        created = await cluster.http(follower, "POST", "/v1/workloads", {"spec": WORKLOAD})
        wid, v1 = created.body["id"], created.body["version"]
        ok = await cluster.http(
            follower,
            "POST",
            f"/v1/workloads/{wid}/scale",
            {"replicas": 5},
            headers={"If-Match": f'"{v1}"'},
        )
        assert ok.status == 200, ok.body
        v2 = ok.body["version"]
        assert v2 > v1 and ok.body["spec"]["replicas"] == 5
        stale = await cluster.http(
            follower,
            "POST",
            f"/v1/workloads/{wid}/scale",
            {"replicas": 7},
            headers={"If-Match": f'"{v1}"'},
        )
        assert stale.status == 409
        assert stale.body["error"]["code"] == "version-conflict"
        assert stale.body["error"]["current_version"] == v2
        body_conflict = await cluster.http(
            follower,
            "PUT",
            f"/v1/workloads/{wid}",
            {"spec": WORKLOAD, "expected_version": v1},
        )
        assert body_conflict.status == 409
        assert body_conflict.body["error"]["field"] == "expected_version"
        gone = await cluster.http(follower, "DELETE", f"/v1/workloads/{wid}?expected_version={v1}")
        assert gone.status == 409
        deleted = await cluster.http(
            follower, "DELETE", f"/v1/workloads/{wid}", headers={"If-Match": f'"{v2}"'}
        )
        assert deleted.status == 200 and deleted.body["deleted"] is True
        after = await cluster.http(follower, "GET", f"/v1/workloads/{wid}")
        assert after.status == 404


async def test_same_key_retried_applies_once(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        client_id = await _session_key(cluster)
        headers = {"Idempotency-Key": f"{client_id}:1"}
        nodes = cluster.running()
        first = await cluster.http(
            nodes[0], "POST", "/v1/workloads", {"spec": WORKLOAD}, headers=headers
        )
        assert first.status == 201
        for node in nodes:  # the same key on every node: the first result, nothing new
            again = await cluster.http(
                node, "POST", "/v1/workloads", {"spec": WORKLOAD}, headers=headers
            )
            assert again.status == 201
            assert again.body["id"] == first.body["id"]
            assert again.body["version"] == first.body["version"]
        listed = await cluster.http(nodes[0], "GET", "/v1/workloads?name=web")
        assert [w["id"] for w in listed.body["items"]] == [first.body["id"]]
        mint = {"to_peer": "alice", "amount": 10, "reason": "test"}
        mint_key = {"Idempotency-Key": f"{client_id}:2"}
        for node in nodes:
            r = await cluster.http(node, "POST", "/v1/credits/mint", mint, headers=mint_key)
            assert r.status == 200 and r.body["balance"] == 10, r.body


async def test_idempotent_retry_after_the_leader_is_killed_mid_request(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path) as cluster:
        client_id = await _session_key(cluster)
        leader = await cluster.wait_leader()
        follower = cluster.followers()[0]
        other = next(n for n in cluster.followers() if n is not follower)
        headers = {"Idempotency-Key": f"{client_id}:1"}
        target_index = leader.status().last_index + 1
        first: dict[str, HttpResponse] = {}

        async def send() -> None:
            r = await cluster.http(
                follower, "POST", "/v1/workloads", {"spec": WORKLOAD}, headers=headers
            )
            first["response"] = r

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            # Kill the leader once the write reached its log: mid-request.
            await wait_until(
                lambda: leader.status().last_index >= target_index,
                "the write to reach the leader's log",
                every=0.0005,
            )
            await cluster.kill(leader.node_id)
        r = first["response"]
        print(f"first attempt answered {r.status}: {r.body}")
        assert r.status in (201, 503), r.body
        await cluster.wait_leader()
        # The client retries the same key on another node: one object, not two.
        retried = None
        for _ in range(50):
            retried = await cluster.http(
                other, "POST", "/v1/workloads", {"spec": WORKLOAD}, headers=headers
            )
            if retried.status != 503:
                break
            await trio.sleep(0.1)
        assert retried is not None and retried.status == 201, retried and retried.body
        if r.status == 201:
            assert retried.body["id"] == r.body["id"]
        listed = await cluster.http(other, "GET", "/v1/workloads?name=web")
        assert len(listed.body["items"]) == 1, listed.body
        assert listed.body["items"][0]["id"] == retried.body["id"]


async def test_no_leader_answers_503_with_retry_after(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        survivor = cluster.followers()[0]
        for node in list(cluster.running()):
            if node is not survivor:
                await cluster.kill(node.node_id)
        await wait_until(
            lambda: survivor.status().role is not Role.LEADER and survivor.status().leader is None,
            "the survivor to notice it has no leader",
        )
        t0 = trio.current_time()
        write = await cluster.http(survivor, "POST", "/v1/workloads", {"spec": WORKLOAD})
        read = await cluster.http(survivor, "GET", "/v1/workloads")
        elapsed = trio.current_time() - t0
        assert write.status == 503, write.body
        assert write.body["error"]["code"] == "unavailable"
        assert int(write.headers["retry-after"]) >= 1
        assert "leader" in write.body["error"]["message"]
        assert read.status == 503
        assert elapsed < 15, elapsed  # an answer, not a hang
        local = await cluster.http(survivor, "GET", "/v1/workloads?consistency=local")
        assert local.status == 200  # stale reads stay available, and say they may be stale
        assert local.headers["x-univrs-leader-contact-ms"] == "unknown"


async def test_promote_and_remove_a_member_through_a_follower(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        follower, other = cluster.followers()[:2]
        everyone = sorted(n.node_id for n in cluster.running())
        for method, path in (
            ("POST", "/v1/cluster/members/nobody/promote"),
            ("DELETE", "/v1/cluster/members/nobody"),
        ):
            r = await cluster.http(follower, method, path)
            assert r.status == 404, (method, r.body)
            assert "'nobody' is not a member" in r.body["error"]["message"]
        # Promoting a voter changes nothing; removing one takes it out (forwarded to the leader).
        r = await cluster.http(follower, "POST", f"/v1/cluster/members/{other.node_id}/promote")
        assert r.status == 200, r.body
        assert r.body == {"voters": everyone, "learners": []}
        r = await cluster.http(follower, "DELETE", f"/v1/cluster/members/{other.node_id}")
        assert r.status == 200, r.body
        assert r.body == {"voters": [n for n in everyone if n != other.node_id], "learners": []}


async def test_a_member_no_node_could_be_is_refused(tmp_path: pathlib.Path) -> None:
    """Red team: ``POST /v1/cluster/members`` committed learners with ids no node can be
    configured with (a NUL, a space, 300 characters, a leading '-') and incarnations no hello
    can name (a newline): members that can never connect, whose control characters went into
    every log line naming them. Refused now (422 invalid-argument, the field named), the
    configuration unchanged; a well-formed one is still added."""
    async with open_cluster(tmp_path, size=1) as cluster:
        # Once the leader has bound its own incarnation (its own configuration change, which
        # could otherwise land between ``before`` and the check on a loaded machine).
        node = await cluster.wait_bound_leader()
        before = node.status().membership
        for body, field in (
            ({"id": "x\u0000y", "raft_addr": "127.0.0.1:1"}, "id"),
            ({"id": "a b", "raft_addr": "127.0.0.1:2"}, "id"),
            ({"id": "a" * 300, "raft_addr": "127.0.0.1:3"}, "id"),
            ({"id": "-x", "raft_addr": "127.0.0.1:4"}, "id"),
            ({"id": "n9", "raft_addr": "127.0.0.1:5", "incarnation": "a\nb"}, "incarnation"),
            ({"id": "n9", "raft_addr": "127.0.0.1:5", "incarnation": "../x"}, "incarnation"),
        ):
            r = await cluster.http(node, "POST", "/v1/cluster/members", body)
            assert r.status == 422, (body, r.body)
            assert r.body["error"]["code"] == "invalid-argument", r.body
            assert r.body["error"]["field"] == field, r.body
        assert node.status().membership == before
        body = {"id": "n9.b_c-1", "raft_addr": "127.0.0.1:6", "incarnation": "0123abcd"}
        r = await cluster.http(node, "POST", "/v1/cluster/members", body)
        assert r.status == 201, r.body
        assert r.body["learners"] == ["n9.b_c-1"]
