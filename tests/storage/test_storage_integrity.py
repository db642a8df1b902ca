"""LogStore refuses corrupt, foreign, newer-format, missing and locked data directories."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import lmdb
import pytest

from tests.storage.helpers import flip_everywhere, make_entries, marker
from univrs.errors import StorageError
from univrs.raft.messages import HardState, Membership, SnapshotMeta
from univrs.storage import LogStore, layout

Opener = Callable[..., LogStore]


def data_file(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / "raft.lmdb" / "data.mdb"


def test_a_corrupted_entry_byte_is_refused_at_open_naming_index_and_file(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    store = open_store()
    store.append(hard_state=HardState(term=1), truncate_from=None, entries=make_entries(1, 50))
    store.close()
    assert flip_everywhere(data_file(data_dir), marker(17)) >= 1
    with pytest.raises(StorageError) as info:
        open_store()
    assert "log entry 17" in str(info.value)
    assert str(data_file(data_dir)) in str(info.value)
    # The refusal released the lock: the directory can be opened again (and refused again).
    with pytest.raises(StorageError, match="log entry 17"):
        open_store()


def test_a_corrupted_term_byte_is_refused_too(open_store: Opener, data_dir: pathlib.Path) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 5, term=0x5A5A))
    store.close()
    # The term sits just before the data: flip a bit in the term of entry 3.
    needle = (0x5A5A).to_bytes(8, "big") + b"\x00" + marker(3)
    assert flip_everywhere(data_file(data_dir), needle, offset=7) >= 1
    with pytest.raises(StorageError, match="log entry 3: checksum mismatch"):
        open_store()


def test_a_corrupted_hard_state_is_refused(open_store: Opener, data_dir: pathlib.Path) -> None:
    store = open_store()
    store.append(hard_state=HardState(term=1, vote="voter-xyz"), truncate_from=None, entries=[])
    store.close()
    assert flip_everywhere(data_file(data_dir), b"voter-xyz") >= 1
    with pytest.raises(StorageError, match="hard_state"):
        open_store()


def test_a_commit_past_the_last_stored_entry_is_refused_at_open(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    """A store whose hard state commits past its last entry lost entries it had made durable:
    refused at open as corrupt, naming both, rather than a node crashing on it later (before:
    ``ValueError`` from the core's constructor, "node crashed" with a traceback)."""
    store = open_store()
    store.append(
        hard_state=HardState(term=1, commit=9), truncate_from=None, entries=make_entries(1, 5)
    )
    store.close()
    with pytest.raises(StorageError, match="hard state commit 9 beyond the last stored entry 5"):
        open_store()


def test_a_corrupted_snapshot_chunk_is_refused_when_loaded(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    store = open_store()
    meta = SnapshotMeta(index=3, term=1, membership=Membership(voters=frozenset({"n1"})))
    store.save_snapshot(meta, b"<snapshot-body>" * 1000)
    store.close()
    assert flip_everywhere(data_file(data_dir), b"<snapshot-body>" * 4, offset=3) >= 1
    store = open_store()
    with pytest.raises(StorageError, match=r"snapshot chunk 0: checksum mismatch"):
        store.load_snapshot()


def test_a_garbage_data_file_is_refused(open_store: Opener, data_dir: pathlib.Path) -> None:
    open_store().close()
    data_file(data_dir).write_bytes(b"not an lmdb file" * 1024)
    with pytest.raises(StorageError, match=r"data\.mdb"):
        open_store()


def test_a_foreign_node_or_cluster_is_refused(open_store: Opener, data_dir: pathlib.Path) -> None:
    open_store(cluster_id="c-1").close()
    with pytest.raises(StorageError, match=r"belongs to node 'n1', not 'n2'"):
        open_store(node_id="n2")
    with pytest.raises(StorageError, match=r"belongs to cluster 'c-1', not 'c-2'"):
        open_store(cluster_id="c-2")
    store = open_store()  # no cluster id given: the stored one is kept
    assert store.cluster_id == "c-1"
    with pytest.raises(StorageError, match="belongs to cluster 'c-1'"):
        store.set_cluster_id("c-9")


def test_a_store_without_cluster_id_adopts_the_first_one(
    open_store: Opener, tmp_path: pathlib.Path
) -> None:
    store = open_store()
    assert store.cluster_id is None
    store.close()
    assert open_store(cluster_id="c-7").cluster_id == "c-7"
    # set_cluster_id records it durably on a store that has none.
    with LogStore.open(tmp_path / "other", node_id="n4") as other:
        other.set_cluster_id("c-8")
        other.set_cluster_id("c-8")  # the same id again is fine
    with pytest.raises(StorageError, match="belongs to cluster 'c-8'"):
        LogStore.open(tmp_path / "other", node_id="n4", cluster_id="c-9")


def test_a_newer_format_is_refused(open_store: Opener, data_dir: pathlib.Path) -> None:
    open_store().close()
    env = lmdb.open(str(data_dir / "raft.lmdb"), max_dbs=4)
    with env.begin(write=True) as txn:
        meta = env.open_db(layout.DB_META, txn=txn)
        txn.put(layout.KEY_FORMAT, layout.encode_record(layout.KEY_FORMAT, 99), db=meta)
    env.close()
    with pytest.raises(StorageError, match=r"newer univrs \(storage format 99; this build reads"):
        open_store()


def test_create_false_refuses_a_missing_or_empty_dir(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_store(create=False)
    data_dir.mkdir()
    with pytest.raises(StorageError, match="holds no univrs store"):
        open_store(create=False)
    open_store().close()
    assert open_store(create=False).node_id == "n1"


def test_a_second_store_on_the_same_dir_is_refused_in_process(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    store = open_store()
    with pytest.raises(StorageError, match=r"locked by another univrs process \(this process\)"):
        LogStore.open(data_dir, node_id="n1")
    assert (data_dir / "LOCK").read_text().strip() == str(os.getpid())
    store.close()
    LogStore.open(data_dir, node_id="n1").close()
