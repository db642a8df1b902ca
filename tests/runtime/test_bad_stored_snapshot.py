"""A stored snapshot that cannot be restored stops the start with a clear error (issue 12)."""

from __future__ import annotations

import pathlib

import cbor2
import pytest

from univrs.config import NodeConfig
from univrs.errors import StorageError
from univrs.raft.messages import Membership, SnapshotMeta
from univrs.server.datadir import open_storage


def test_an_unrestorable_stored_snapshot_names_the_data_dir_and_what_to_do(
    tmp_path: pathlib.Path,
) -> None:
    config = NodeConfig(node_id="n1", data_dir=tmp_path / "n1")
    opened = open_storage(config)  # bootstraps a single-node data dir
    try:
        meta = SnapshotMeta(index=1, term=1, membership=Membership(voters=frozenset({"n1"})))
        garbage = cbor2.dumps({"format": "univrs-snapshot", "version": 1})  # valid CBOR
        opened.storage.save_snapshot(meta, garbage)
    finally:
        if opened.state_env is not None:  # the LMDB state backend: its env is behind (at 0)
            opened.state_env.close()
        opened.storage.close()
    with pytest.raises(StorageError) as err:
        open_storage(config)
    text = str(err.value)
    assert str(config.data_dir) in text and "index 1" in text
    assert "--replace" in text and "existing" in text
