"""A snapshot from the leader reaches the persistent state (``[state] backend = "lmdb"``) only
once it is stored in the log (found by the verify helper, session 5).

The state env is committed without fsync, so a process crash keeps every commit of it (the
page cache has them) and the start-up refuses a state ahead of the log (univrs/server/
statedir.py). The apply loop used to replace the state with an installed snapshot as soon as
the core handed the snapshot out, while the storage writer was still storing it: a kill -9 in
between left a state env at the snapshot's index over a log that ends before it, and the node
refused to start ("ahead of the log ... move state.lmdb away") until an operator intervened.

The test holds the victim's store of the snapshot (in the storage writer's thread), gives the
apply loop every chance to replace the state meanwhile, and takes the crash image there: a
consistent copy of both environments, as a kill -9 at that instant leaves them. (The victim
stays down until the leader compacted past everything it queued for it, not just past its log:
appends queued while it was down would otherwise catch it up by entries.)
Fails on the old code: the image is refused ("ahead of the log, which ends at 13").
"""

from __future__ import annotations

import pathlib
import shutil
import time
from typing import Any

import attrs
import pytest
import trio

from tests.api.helpers import Cluster, wait_until
from tests.runtime.test_state_lmdb import (
    _caught_up,
    _configs,
    _write_with,
    write_until_only_a_snapshot_catches_up,
)
from univrs.raft.interpreter import InstallJob
from univrs.raft.messages import SnapshotMeta
from univrs.runtime.writer import StorageWriter
from univrs.server.datadir import open_storage
from univrs.server.node import Node
from univrs.server.statedir import PersistentState
from univrs.storage.log_store import LogStore
from univrs.storage.sm_tables import StateEnv

pytestmark = pytest.mark.timeout(300)

# How long the held store waits for the apply loop to replace the state (it does within
# milliseconds when it does not wait for the store; with the fix it never does).
HOLD = 5.0


def _state(node: Node) -> StateEnv:
    backend = node.runtime.state_backend
    assert isinstance(backend, PersistentState)
    return backend.env


def _copy_env(env: Any, folder: pathlib.Path) -> None:
    """A consistent copy of an open LMDB environment (what a crash at this instant leaves)."""
    folder.mkdir(parents=True)
    env.copy(str(folder))


async def test_a_crash_while_a_leader_snapshot_is_stored_leaves_a_startable_data_dir(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = _configs(tmp_path / "nodes", 3, snapshot_threshold=16, snapshot_trailing_entries=4)
    image = tmp_path / "crash-image"
    seen: dict[str, int] = {}
    held: dict[str, Any] = {}
    start_install = StorageWriter._start_install

    def held_install(self: StorageWriter, job: InstallJob) -> None:
        store = getattr(self.install, "__self__", None)
        if held.get("victim") is None or getattr(store, "data_dir", None) != held["dir"]:
            start_install(self, job)
            return
        assert isinstance(store, LogStore) and self.install is not None
        install = self.install
        staging = self._staged.get(id(job))

        def held_save(meta: SnapshotMeta, data: bytes) -> None:
            # The writer's thread, held: waits (with deadlines) for the victim's node object,
            # then gives its apply loop the time to replace the state.
            deadline = time.monotonic() + 30
            while held["victim"] not in cluster.nodes and time.monotonic() < deadline:
                time.sleep(0.01)
            env: StateEnv = _state(cluster.nodes[held["victim"]])
            deadline = time.monotonic() + HOLD
            while env.applied()[0] < meta.index and time.monotonic() < deadline:
                time.sleep(0.01)
            if not seen:
                seen["state"], seen["snapshot"] = env.applied()[0], meta.index
                _copy_env(store._env._env, image / "raft.lmdb")
                # A node's own snapshot is a file beside data.mdb (docs/storage.md): part of
                # what a crash leaves, as the environment is.
                for file in store.path.glob("snapshot-*.dat"):
                    shutil.copy(file, image / "raft.lmdb" / file.name)
                _copy_env(env.store.env, image / "state.lmdb")
            if staging is None:
                install(meta, data)

        if staging is not None:
            # Its data was written to a file off the writer's queue: the item holds the
            # switch of the record (the image then has the written file, not yet named).
            switch = staging.save.switch

            def held_switch() -> None:
                held_save(job.meta, job.data)
                switch()

            staging.save.switch = held_switch  # type: ignore[method-assign]
            start_install(self, job)
            return
        self.install = held_save
        try:
            start_install(self, job)
        finally:
            self.install = install

    monkeypatch.setattr(StorageWriter, "_start_install", held_install)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        for nid in configs:
            await cluster.start(nid)
        leader = await cluster.wait_leader()
        await _write_with(leader.store, 1, 5)
        victim = "n3" if leader.config.node_id != "n3" else "n2"
        await _caught_up(cluster, victim, leader.config.node_id)
        await cluster.kill(victim)
        await write_until_only_a_snapshot_catches_up(cluster, victim, 101)
        leader = await cluster.wait_leader()
        held["victim"], held["dir"] = victim, configs[victim].data_dir
        await cluster.start(victim)
        await wait_until(lambda: bool(seen), "the victim storing the leader's snapshot", 60)
        await _caught_up(cluster, victim, leader.config.node_id)
        nursery.cancel_scope.cancel()

    # The crash image starts (resuming, or replacing the state from the stored snapshot) ...
    for name in (p.name for p in configs[victim].data_dir.iterdir()):
        if name not in ("raft.lmdb", "state.lmdb") and not (image / name).exists():
            source = configs[victim].data_dir / name
            if source.is_file():
                shutil.copy(source, image / name)
    opened = open_storage(attrs.evolve(configs[victim], data_dir=image))
    assert opened.state_env is not None
    opened.state_env.close()
    opened.storage.close()
    # ... because the state never went past the log: it was replaced only after the store.
    assert seen["state"] < seen["snapshot"], seen
