"""The identity record: one incarnation per data dir, created with it; a data dir that lost its
state (an empty or missing data.mdb, a lost identity) is corrupt, never a fresh one."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable

import lmdb
import pytest

from univrs.errors import StorageError
from univrs.raft.messages import HardState
from univrs.storage import LogStore, layout
from univrs.storage.datadir import locked_store_dir
from univrs.storage.layout import Corrupt
from univrs.storage.recover import stored_node_id

Opener = Callable[..., LogStore]


def env_dir(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / "raft.lmdb"


def rewrite_meta(data_dir: pathlib.Path, **records: object) -> None:
    """Replace (value) or delete (None) metadata records behind the store's back."""
    env = lmdb.open(str(env_dir(data_dir)), max_dbs=4)
    with env.begin(write=True) as txn:
        meta = env.open_db(layout.DB_META, txn=txn)
        for name, value in records.items():
            key = name.encode()
            if value is None:
                txn.delete(key, db=meta)
            else:
                txn.put(key, layout.encode_record(key, value), db=meta)
    env.close()


def test_each_data_dir_gets_one_incarnation_that_survives_reopen(
    open_store: Opener, data_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = open_store(cluster_id="c-1")
    incarnation = store.incarnation
    assert re.fullmatch(r"[0-9a-f]{16}", incarnation)
    store.append(hard_state=HardState(term=3), truncate_from=None, entries=[])
    store.close()
    reopened = open_store()
    assert reopened.incarnation == incarnation
    reopened.close()
    with LogStore.open(tmp_path / "other", node_id="n1") as other:
        assert other.incarnation != incarnation  # same id, another data dir
    rewrite_meta(data_dir, identity=["n1", None, ""])  # an incarnation is never empty
    with pytest.raises(StorageError, match="'identity': malformed"):
        open_store()


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_an_empty_or_missing_data_file_is_corrupt_not_fresh(
    open_store: Opener, data_dir: pathlib.Path, how: str
) -> None:
    store = open_store(cluster_id="c-1")
    store.append(hard_state=HardState(term=2, vote="n2"), truncate_from=None, entries=[])
    store.close()
    data_file = env_dir(data_dir) / "data.mdb"
    if how == "truncate":
        data_file.write_bytes(b"")
    else:
        data_file.unlink()
    with pytest.raises(StorageError, match="corrupt data dir") as info:
        open_store()
    assert str(data_file) in str(info.value)
    assert "--replace" in str(info.value)
    assert data_file.exists() == (how == "truncate")  # nothing was recreated
    if how == "truncate":
        assert data_file.stat().st_size == 0


def test_a_store_whose_identity_is_lost_is_corrupt_not_fresh(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    open_store(cluster_id="c-1").close()
    rewrite_meta(data_dir, format=None, identity=None)
    with pytest.raises(StorageError, match="lost its identity"):
        open_store()
    rewrite_meta(data_dir, format=layout.FORMAT_VERSION)  # format back, identity still gone
    with pytest.raises(StorageError, match="'identity' is missing"):
        open_store()


def test_the_offline_tools_lock_the_store_and_read_its_node_id(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        stored_node_id(data_dir)
    data_dir.mkdir()
    with pytest.raises(StorageError, match="holds no univrs store"):
        stored_node_id(data_dir)
    open_store(node_id="n7").close()
    assert stored_node_id(data_dir) == "n7"
    with locked_store_dir(data_dir) as (path, env_path):
        assert (path, env_path) == (data_dir, env_dir(data_dir))
        with pytest.raises(StorageError, match="locked by another univrs process"):
            open_store(node_id="n7")
    open_store(node_id="n7").close()  # the lock went with the block
    rewrite_meta(data_dir, identity=None)
    with pytest.raises(Corrupt, match="'identity' is missing"):
        stored_node_id(data_dir)


def test_a_store_from_before_incarnations_gets_one_once(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    open_store(cluster_id="c-1").close()
    rewrite_meta(data_dir, identity=["n1", "c-1"])  # the old two-item record
    store = open_store()
    incarnation = store.incarnation
    assert re.fullmatch(r"[0-9a-f]{16}", incarnation) and store.cluster_id == "c-1"
    store.close()
    assert open_store().incarnation == incarnation  # written back durably


def test_an_interrupted_creation_is_discarded(open_store: Opener, data_dir: pathlib.Path) -> None:
    leftover = data_dir / "raft.lmdb.new"  # datadir.NEW_ENV_DIR
    leftover.mkdir(parents=True)
    (leftover / "data.mdb").write_bytes(b"half-made store")
    store = open_store()
    assert not leftover.exists()
    assert store.initial_state().hard_state == HardState()
