"""The Python client: leader following, safe retries across a leader change, typed errors,
sessions under load, the sync facade."""

from __future__ import annotations

import pathlib

import pytest
import trio

from tests.api.helpers import (
    BY_HAND,
    WORKLOAD,
    BackgroundCluster,
    PausableProxy,
    open_cluster,
    wait_until,
)
from univrs.client import (
    AlreadyExists,
    ConnectionLost,
    InvalidArgument,
    NotFound,
    SyncClient,
    Unavailable,
    VersionConflict,
    open_client,
)


async def test_typed_errors(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, size=1) as cluster,
        open_client(cluster.client_addresses()) as client,
    ):
        w = await client.create_workload(WORKLOAD, id="web")
        with pytest.raises(AlreadyExists):
            await client.create_workload(WORKLOAD, id="web")
        with pytest.raises(NotFound):
            await client.get_workload("nope")
        with pytest.raises(InvalidArgument) as bad:
            await client.create_workload({**WORKLOAD, "replicas": -3})
        assert bad.value.field == "spec.replicas"
        with pytest.raises(VersionConflict) as conflict:
            await client.scale_workload("web", 3, expected_version=w["version"] - 1)
        assert conflict.value.current_version == w["version"]
        scaled = await client.scale_workload("web", 3, expected_version=w["version"])
        assert scaled["spec"]["replicas"] == 3
        await client.delete_workload("web")
        with pytest.raises(NotFound):
            await client.delete_workload("web")


async def test_finds_the_leader_from_a_follower_address(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        leader = await cluster.wait_leader()
        follower = cluster.followers()[0]
        async with open_client([cluster.client_address(follower)]) as client:
            await client.create_workload(WORKLOAD)  # forwarded by the follower
            await client.list_workloads()
            # The response told the client who leads; it moves there for what follows.
            assert client.node_id == leader.node_id
            page = await client.list_workloads()
            assert len(page["items"]) == 1


async def test_discovers_the_cluster_from_a_rest_address(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        leader = await cluster.wait_leader()
        async with open_client(api=[cluster.api(cluster.followers()[0])]) as client:
            await client.mint_credits("alice", 5, "welcome")
            assert client.node_id == leader.node_id
            assert (await client.balance("alice"))["balance"] == 5


async def test_follows_a_leader_change_without_errors_and_applies_once(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path) as cluster:
        old = await cluster.wait_leader()
        async with open_client(cluster.client_addresses(), timeout=30) as client:
            done = 0
            kill_after, total = 20, 60
            errors: list[BaseException] = []
            while done < total:
                try:
                    # Keyed writes: one credit each; the final balance counts applications.
                    await client.mint_credits("bob", 1, f"mint {done}")
                except Exception as exc:  # the caller must not see the leader change
                    errors.append(exc)
                    break
                done += 1
                if done == kill_after:
                    await cluster.kill(old.node_id)
            assert errors == []
            new = await cluster.wait_leader()
            assert new.node_id != old.node_id
            balance = await client.balance("bob")
            assert balance["balance"] == total  # every write applied exactly once
            assert client.node_id == new.node_id
            print(f"retries during the leader change: {client.retries}")


async def test_concurrent_writes_through_a_leader_kill_apply_exactly_once(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path) as cluster:
        old = await cluster.wait_leader()
        async with open_client(cluster.client_addresses(), timeout=30) as client:
            ok = 0

            async def writer(n: int) -> None:
                nonlocal ok
                for _ in range(10):
                    await client.mint_credits("carol", 1, f"writer {n}")
                    ok += 1

            async with trio.open_nursery() as nursery:
                for n in range(40):  # more than one session's window: several sessions
                    nursery.start_soon(writer, n)
                await wait_until(lambda: ok >= 100, "some writes to succeed")
                await cluster.kill(old.node_id)
            assert ok == 400
            assert (await client.balance("carol"))["balance"] == 400


async def test_no_reachable_node_is_an_error_within_the_deadline(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        address = cluster.client_address(node)
        await cluster.kill(node.node_id)
        async with open_client([address], timeout=3, connect_timeout=1) as client:
            start = trio.current_time()
            with pytest.raises(ConnectionLost):
                await client.list_workloads()
            assert trio.current_time() - start < 20
            assert isinstance(ConnectionLost("x"), Unavailable)


def test_sync_client(tmp_path: pathlib.Path) -> None:
    with (
        BackgroundCluster(tmp_path, size=1, **BY_HAND) as bg,
        SyncClient(api=bg.apis, timeout=20) as client,
    ):
        created = client.create_workload(WORKLOAD)
        assert client.get_workload(created["id"])["spec"]["image"] == "nginx:1.27"
        node = client.register_node("m1", labels={"zone": "a"})
        assert node["status"] == "ready"
        inst = client.create_instance(created["id"], node_id="m1")
        inst = client.update_instance_status(inst["id"], "running")
        assert inst["status"] == "running"
        listed = client.list_instances(node_id="m1")
        assert [i["id"] for i in listed["items"]] == [inst["id"]]
        with pytest.raises(NotFound):
            client.get_node("m2")
        local, meta = client.call_with_meta("node.list", {}, consistency="local")
        assert [n["id"] for n in local["items"]] == ["m1"]
        assert meta is not None and meta["behind"] >= 0


async def test_a_paused_node_is_left_for_another(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster, trio.open_nursery() as nursery:
        leader = await cluster.wait_leader()
        assert leader.raft_port is not None
        proxy = PausableProxy(target_port=leader.raft_port)
        port = await nursery.start(proxy.run)
        async with open_client([f"127.0.0.1:{port}"], timeout=30) as client:
            await client.mint_credits("dave", 1, "before")
            assert client.node_id == leader.node_id
            proxy.pause()  # the connection stays open but nothing gets through any more
            start = trio.current_time()
            await client.mint_credits("dave", 1, "while paused")  # keyed: retried elsewhere
            page = await client.list_balances()
            waited = trio.current_time() - start
            print(f"left the paused connection after {waited:.1f}s")
            assert waited < 25  # well within the deadline: the keepalive noticed
            assert {"peer": "dave", "balance": 2} in page["items"]
            proxy.resume()
        nursery.cancel_scope.cancel()
