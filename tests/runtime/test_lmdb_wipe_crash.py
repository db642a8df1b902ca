"""A crash while a pristine node discards its data dir to join another cluster
(``wipe_raft_state``, univrs/server/datadir.py) leaves a data dir that starts (found by the
verify helper, session 5).

The log (``raft.lmdb``) and the persistent state (``state.lmdb``, ``[state] backend = "lmdb"``)
are two environments removed one after the other. Removing the log first, a kill -9 before the
state went left a state env whose applied index is ahead of the new, empty log: the start
refuses that ("ahead of the log ... move state.lmdb away") and the node stayed down until an
operator intervened. A state without its log is the combination a start must refuse; a log
without its state is one it rebuilds (from the stored snapshot and the log), so the state
goes first.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import pytest

from univrs.config import NodeConfig
from univrs.server.datadir import open_storage, wipe_raft_state
from univrs.sm import MintCredits


class Crash(BaseException):
    """The process dies here."""


def test_a_crash_between_the_removals_of_a_join_wipe_leaves_a_startable_data_dir(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = NodeConfig(node_id="n1", data_dir=tmp_path / "n1", state_backend="lmdb")
    opened = open_storage(config)  # bootstraps a single-node data dir, log at index 1
    assert opened.state_env is not None
    with opened.sm.batch():
        opened.sm.apply(MintCredits(to_peer="p", amount=1, reason="r"), index=1, term=1)
    opened.state_env.close()
    opened.storage.close()

    rmtree = shutil.rmtree
    stores = (config.data_dir / "raft.lmdb", config.data_dir / "state.lmdb")

    def crashing_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        rmtree(path, *args, **kwargs)
        if sum(not store.exists() for store in stores) == 1:
            raise Crash  # one store is gone, the other is not yet

    monkeypatch.setattr(shutil, "rmtree", crashing_rmtree)
    with pytest.raises(Crash):
        wipe_raft_state(config)
    monkeypatch.undo()

    opened = open_storage(config)  # the next start: must not refuse the data dir
    assert opened.state_env is not None
    opened.state_env.close()
    opened.storage.close()
