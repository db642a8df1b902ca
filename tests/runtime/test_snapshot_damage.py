"""A node's stored snapshot damaged at rest (docs/storage.md, "Guarantees"; found by red team,
session 11): on the LMDB state backend a node resumes without reading it, so the damage was
found when the node first streamed the snapshot to a follower, and the read's checksum
mismatch stopped the node. Now the stream ends, the damage is logged once at ERROR, the node
takes a new snapshot from its state (at the same index when nothing was applied since) and
streams that one; the scrub finds the damage after start without any follower's help.

The damage is a flipped bit in the node's ``snapshot-*.dat`` file, made in place while the
node runs (its reader holds the file open: it sees the flip, as it would see a disk's)."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest
import trio

from tests.api.helpers import Cluster, make_configs, wait_until
from tests.runtime.test_state_lmdb import _caught_up, _write, write_until_only_a_snapshot_catches_up
from univrs.config import NodeConfig
from univrs.errors import StorageError
from univrs.server.node import Node
from univrs.sm import state_digest

pytestmark = pytest.mark.timeout(300)

DAMAGED = "stored snapshot damaged: taking a new one from the state"


def _scrubbed(tmp_path: pathlib.Path, size: int, backend: str) -> dict[str, NodeConfig]:
    """Nodes that snapshot every 16 entries and scrub their snapshot every 300 ms."""
    return make_configs(
        tmp_path,
        size,
        state_backend=backend,
        snapshot_threshold=16,
        snapshot_trailing_entries=4,
        snapshot_scrub_interval_ms=300,
    )


def _flip_last_block(path: pathlib.Path) -> None:
    """Flip a bit in the last 4 KiB block of the file (the last one the stream reads)."""
    size = os.path.getsize(path)
    offset = max(0, (size - 1) // 4096 * 4096) + min(50, size - 1 - (size - 1) // 4096 * 4096)
    fd = os.open(path, os.O_RDWR)
    try:
        (byte,) = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte ^ 0x04]), offset)
    finally:
        os.close(fd)


def _stored_file(node: Node) -> pathlib.Path:
    where = node.storage.stored_snapshot_where()
    assert where is not None and where.endswith(".dat"), where
    return pathlib.Path(where)


async def _one_node_with_a_snapshot(cluster: Cluster) -> Node:
    """n1 started, 20 keys written, a snapshot taken now (so none is left in progress to
    replace the file the test damages)."""
    node = await cluster.start("n1")
    await cluster.wait_leader()
    await _write(node, 1, 20)
    await node.runtime.take_snapshot()
    return node


async def _start_with_a_follower_left_behind(cluster: Cluster, *, writes: int) -> str:
    """Every node of ``cluster`` started, ``writes`` keys written, then a follower killed and
    the others written to until only a snapshot can catch it up; the follower's id (it is
    down)."""
    for nid in cluster.configs:
        await cluster.start(nid)
    leader = await cluster.wait_leader()
    await _write(leader, 1, writes)
    victim = next(n for n in cluster.nodes if n != leader.config.node_id)
    await cluster.kill(victim)
    await write_until_only_a_snapshot_catches_up(cluster, victim, 1000)
    return victim


def _damage_counted(node: Node, found_by: str) -> float:
    """``univrs_snapshot_damage_total{found_by=...}`` in the node's metrics."""
    line = f'univrs_snapshot_damage_total{{found_by="{found_by}"}} '
    (value,) = [x[len(line) :] for x in node.metrics.render().splitlines() if x.startswith(line)]
    return float(value)


def _damage_reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == DAMAGED]


async def test_a_damaged_snapshot_file_is_retaken_and_a_lagging_follower_catches_up(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = make_configs(
        tmp_path,
        3,
        state_backend="lmdb",
        snapshot_threshold=16,
        snapshot_trailing_entries=4,
        snapshot_max_chunk_size=1024,  # a stream of several chunks
        snapshot_scrub_interval_ms=0,  # the stream finds the damage, not the scrub
    )
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        victim = await _start_with_a_follower_left_behind(cluster, writes=60)
        # Every running node's stored snapshot is damaged (whichever leads streams its own).
        # First each one's snapshot is taken now: one being saved meanwhile would replace
        # the damaged file; the next is 16 entries away (no more writes until the damage).
        damaged = {}
        for node in cluster.running():
            await node.runtime.take_snapshot()
            path = _stored_file(node)
            damaged[node.config.node_id] = path
            _flip_last_block(path)
        acknowledged = state_digest((await cluster.wait_leader()).runtime.sm)
        await cluster.start(victim)
        leader = await cluster.wait_leader()
        lid = leader.config.node_id
        # The leader stayed up (a stopped node's exception would end this test's nursery),
        # found the damage while streaming, and replaced its snapshot with a new file.
        await wait_until(lambda: _damage_reports(caplog), "the damage logged", 60)
        await _caught_up(cluster, victim, lid)
        assert state_digest(cluster.nodes[victim].runtime.sm) == state_digest(leader.runtime.sm)
        reports = _damage_reports(caplog)
        wheres = [r.where for r in reports]  # type: ignore[attr-defined]
        assert len(wheres) == len(set(wheres))  # each damaged copy logged once
        assert all(r.levelno == logging.ERROR for r in reports)
        assert "checksum mismatch" in reports[0].problem  # type: ignore[attr-defined]
        (streamer,) = [nid for nid, path in damaged.items() if str(path) == wheres[0]]
        node = cluster.nodes[streamer]
        assert _damage_counted(node, "stream") >= 1  # the metric (s13-small)
        await wait_until(
            lambda: _stored_file(node) != damaged[streamer], "the retaken snapshot", 60
        )
        loaded = await trio.to_thread.run_sync(node.storage.load_snapshot)  # intact
        assert loaded is not None and loaded[0].index >= 1
        # Every write acknowledged before the damage is on the follower; and it goes on.
        await _write(leader, 5000, 3)
        await _caught_up(cluster, victim, lid)
        assert acknowledged != state_digest(cluster.nodes[victim].runtime.sm)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
async def test_the_scrub_finds_a_damaged_snapshot_after_start_and_retakes_it(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = _scrubbed(tmp_path, 1, backend)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        node = await _one_node_with_a_snapshot(cluster)
        path = _stored_file(node)
        index = node.runtime.last_snapshot_index
        _flip_last_block(path)
        await wait_until(lambda: _damage_reports(caplog), "the scrub's finding", 60)
        await wait_until(lambda: _stored_file(node) != path, "the retaken snapshot", 60)
        loaded = await trio.to_thread.run_sync(node.storage.load_snapshot)
        assert loaded is not None and loaded[0].index >= index
        new_index = loaded[0].index
        (report,) = _damage_reports(caplog)  # the next scrubs find the new copy intact
        assert report.where == str(path)  # type: ignore[attr-defined]
        # Counted in the node's metrics by what found it (s13-small).
        assert _damage_counted(node, "scrub") == 1
        assert _damage_counted(node, "stream") == 0

        def scrubbed() -> bool:
            return any(
                r.getMessage() == "snapshot scrubbed" and r.index == new_index  # type: ignore[attr-defined]
                for r in caplog.records
            )

        await wait_until(scrubbed, "a scrub of the new snapshot", 30)
        assert len(_damage_reports(caplog)) == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
async def test_a_snapshot_file_damaged_while_stopped(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    """Cut short while the node is down. On LMDB the node resumes from its state (past the
    snapshot, which it does not read) and the scrub has it retaken; in memory the snapshot is
    the state's only copy below the log: the start is refused, saying what to do (as for any
    snapshot that cannot be restored: test_bad_stored_snapshot.py)."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = _scrubbed(tmp_path, 1, backend)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        node = await _one_node_with_a_snapshot(cluster)
        before = state_digest(node.runtime.sm)
        path = _stored_file(node)
        await cluster.kill("n1")
        os.truncate(path, os.path.getsize(path) - 1)
        if backend == "memory":
            with pytest.raises(StorageError, match=r"bytes, not .*--replace"):
                await cluster.start("n1")
            nursery.cancel_scope.cancel()
            return
        node = await cluster.start("n1")
        await cluster.wait_leader()
        assert state_digest(node.runtime.sm) != "" and node.runtime.applied_index > 0
        await wait_until(lambda: _damage_reports(caplog), "the scrub's finding", 60)
        await wait_until(lambda: _stored_file(node) != path, "the retaken snapshot", 60)
        loaded = await trio.to_thread.run_sync(node.storage.load_snapshot)
        assert loaded is not None
        (report,) = _damage_reports(caplog)
        assert "bytes, not" in report.problem  # type: ignore[attr-defined]
        await _write(node, 100, 2)  # it serves
        assert state_digest(node.runtime.sm) != before
        nursery.cancel_scope.cancel()


async def test_a_damaged_installed_snapshot_is_scrubbed_and_retaken_while_following(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A follower that caught up by a snapshot from the leader (stored in a file since
    s12-scale; before, in chunks of ``data.mdb``, whose damage the storage tests cover) has
    its stored snapshot damaged while it runs and follows: its scrub finds it and it retakes
    its snapshot from its state, and it keeps up with the leader."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = _scrubbed(tmp_path, 3, "lmdb")
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        victim = await _start_with_a_follower_left_behind(cluster, writes=30)
        node = await cluster.start(victim)
        await _caught_up(cluster, victim, (await cluster.wait_leader()).config.node_id)
        damaged = _stored_file(node)  # the installed one, or one the node took since
        _flip_last_block(damaged)
        await wait_until(lambda: _damage_reports(caplog), "the scrub's finding", 60)
        (report,) = _damage_reports(caplog)
        assert report.where == str(damaged)  # type: ignore[attr-defined]
        await wait_until(
            lambda: str(node.storage.stored_snapshot_where()) not in ("None", str(damaged)),
            "the retaken snapshot, in another file",
            60,
        )
        loaded = await trio.to_thread.run_sync(node.storage.load_snapshot)
        assert loaded is not None
        await _write(cluster.nodes[(await cluster.wait_leader()).config.node_id], 5000, 2)
        await _caught_up(cluster, victim, (await cluster.wait_leader()).config.node_id)
        nursery.cancel_scope.cancel()
