"""Nodes on the persistent state machine (``state_backend = "lmdb"``, docs/state-at-scale.md):
a restart resumes from the state env and replays only the log after its applied index; every
crash point between the log and the state ends in the digest of a node that never crashed; a
state env that does not fit the log is a clear start-up error that changes nothing.

The crash points are made on disk, the way a crash leaves them (the nodes are stopped
abruptly: what they committed stays, as after a process crash), by putting back a copy of the
state env taken earlier:

* killed between the log's append and the state's commit: the state env is behind the log;
* killed between the state's commit and the log's compaction: the state env is at or past the
  stored snapshot and the log holds everything after it (any kill during writes with frequent
  snapshots, repeated);
* killed between storing a leader's snapshot and replacing the state with it: the state env is
  behind the stored snapshot (and the log after it).
"""

from __future__ import annotations

import functools
import logging
import pathlib
import shutil
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import pytest
import trio

from tests.api.helpers import Cluster, make_configs, wait_until
from univrs.api.store import RaftStateStore
from univrs.config import NodeConfig
from univrs.errors import ProposalDropped, StorageError, Unavailable
from univrs.server.datadir import open_storage
from univrs.server.node import Node
from univrs.sm import Envelope, MintCredits, TransferCredits, snapshot_plain, state_digest
from univrs.storage.sm_tables import StateEnv

pytestmark = pytest.mark.timeout(300)
T = TypeVar("T")


def _digest(node: Node) -> str:
    return state_digest(node.runtime.sm)


def _tables(node: Node) -> dict[str, Any]:
    """The state without its position in the log (a no-op entry changes only that)."""
    plain = snapshot_plain(node.runtime.sm)
    for key in ("last_index", "last_term", "clock_ms"):
        del plain[key]
    return plain


async def _write(node: Node, first: int, count: int) -> None:
    """Mints, transfers and session commands (sessions, ledger and versions all change)."""
    await _write_with(node.store, first, count)


async def _write_with(store: RaftStateStore, first: int, count: int) -> None:
    """Mints, transfers and session commands, each retried while the cluster elects (a kill
    may take the leader down): the session's retries are exactly-once."""
    client_id = await _retried(store.open_session)
    for n in range(first, first + count):
        mint = MintCredits(to_peer=f"p{n % 7}", amount=10, reason="test")
        await _retried(functools.partial(store.run, mint))
        command = TransferCredits(from_peer=f"p{n % 7}", to_peer=f"q{n % 3}", amount=3)
        sent = Envelope(client_id=client_id, seq=n - first + 1, command=command)
        await _retried(functools.partial(store.run, sent))


async def _retried(call: Callable[[], Awaitable[T]]) -> T:
    for _ in range(200):
        try:
            return await call()
        except (Unavailable, ProposalDropped):
            await trio.sleep(0.05)  # a backoff between attempts, not a synchronisation
    raise AssertionError("no leader for 10 s")


async def _caught_up(cluster: Cluster, node_id: str, with_id: str) -> None:
    def same() -> bool:
        a, b = cluster.nodes[node_id].runtime, cluster.nodes[with_id].runtime
        return a.applied_index == b.applied_index and _digest(cluster.nodes[node_id]) == _digest(
            cluster.nodes[with_id]
        )

    await wait_until(same, f"{node_id} caught up with {with_id}", 60)


async def write_until_only_a_snapshot_catches_up(cluster: Cluster, victim: str, first: int) -> None:
    """Write (``_write_with`` rounds from ``first``) while ``victim`` is stopped until its
    restart can catch up only by a snapshot from the leader.

    The leader's log compacted past the victim's last index is not enough: the leader keeps
    replicating to a stopped follower into its outbound queue (``PeerQueue``: kept while
    disconnected, bounded), up to ``max_inflight`` appends, so a restart first receives the
    appends queued while it was down, and they chain onto its log (each carries its previous
    index and term) however far the leader compacted meanwhile. Only what the leader sends
    after that needs the compacted entries: wait until its log starts after everything it may
    have sent the victim (``PeerStatus.next``, once its pipeline stopped: nothing after
    ``next - 1`` went out; a new leader's one probe, sent as it took the lead, ends at its last
    index then)."""
    probes: dict[tuple[str, int], int] = {}  # (leader, term) -> its last index when first seen

    def needs_snapshot() -> bool:
        leader = cluster.leader()
        if leader is None:
            return False
        status = leader.status()
        peer = next((p for p in status.peers if p.id == victim), None)
        if peer is None:
            return False
        if peer.state == "snapshot":
            return True  # it streams a snapshot past the victim's log
        if peer.state == "replicate":
            if peer.next > status.last_index:
                return False  # still sending it every entry: the queue may carry them all
            sent = peer.next - 1  # its pipeline is full: nothing after this was sent
        else:
            sent = probes.setdefault((status.id, status.term), status.last_index)
        return status.first_index > sent + 1

    if needs_snapshot():
        return
    for n in range(first, first + 100 * 40, 100):
        leader = await cluster.wait_leader()
        await _write_with(leader.store, n, 25)
        if needs_snapshot():  # also after the last round
            return
    raise AssertionError(f"{victim}'s restart could still catch up by queued appends")


def _configs(folder: pathlib.Path, size: int, **overrides: Any) -> dict[str, NodeConfig]:
    return make_configs(folder, size, state_backend="lmdb", **overrides)


async def test_a_restart_resumes_after_the_state_applied_index(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="univrs.node")
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=_configs(tmp_path, 1))
        node = await cluster.start("n1")
        await cluster.wait_leader()
        await _write(node, 1, 20)
        before, applied = _tables(node), node.runtime.applied_index
        await cluster.kill("n1")
        state = tmp_path / "n1" / "state.lmdb"
        env = StateEnv(str(state))
        assert env.applied()[0] == applied  # committed with the state it produced
        env.store.close()
        caplog.clear()
        node = await cluster.start("n1")
        assert _opened(caplog) == [("resumed", applied)]
        assert node.runtime.sm.last_applied_index >= applied
        assert node.runtime.last_snapshot_index == 0  # nothing was restored from a snapshot
        await cluster.wait_leader()
        await wait_until(lambda: node.runtime.applied_index > applied, "the new no-op", 30)
        assert _tables(node) == before  # the no-op changes no table
        nursery.cancel_scope.cancel()


def _opened(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    return [
        (r.how, r.applied)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "state opened"
    ]


async def test_state_behind_the_log_replays_to_the_same_digest(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed between the log's append and the state's commit."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=_configs(tmp_path, 1))
        node = await cluster.start("n1")
        await cluster.wait_leader()
        await _write(node, 1, 10)
        await cluster.kill("n1")
        state = tmp_path / "n1" / "state.lmdb"
        shutil.copytree(state, tmp_path / "old-state")
        old_applied = node.runtime.applied_index
        node = await cluster.start("n1")
        await cluster.wait_leader()
        await _write(node, 11, 10)
        expected = _tables(node)
        await cluster.kill("n1")
        shutil.rmtree(state)
        shutil.copytree(tmp_path / "old-state", state)  # the commits after it never happened
        caplog.clear()
        node = await cluster.start("n1")
        assert _opened(caplog) == [("resumed", old_applied)]
        await cluster.wait_leader()
        await wait_until(lambda: _tables(node) == expected, "the replayed state", 30)
        nursery.cancel_scope.cancel()


async def test_state_behind_the_stored_snapshot_is_replaced_from_it(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed between storing a snapshot (and compacting the log past the state) and
    replacing the state with it; also a data dir switching from the memory backend."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    async with trio.open_nursery() as nursery:
        configs = _configs(tmp_path, 1, snapshot_threshold=8, snapshot_trailing_entries=0)
        cluster = Cluster(nursery=nursery, configs=configs)
        node = await cluster.start("n1")
        await cluster.wait_leader()
        await cluster.kill("n1")
        state = tmp_path / "n1" / "state.lmdb"
        shutil.copytree(state, tmp_path / "old-state")
        node = await cluster.start("n1")
        await cluster.wait_leader()
        await _write(node, 1, 30)
        await wait_until(lambda: node.runtime.last_snapshot_index > 8, "a snapshot", 30)
        expected = _tables(node)
        await cluster.kill("n1")
        shutil.rmtree(state)
        shutil.copytree(tmp_path / "old-state", state)
        caplog.clear()
        node = await cluster.start("n1")
        assert [how for how, _ in _opened(caplog)] == ["replaced from the stored snapshot"]
        await cluster.wait_leader()
        await wait_until(lambda: _tables(node) == expected, "the state from the snapshot", 30)
        nursery.cancel_scope.cancel()


async def test_killed_followers_on_both_backends_end_in_the_leader_digest(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 3-node cluster, n1 on the memory backend, n2 and n3 on LMDB, frequent snapshots: an
    LMDB follower is killed at arbitrary points during writes (between any commit of its state
    and any compaction of its log) and restarted, catching up by a snapshot from the leader
    (installed into its state env); every node ends with the same digest."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = _configs(tmp_path, 3, snapshot_threshold=16, snapshot_trailing_entries=4)
    configs["n1"] = attrs.evolve(configs["n1"], state_backend="memory")
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        for nid in configs:
            await cluster.start(nid)
        leader = await cluster.wait_leader()
        for round_ in range(3):
            victim = "n3" if leader.config.node_id != "n3" else "n2"
            writer = leader.store
            async with trio.open_nursery() as writers:
                writers.start_soon(_write_with, writer, 1 + 100 * round_, 25)
                await trio.sleep(0.05 * (round_ + 1))  # a kill at some point of the writes
                await cluster.kill(victim)
            await cluster.start(victim)
            leader = await cluster.wait_leader()
            for nid in cluster.nodes:
                if nid != leader.config.node_id:
                    await _caught_up(cluster, nid, leader.config.node_id)
        # A kill early in the writes may leave the victim inside the leader's log (it catches up
        # by entries): one more round keeps it down until only a snapshot can catch it up.
        victim = "n3" if leader.config.node_id != "n3" else "n2"
        await cluster.kill(victim)
        await write_until_only_a_snapshot_catches_up(cluster, victim, 401)
        caplog.clear()
        await cluster.start(victim)
        leader = await cluster.wait_leader()
        await _caught_up(cluster, victim, leader.config.node_id)
        nursery.cancel_scope.cancel()
    # The victim (always on LMDB) fell behind what the leader can send: a snapshot install.
    assert "state replaced from a snapshot" in [r.getMessage() for r in caplog.records]


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_state_env_ahead_of_the_log_or_of_another_cluster_is_refused(
    tmp_path: pathlib.Path,
) -> None:
    config = NodeConfig(node_id="n1", data_dir=tmp_path / "n1", state_backend="lmdb")
    opened = open_storage(config)  # bootstraps a single-node data dir, log at index 1
    assert opened.state_env is not None
    sm = opened.sm
    with sm.batch():
        sm.apply(MintCredits(to_peer="p", amount=1, reason="r"), index=1, term=1)
        sm.apply(MintCredits(to_peer="p", amount=1, reason="r"), index=5, term=1)
    opened.state_env.close()
    opened.storage.close()
    before = _files(config.data_dir)
    with pytest.raises(StorageError, match="ahead of the log") as err:
        open_storage(config)
    assert "move" in str(err.value) and "state.lmdb" in str(err.value)
    assert _files(config.data_dir) == before  # nothing changed, nothing lost

    shutil.rmtree(config.data_dir / "state.lmdb")
    opened = open_storage(config)
    assert opened.state_env is not None
    opened.state_env.close()
    opened.storage.close()
    env = StateEnv(str(config.data_dir / "state.lmdb"))
    env.set_cluster_id("c-another")
    env.store.close()
    before = _files(config.data_dir)
    with pytest.raises(StorageError, match="belongs to cluster c-another"):
        open_storage(config)
    assert _files(config.data_dir) == before
