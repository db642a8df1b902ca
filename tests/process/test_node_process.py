"""A real cluster of `univrs node start` processes: election, failover, restart, bad input."""

from __future__ import annotations

import pathlib
import subprocess
import time
from typing import Any

import pytest

from univrs.tools.devcluster import LocalCluster, NodeProc, wait_for

from .conftest import DEADLINE, MakeCluster, univrs, view


def commit_index(node: NodeProc) -> int:
    view = node.status()
    return view["commit_index"] if view else -1


def test_three_nodes_elect_a_leader(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(3)
    start = time.monotonic()
    cluster.start_all()
    leader = cluster.wait_leader(DEADLINE)
    elapsed = time.monotonic() - start
    print(f"\nleader {leader.node_id} elected {elapsed:.2f}s after starting 3 processes")

    def agreed() -> list[dict[str, Any]] | None:
        # A follower learns the leader from its first append, a moment after the leader knows.
        views = [v for n in cluster.nodes if (v := n.status()) is not None]
        if len(views) == len(cluster.nodes) and all(v["leader"] == leader.node_id for v in views):
            return views
        return None

    views = wait_for(agreed, DEADLINE, "every node to name the same leader")
    assert len({v["term"] for v in views}) == 1


def test_kill_leader_fails_over_and_keeps_committing(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    old = cluster.wait_leader(DEADLINE)
    old_view = old.status()
    assert old_view is not None
    killed_at = time.monotonic()
    cluster.kill(old)
    rest = [n for n in cluster.nodes if n is not old]

    def new_leader() -> NodeProc | None:
        lead = cluster.leader(rest)
        return lead if lead is not old else None

    new = wait_for(new_leader, DEADLINE, "a new leader after kill -9")
    print(f"\nfailover after kill -9 of {old.node_id}: {time.monotonic() - killed_at:.2f}s")
    new_view = new.status()
    assert new_view is not None and new_view["term"] > old_view["term"]
    # The new leader's no-op entry commits on the surviving majority.
    wait_for(
        lambda: all(commit_index(n) > old_view["commit_index"] for n in rest),
        DEADLINE,
        "the survivors to commit past the old leader's commit index",
    )


def test_full_cluster_restart_keeps_term_log_and_commit(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader(DEADLINE)
    before = {n.node_id: n.status() for n in cluster.nodes}
    wait_for(
        lambda: all(
            (v := n.status()) and v["applied_index"] == v["commit_index"] for n in cluster.nodes
        ),
        DEADLINE,
        "every node to apply what it committed",
    )
    before = {n.node_id: n.status() for n in cluster.nodes}
    cluster.stop_all()
    cluster.start_all()
    cluster.wait_leader(DEADLINE)
    for n in cluster.nodes:
        old = before[n.node_id]
        assert old is not None

        def reapplied(n: NodeProc = n, old: dict[str, Any] = old) -> dict[str, Any] | None:
            v = n.status()
            return v if v is not None and v["applied_index"] >= old["commit_index"] else None

        view = wait_for(reapplied, DEADLINE, f"{n.node_id} to re-apply its committed entries")
        assert view["term"] >= old["term"]
        assert view["last_index"] >= old["last_index"]
        assert view["commit_index"] >= old["commit_index"]


def test_stopped_follower_catches_up_after_restart(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader(DEADLINE)
    follower = next(n for n in cluster.nodes if n is not leader)
    cluster.stop(follower)
    # Force new entries while it is down: a leader change appends a no-op in a new term.
    cluster.kill(leader)
    rest = [n for n in cluster.nodes if n not in (leader, follower)]
    cluster.start(leader)
    new_leader = cluster.wait_leader(DEADLINE, among=[leader, *rest])
    target = new_leader.status()
    assert target is not None
    cluster.start(follower)
    wait_for(
        lambda: commit_index(follower) >= target["commit_index"],
        DEADLINE,
        "the restarted follower to catch up",
    )


# ------------------------------------------------------------------ bad input at startup


def run_univrs(
    *args: str, cwd: pathlib.Path, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return univrs(*args, cwd=cwd, timeout=timeout)


def test_bad_config_file_is_refused_with_the_key(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[raft]\nnode_id = "a"\nheartbeat_interval_ms = 500\n'
        "election_timeout_min_ms = 300\nelectoin = 1\n"
    )
    result = run_univrs("node", "start", "--config", str(cfg), cwd=tmp_path)
    assert result.returncode == 2
    assert "electoin" in result.stderr
    assert "election_timeout_min_ms" in result.stderr
    assert not (tmp_path / "univrs-data").exists()


def test_locked_data_dir_is_refused(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(1)
    cluster.start_all()
    node = cluster.nodes[0]
    cluster.wait_leader(DEADLINE)
    result = run_univrs(
        "node", "start", "--data-dir", str(node.data_dir), "--id", node.node_id,
        "--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", cwd=cluster.folder,
    )  # fmt: skip
    assert result.returncode != 0
    assert "locked" in result.stderr
    assert node.status() is not None  # the first node still serves


def test_corrupt_data_dir_is_refused(make_cluster: MakeCluster) -> None:
    cluster: LocalCluster = make_cluster(1)
    cluster.start_all()
    node = cluster.nodes[0]
    cluster.wait_leader(DEADLINE)
    cluster.stop(node)
    data = node.data_dir / "raft.lmdb" / "data.mdb"
    blob = data.read_bytes()
    # Flip bytes of the bootstrap configuration entry's JSON payload wherever it sits (LMDB
    # is copy-on-write, so stale copies may sit in free pages: change every copy).
    assert blob.count(b'"voters"') >= 1
    data.write_bytes(bytes(blob).replace(b'"voters"', b'"XXXXXX"'))
    cluster.start(node)
    proc = node.proc
    assert proc is not None

    def exit_code() -> tuple[int] | None:
        code = proc.poll()
        return None if code is None else (code,)  # (0,) is truthy: wait_for stops on any exit

    (code,) = wait_for(exit_code, DEADLINE, "the node to refuse the corrupt data dir")
    assert code != 0
    log = node.log_path.read_text()
    assert "corrupt" in log.lower() or "checksum" in log.lower()
    assert node.status() is None  # it serves nothing


@pytest.mark.parametrize(
    "frame",
    [b"\xff\x00garbage", b"\x9f" * 5000, b"A" * (5 * 1024 * 1024)],
    ids=["malformed", "deeply-nested", "oversized"],
)
async def test_bad_frames_close_the_connection_and_the_node_survives(
    make_cluster: MakeCluster, frame: bytes
) -> None:
    import trio
    from trio_websocket import ConnectionClosed, open_websocket_url

    from univrs.net.hello import Hello, encode_hello

    cluster: LocalCluster = make_cluster(1)
    cluster.start_all()
    node = cluster.nodes[0]
    cluster.wait_leader(DEADLINE)
    before = view(node)
    async with open_websocket_url(
        f"ws://{node.raft_addr}/raft", max_message_size=16 * 1024 * 1024
    ) as ws:
        hello = Hello(version=1, cluster=cluster.cluster_id, src="n9", dst=node.node_id)
        await ws.send_message(encode_hello(hello))
        with trio.fail_after(DEADLINE):
            try:
                await ws.send_message(frame)
                while True:
                    await ws.get_message()
            except ConnectionClosed:
                pass
    after = wait_for(node.status, DEADLINE, "the node to answer after the bad frame")
    assert after["role"] == "leader" and after["term"] == before["term"]
    assert node.running()
