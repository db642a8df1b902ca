"""The persistent state env (``state.lmdb``) across the offline tools and backend switches:
``univrs snapshot restore`` builds it, so the first start resumes from it; ``univrs recover``
keeps it (restamped with the new cluster id), and an interrupted recover leaves a data dir that
starts and rebuilds it; a data dir switched between ``memory`` and ``lmdb`` both ways ends in
the same state; a state env that is corrupt or is not a state env stops the start with an
error that says what to do, and changes nothing (docs/state-at-scale.md, docs/storage.md).
"""

from __future__ import annotations

import errno
import logging
import pathlib
import shutil
import threading
from typing import Any

import attrs
import pytest
import trio

from tests.api.helpers import Cluster, wait_until
from tests.runtime.test_state_lmdb import (
    _configs,
    _files,
    _opened,
    _tables,
    _write,
    write_until_only_a_snapshot_catches_up,
)
from tests.storage.test_backup_restore_recover import a_state, write_backup
from univrs import codec
from univrs.errors import StorageError
from univrs.server.datadir import open_storage
from univrs.sm.snapshot import snapshot_plain
from univrs.storage import LogStore
from univrs.storage import recover as recover_module
from univrs.storage.backup import read_backup
from univrs.storage.recover import force_new_cluster
from univrs.storage.restore import Member, restore_data_dir
from univrs.storage.sm_tables import StateEnv
from univrs.storage.snapshot_install import InstallFile

pytestmark = pytest.mark.timeout(300)


async def test_a_restored_data_dir_starts_by_resuming_its_state_env(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``snapshot restore`` builds ``state.lmdb`` at the backup's index, stamped with the new
    cluster: the first start resumes from it (before: it was filled from the stored snapshot
    at the first start, O(state))."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = _configs(tmp_path, 1)
    config = configs["n1"]
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        node = await cluster.start("n1")
        await cluster.wait_leader()
        await _write(node, 1, 20)
        expected = _tables(node)
        write_backup(tmp_path / "b.snap", node.runtime.sm)  # no await: one consistent state
        index = node.runtime.sm.last_applied_index
        await cluster.kill("n1")
        member = Member(id="n1", raft_addr=config.raft_addr, api_addr=config.api_addr)
        result = restore_data_dir(
            read_backup(tmp_path / "b.snap"), tmp_path / "r1", node_id="n1", members=[member]
        )
        env = StateEnv(str(tmp_path / "r1" / "state.lmdb"))
        assert (env.applied()[0], env.cluster_id()) == (index, result.cluster_id)
        env.store.close()
        assert not (tmp_path / "r1.restore-tmp").exists()
        caplog.clear()
        restored = Cluster(
            nursery=nursery, configs={"n1": attrs.evolve(config, data_dir=tmp_path / "r1")}
        )
        node = await restored.start("n1")
        assert _opened(caplog) == [("resumed", index)]
        await restored.wait_leader()
        await wait_until(lambda: node.runtime.applied_index > index, "the new leader's no-op", 30)
        assert _tables(node) == expected
        await _write(node, 21, 5)  # and it serves writes
        nursery.cancel_scope.cancel()


def test_restore_for_the_memory_backend_builds_no_state_env(tmp_path: pathlib.Path) -> None:
    write_backup(tmp_path / "b.snap", a_state())
    member = Member(id="n1", raft_addr="127.0.0.1:9001")
    backup = read_backup(tmp_path / "b.snap")
    restore_data_dir(
        backup, tmp_path / "m1", node_id="n1", members=[member], state_backend="memory"
    )
    assert not (tmp_path / "m1" / "state.lmdb").exists()
    with pytest.raises(StorageError, match="state backend 'disk'"):
        restore_data_dir(
            backup, tmp_path / "m2", node_id="n1", members=[member], state_backend="disk"
        )


async def test_recover_keeps_the_state_env_and_the_start_resumes_from_it(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: recover changed the log's cluster id only, so the start refused the state env
    ("belongs to cluster ...") until the operator moved it away."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=_configs(tmp_path, 1))
        node = await cluster.start("n1")
        await cluster.wait_leader()
        await _write(node, 1, 20)
        expected, applied = _tables(node), node.runtime.applied_index
        await cluster.kill("n1")
        result = force_new_cluster(tmp_path / "n1")
        assert result.state == "kept"
        assert not (tmp_path / "n1" / "state.lmdb.recover").exists()
        caplog.clear()
        node = await cluster.start("n1")
        assert _opened(caplog) == [("resumed", applied)]
        assert node.cluster_id == result.cluster_id
        await cluster.wait_leader()
        await wait_until(
            lambda: node.runtime.applied_index >= result.config_index, "the recovered config", 30
        )
        assert _tables(node) == expected
        await _write(node, 21, 5)
        nursery.cancel_scope.cancel()


async def test_an_interrupted_recover_leaves_a_data_dir_that_starts_and_rebuilds_the_state(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the log was recovered, before the state env was restamped: no
    ``state.lmdb`` (it is aside), so the start rebuilds it from the snapshot and the log; the
    next recover discards the leftover."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = _configs(tmp_path, 1, snapshot_threshold=8, snapshot_trailing_entries=0)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        node = await cluster.start("n1")
        await cluster.wait_leader()
        await _write(node, 1, 20)
        await wait_until(lambda: node.runtime.last_snapshot_index > 8, "a snapshot", 30)
        expected = _tables(node)
        await cluster.kill("n1")

        def crash(*args: object) -> str:
            raise RuntimeError("killed")

        monkeypatch.setattr(recover_module, "_state_back", crash)
        with pytest.raises(RuntimeError, match="killed"):
            force_new_cluster(tmp_path / "n1")
        monkeypatch.undo()
        assert not (tmp_path / "n1" / "state.lmdb").exists()
        assert (tmp_path / "n1" / "state.lmdb.recover").exists()
        caplog.clear()
        node = await cluster.start("n1")
        assert [how for how, _ in _opened(caplog)] == ["replaced from the stored snapshot"]
        await cluster.wait_leader()
        await wait_until(lambda: _tables(node) == expected, "the rebuilt state", 30)
        await cluster.kill("n1")
        # Recovering again (the operator re-runs it): the leftover goes, the state is kept.
        assert force_new_cluster(tmp_path / "n1").state == "kept"
        assert sorted(p.name for p in (tmp_path / "n1").iterdir() if "state" in p.name) == [
            "state.lmdb"
        ]
        nursery.cancel_scope.cancel()


def test_recover_discards_a_state_env_it_cannot_keep(tmp_path: pathlib.Path) -> None:
    config = _configs(tmp_path, 1)["n1"]
    data_dir = _bootstrapped(tmp_path)  # a log, a state env
    env = StateEnv(str(data_dir / "state.lmdb"))
    env.set_cluster_id("c-another")
    env.close()
    result = force_new_cluster(config.data_dir)
    assert result.state.startswith("discarded: it belongs to cluster c-another")
    assert not (config.data_dir / "state.lmdb").exists()
    opened = open_storage(config)  # starts cleanly, with a new state env
    assert opened.state_env is not None and opened.state_env.cluster_id() == result.cluster_id
    opened.state_env.close()
    opened.storage.close()


async def test_switching_backends_both_ways_keeps_the_state(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """memory -> lmdb (the env is filled from the stored snapshot), lmdb -> memory (the env is
    left alone, the log and snapshots go on), memory -> lmdb again (the stale env is behind
    the snapshot: replaced), each time the same tables as before the switch."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    lmdb_configs = _configs(tmp_path, 1, snapshot_threshold=8, snapshot_trailing_entries=0)
    memory = {"n1": attrs.evolve(lmdb_configs["n1"], state_backend="memory")}
    expected: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        for round_, configs in enumerate((memory, lmdb_configs, memory, lmdb_configs)):
            caplog.clear()
            expected = await _switch_round(
                Cluster(nursery=nursery, configs=configs), caplog, round_, expected
            )
        nursery.cancel_scope.cancel()


async def _switch_round(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, round_: int, expected: dict[str, Any]
) -> dict[str, Any]:
    node = await cluster.start("n1")
    opened = _opened(caplog)
    if node.config.state_backend == "memory":
        assert opened == []
        assert not round_ or node.runtime.last_snapshot_index > 0  # restored from it
    else:
        assert [how for how, _ in opened] == ["replaced from the stored snapshot"]
    await cluster.wait_leader()
    if expected:
        await wait_until(lambda: _tables(node) == expected, "the state as it was", 30)
    snapshot = node.runtime.last_snapshot_index
    await _write(node, 1 + 100 * round_, 12)
    await wait_until(
        lambda: node.runtime.last_snapshot_index > snapshot, "a snapshot (and compaction)", 30
    )
    tables = _tables(node)
    await cluster.kill("n1")
    return tables


def _data(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file's bytes but LMDB's lock files (reader tables, created by any open)."""
    return {k: v for k, v in _files(folder).items() if not k.endswith("lock.mdb")}


def _bootstrapped(tmp_path: pathlib.Path) -> pathlib.Path:
    config = _configs(tmp_path, 1)["n1"]
    opened = open_storage(config)
    assert opened.state_env is not None
    opened.state_env.close()
    opened.storage.close()
    return config.data_dir


@pytest.mark.parametrize("kind", ["foreign", "garbage", "file", "undecodable", "garbled-pages"])
def test_a_corrupt_or_foreign_state_env_is_refused_and_changes_nothing(
    tmp_path: pathlib.Path, kind: str
) -> None:
    """Before: a state env whose meta pages are valid but whose other pages are garbled (a
    torn or bit-rotted file) crashed the start with a traceback (``node crashed:
    CorruptedError: MDB_CORRUPTED``) instead of this refusal."""
    data_dir = _bootstrapped(tmp_path)
    state = data_dir / "state.lmdb"
    if kind == "garbled-pages":
        # Zero every page after the two meta pages (the main database's root among them):
        # LMDB opens the environment and fails on the first read.
        data = bytearray((state / "data.mdb").read_bytes())
        data[2 * 4096 :] = bytes(len(data) - 2 * 4096)
        (state / "data.mdb").write_bytes(bytes(data))
        match = "is corrupt"
    else:
        shutil.rmtree(state)
    if kind == "garbled-pages":
        pass  # garbled above, in place
    elif kind == "foreign":  # another LMDB environment: a copy of the log's
        shutil.copytree(data_dir / "raft.lmdb", state)
        match = "is not a state env"
    elif kind == "garbage":
        state.mkdir()
        (state / "data.mdb").write_bytes(b"\x5a" * 40_000)
        match = "is corrupt: .*data.mdb is not an LMDB data file"
    elif kind == "file":
        state.write_bytes(b"x")
        match = "cannot be opened"
    else:
        env = StateEnv(str(state))
        with env.store.env.begin(write=True) as txn:
            txn.put(b"state", b"\xff", db=env.store.db("meta"))
        env.close()
        match = "does not decode"
    before = _data(data_dir)
    config = _configs(tmp_path, 1)["n1"]
    with pytest.raises(StorageError, match=match) as err:
        open_storage(attrs.evolve(config, data_dir=data_dir))
    assert "move" in str(err.value) and str(state) in str(err.value)
    assert _data(data_dir) == before
    with LogStore.open(data_dir, node_id="n1", create=False):
        pass  # the log is untouched and usable


def _crash() -> None:
    """A held storage call that ends as a crash does: it failed, so nothing queued after it is
    written. (Returning instead, as this test's stalls did, told the writer the install was
    stored: when the writer's completion ran before the node's cancellation reached it, the
    next queued write stored the hard state that follows the install, commit past the durable
    log, and the restart refused the data dir: the CI failure of 37e15ec. No crash can do
    that: nothing after the install's switch is written before the switch is.)"""
    raise OSError(errno.EIO, "simulated crash: the call never completed")


async def test_an_install_is_adopted_into_the_state_env_only_once_it_is_stored(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower killed after a leader's snapshot reached it, before the storage writer
    stored it: its state env must not hold the snapshot's state yet. Before: the apply loop
    adopted the restored state at once, so the env was ahead of the durable log and the next
    start refused the data dir ("ahead of the log"). (Found by the simulator on the LMDB
    backend: ``python -m univrs.sim --state-backend lmdb``.)"""
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = _configs(tmp_path, 3, snapshot_threshold=16, snapshot_trailing_entries=4)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        for nid in configs:
            await cluster.start(nid)
        leader = await cluster.wait_leader()
        victim = "n3" if leader.config.node_id != "n3" else "n2"
        await _write(leader, 1, 5)
        await cluster.kill(victim)
        await write_until_only_a_snapshot_catches_up(cluster, victim, 6)
        leader = await cluster.wait_leader()

        entered, release = threading.Event(), threading.Event()
        save = LogStore.save_snapshot
        victim_dir = configs[victim].data_dir

        def stalled(store: LogStore, meta: Any, data: bytes) -> None:
            if pathlib.Path(store.data_dir) != victim_dir:
                save(store, meta, data)
                return
            entered.set()
            release.wait(60)
            _crash()  # the snapshot is never stored

        switch = InstallFile.switch

        def stalled_switch(install: InstallFile) -> None:
            # Since the fourteenth increment the install's item of the writer's queue is the
            # switch of the record (its file written before): held the same way.
            if install._files.directory.parent != victim_dir:
                switch(install)
                return
            entered.set()
            release.wait(60)
            _crash()

        monkeypatch.setattr(LogStore, "save_snapshot", stalled)
        monkeypatch.setattr(InstallFile, "switch", stalled_switch)
        caplog.clear()
        node = await cluster.start(victim)
        await wait_until(entered.is_set, "the install reaching the storage writer", 60)
        applier: Any = node.runtime._applier

        def adopted_or_waiting() -> bool:
            adopted = "state replaced from a snapshot" in [r.getMessage() for r in caplog.records]
            return adopted or not getattr(applier, "_durable", {"old code": None})

        await wait_until(adopted_or_waiting, "the apply loop at the install", 60)
        cluster._scopes[victim].cancel()  # killed; then the writer's call returns, unstored
        release.set()
        await cluster._stopped[victim].wait()
        del cluster.nodes[victim]
        monkeypatch.undo()
        await cluster.start(victim)  # before: StorageError, the env ahead of the log
        await wait_until(
            lambda: cluster.nodes[victim].runtime.applied_index >= leader.runtime.applied_index,
            "the victim caught up",
            60,
        )
        assert _tables(cluster.nodes[victim]) == _tables(leader)
        nursery.cancel_scope.cancel()


def test_the_state_env_is_private_like_the_log(tmp_path: pathlib.Path) -> None:
    """docs/security.md: the data dir is 0700 with 0600 files. Before: ``state.lmdb`` was made
    0755 with 0644 files (lmdb.open's default mode), unlike ``raft.lmdb``; and so was every
    environment a snapshot is staged in."""
    data_dir = _bootstrapped(tmp_path)
    env = StateEnv(str(data_dir / "state.lmdb"))
    try:
        env.stage(codec.encode_plain(snapshot_plain(a_state(5))))
        paths = sorted(data_dir.rglob("*"))
        assert any(p.name == "data.mdb" and "incoming" in str(p) for p in paths), paths
        for path in [data_dir, *paths]:
            mode = path.stat().st_mode & 0o777
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    finally:
        env.close()
