"""Backup, restore and lost-quorum recovery with real processes (issue 13, items 1 and 2, the
commands of docs/operations.md).

* A snapshot saved from a follower of a 3-node cluster under writes holds every write
  acknowledged before the save began; restored into a new 3-node cluster (new cluster id, new
  incarnations), the new cluster serves exactly the saved objects, and accepts writes.
* Two of three voters killed for good: the third, recovered with `univrs recover`, is a
  one-voter cluster that holds every write acknowledged before the loss; two new nodes join it
  with `univrs cluster join`, and the three of them agree.

Both fail on the old code: the commands did not exist.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import trio

from univrs.api.convert import instance_doc, node_doc, workload_doc
from univrs.net.http import request_json
from univrs.storage.backup import decode_state, read_backup
from univrs.tools.devcluster import LocalCluster, NodeProc

from .conftest import DEADLINE, cli, leads
from .conftest import until as wait


async def leader_of(cluster: LocalCluster, members: list[NodeProc]) -> NodeProc:
    return await trio.to_thread.run_sync(lambda: cluster.wait_leader(DEADLINE, among=members))


class Writer:
    """Writes workloads and mints credits through one node until stopped; remembers what was
    acknowledged, and when."""

    def __init__(self, node: NodeProc) -> None:
        self.node = node
        self.acked: list[tuple[float, str, str]] = []  # (trio time, kind, key)
        self.minted: dict[str, int] = {}

    async def run(self, stop: trio.Event, prefix: str) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 3:
                spec = {"name": f"{prefix}{i}", "image": "img", "replicas": 0}
                r = await request_json(
                    self.node.api_addr, "POST", "/v1/workloads", body={"spec": spec}, timeout=10
                )
                assert r.status == 201, r.body
                self.acked.append((trio.current_time(), "workload", r.body["id"]))
            else:
                peer = f"{prefix}peer{i % 7}"
                body = {"to_peer": peer, "amount": i, "reason": "test"}
                r = await request_json(
                    self.node.api_addr, "POST", "/v1/credits/mint", body=body, timeout=10
                )
                assert r.status == 200, r.body
                self.minted[peer] = self.minted.get(peer, 0) + i
                self.acked.append((trio.current_time(), "mint", peer))


def set_cluster_id(node: NodeProc, old: str, cluster_id: str) -> None:
    """Edit ``raft.cluster_id`` in the node's config file (docs/operations.md)."""
    text = node.config_path.read_text()
    assert f'cluster_id = "{old}"' in text
    node.config_path.write_text(
        text.replace(f'cluster_id = "{old}"', f'cluster_id = "{cluster_id}"')
    )


def cluster_id_of(node: NodeProc) -> str | None:
    """The cluster id ``node`` serves (``/v1/cluster/status``; node status shows a fingerprint)."""
    try:
        doc = node.get("/v1/cluster/status", timeout=5)
    except (OSError, ValueError):
        return None
    value = doc.get("cluster_id")
    return value if isinstance(value, str) else None


async def all_items(node: NodeProc, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query = "?limit=500" + (f"&after={after}" if after else "")
        r = await request_json(node.api_addr, "GET", path + query, timeout=10)
        assert r.status == 200, r.body
        items.extend(r.body["items"])
        after = r.body.get("next")
        if after is None:
            return items


async def objects(node: NodeProc) -> dict[str, Any]:
    """Every object the cluster serves, by kind and id (linearizable reads)."""
    return {
        "workloads": {w["id"]: w for w in await all_items(node, "/v1/workloads")},
        "instances": {i["id"]: i for i in await all_items(node, "/v1/instances")},
        "nodes": {n["id"]: n for n in await all_items(node, "/v1/nodes")},
        "balances": {
            b["peer"]: b["balance"] for b in await all_items(node, "/v1/credits/balances")
        },
    }


def objects_in_file(path: pathlib.Path) -> dict[str, Any]:
    sm = decode_state(read_backup(path))
    return {
        "workloads": {w.id: workload_doc(w) for w in sm.list_workloads()},
        "instances": {i.id: instance_doc(i) for i in sm.list_instances()},
        "nodes": {n.id: node_doc(n) for n in sm.list_nodes()},
        "balances": {peer: amount for peer, amount in sm.balances().items() if amount > 0},
    }


async def test_save_under_writes_then_restore_into_a_new_cluster(tmp_path: pathlib.Path) -> None:
    old = LocalCluster.with_free_ports(tmp_path / "old", size=3)
    new = LocalCluster.with_free_ports(tmp_path / "new", size=3)
    new.bootstrap = False  # restored data dirs need no bootstrap list
    try:
        await trio.to_thread.run_sync(old.start_all)
        leader = await leader_of(old, old.nodes)
        follower = next(n for n in old.nodes if n is not leader)
        writer = Writer(leader)
        stop = trio.Event()
        file = tmp_path / "backup.snap"
        # An exactly-once write (a session and a key) before the save.
        r = await request_json(leader.api_addr, "POST", "/v1/sessions")
        assert r.status == 201, r.body
        idem = {"Idempotency-Key": f"{r.body['client_id']}:1"}
        keyed_spec = {"spec": {"name": "keyed", "image": "img", "replicas": 0}}
        r = await request_json(
            leader.api_addr, "POST", "/v1/workloads", body=keyed_spec, headers=idem
        )
        assert r.status == 201, r.body
        keyed_id = r.body["id"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, stop, "w")
            await wait(lambda: len(writer.acked) >= 30, "30 writes before the save")
            began = trio.current_time()
            # From a follower: it confirms its read point with the leader.
            result = await cli("snapshot", "save", str(file), "--api", follower.api_addr)
            ended = trio.current_time()
            await wait(lambda: any(t > ended for t, _, _ in writer.acked), "a write after")
            stop.set()
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"saved snapshot of cluster {old.cluster_id}" in result.stdout, result.stdout
        assert not (tmp_path / "backup.snap.tmp").exists()
        assert any(began < t < ended for t, _, _ in writer.acked), "no write during the save"

        result = await cli("snapshot", "status", str(file), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        status = json.loads(result.stdout)
        assert status["cluster_id"] == old.cluster_id and status["checksum"] == "ok"
        assert status["voters"] == ["n1", "n2", "n3"] and status["node"] == follower.node_id
        saved = objects_in_file(file)
        # Linearizable: every write acknowledged before the save began is in the file.
        for t, kind, key in writer.acked:
            if t < began:
                if kind == "workload":
                    assert key in saved["workloads"], key
                else:
                    assert key in saved["balances"], key

        corrupt = tmp_path / "corrupt.snap"
        raw = bytearray(file.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        corrupt.write_bytes(bytes(raw))
        result = await cli("snapshot", "status", str(corrupt))
        assert result.returncode == 1 and "corrupt" in result.stderr, result.stderr

        # Restore into a new cluster: one data dir per member, the same file and member list.
        initial = ",".join(f"{n.node_id}={n.raft_addr}" for n in new.nodes)
        apis = ",".join(f"{n.node_id}={n.api_addr}" for n in new.nodes)
        for n in new.nodes:
            result = await cli(
                "snapshot", "restore", str(file), "--data-dir", str(n.data_dir),
                "--node-id", n.node_id, "--initial-cluster", initial,
                "--initial-cluster-api", apis, "--initial-cluster-token", "restore-1",
            )  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
        await trio.to_thread.run_sync(new.start_all)
        new_leader = await leader_of(new, new.nodes)
        views = [await wait(n.status, f"{n.node_id} to answer") for n in new.nodes]
        cluster_ids = {cluster_id_of(n) for n in new.nodes}
        assert len(cluster_ids) == 1 and None not in cluster_ids, cluster_ids
        assert old.cluster_id not in cluster_ids and new.cluster_id not in cluster_ids
        old_incarnations = {v["incarnation"] for v in old.statuses().values() if v}
        assert not old_incarnations & {v["incarnation"] for v in views}
        # Exactly the saved objects, on every member.
        for n in new.nodes:
            assert await objects(n) == saved, n.node_id
        # Sessions came along: the retry of a write the backup holds gets its first answer.
        r = await request_json(
            new_leader.api_addr, "POST", "/v1/workloads", body=keyed_spec, headers=idem
        )
        assert r.status in (200, 201) and r.body["id"] == keyed_id, r.body
        assert len(await all_items(new_leader, "/v1/workloads")) == len(saved["workloads"])
        # The restored cluster takes writes.
        r = await request_json(
            new_leader.api_addr, "POST", "/v1/workloads",
            body={"spec": {"name": "after-restore", "image": "img", "replicas": 0}},
        )  # fmt: skip
        assert r.status == 201, r.body
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(old.stop_all)
            await trio.to_thread.run_sync(new.stop_all)


async def test_recover_a_lone_survivor_then_join_two_new_nodes(tmp_path: pathlib.Path) -> None:
    cluster = LocalCluster.with_free_ports(tmp_path / "c", size=3, spares=2)
    try:
        await trio.to_thread.run_sync(cluster.start_all)
        n1, n2, n3, n4, n5 = cluster.nodes
        leader = await leader_of(cluster, [n1, n2, n3])
        writer = Writer(leader)
        stop = trio.Event()
        survivor = next(n for n in (n1, n2, n3) if n is not leader)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, stop, "w")
            await wait(lambda: len(writer.acked) >= 60, "60 acknowledged writes")
            stop.set()
        # Two voters die for good (the leader among them), the survivor is stopped.
        for gone in (n for n in (n1, n2, n3) if n is not survivor):
            await trio.to_thread.run_sync(cluster.kill, gone)
        await trio.to_thread.run_sync(cluster.stop, survivor)

        result = await cli("recover", "--data-dir", str(survivor.data_dir), "--dry-run", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        before = json.loads(result.stdout)
        assert before["voters"] == ["n1", "n2", "n3"], before
        result = await cli(
            "recover", "--data-dir", str(survivor.data_dir), "--cluster-id", "univrs-recovered"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "only voter of cluster univrs-recovered" in result.stdout, result.stdout
        # Its config file names the old cluster id: the runbook's edit.
        set_cluster_id(survivor, cluster.cluster_id, "univrs-recovered")

        await trio.to_thread.run_sync(cluster.start, survivor)
        await wait(
            lambda: (v := survivor.status()) and v["role"] == "leader", "the survivor to lead"
        )
        view = survivor.status()
        assert view is not None and view["voters"] == [survivor.node_id], view
        assert cluster_id_of(survivor) == "univrs-recovered"
        assert view["incarnation"] != before["incarnation"]
        # Every write acknowledged before the loss.
        served = await objects(survivor)
        for _, kind, key in writer.acked:
            assert key in (served["workloads"] if kind == "workload" else served["balances"])
        assert served["balances"] == writer.minted

        # Two new nodes join the recovered cluster.
        for fresh in (n4, n5):
            await trio.to_thread.run_sync(cluster.start, fresh)
            await wait(functools.partial(leads, fresh), "spare up")
            result = await cli(
                "cluster", "join", survivor.api_addr, "--api", fresh.api_addr, "--timeout", "120"
            )
            assert result.returncode == 0 and "as a voter" in result.stdout, (
                result.stdout + result.stderr
            )
        view = survivor.status()
        assert view is not None
        assert view["voters"] == sorted([survivor.node_id, "n4", "n5"]), view
        for n in (n4, n5):
            assert await objects(n) == served, n.node_id
        r = await request_json(
            n4.api_addr, "POST", "/v1/workloads",
            body={"spec": {"name": "after-recovery", "image": "img", "replicas": 0}},
        )  # fmt: skip
        assert r.status == 201, r.body

        # An old member restarted on its old data cannot disrupt the recovered cluster: it is
        # of another cluster id now, and the survivor refuses its connections.
        stale = next(n for n in (n1, n2, n3) if n is not survivor)
        term = survivor.status()["term"]  # type: ignore[index]
        await trio.to_thread.run_sync(cluster.start, stale)
        await wait(
            lambda: (
                f"closing raft connection from {stale.node_id}" in survivor.log_path.read_text()
            ),
            "the survivor to refuse the stale member",
        )
        await wait(lambda: stale.status(), "the stale member to answer")
        # An observation window, not a synchronisation: the stale member campaigns in vain.
        with trio.move_on_after(3):
            await trio.sleep_forever()
        view = survivor.status()
        assert view is not None and view["role"] == "leader" and view["term"] == term, view
        assert view["voters"] == sorted([survivor.node_id, "n4", "n5"]), view
        assert stale.status()["role"] != "leader"  # type: ignore[index]
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.stop_all)


async def test_a_two_voter_cluster_with_a_dead_member_is_recovered(
    tmp_path: pathlib.Path,
) -> None:
    """A 2-voter cluster whose other member died cannot commit anything, not even the dead
    member's removal: `univrs recover` on the survivor is the way out."""
    cluster = LocalCluster.with_free_ports(tmp_path / "c", size=2)
    try:
        await trio.to_thread.run_sync(cluster.start_all)
        n1, n2 = cluster.nodes
        leader = await leader_of(cluster, [n1, n2])
        writer = Writer(leader)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, stop, "w")
            await wait(lambda: len(writer.acked) >= 10, "10 acknowledged writes")
            stop.set()
        dead = n2 if leader is n1 else n1
        survivor = n1 if dead is n2 else n2
        await trio.to_thread.run_sync(cluster.kill, dead)
        await trio.to_thread.run_sync(cluster.stop, survivor)
        result = await cli("recover", "--data-dir", str(survivor.data_dir), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        set_cluster_id(survivor, cluster.cluster_id, json.loads(result.stdout)["cluster_id"])
        await trio.to_thread.run_sync(cluster.start, survivor)
        await wait(lambda: (v := survivor.status()) and v["role"] == "leader", "a leader")
        served = await objects(survivor)
        assert all(
            key in (served["workloads"] if kind == "workload" else served["balances"])
            for _, kind, key in writer.acked
        )
        view = survivor.status()
        assert view is not None and view["voters"] == [survivor.node_id], view
        r = await request_json(
            survivor.api_addr, "POST", "/v1/workloads",
            body={"spec": {"name": "after-recovery", "image": "img", "replicas": 0}},
        )  # fmt: skip
        assert r.status == 201, r.body
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.stop_all)
