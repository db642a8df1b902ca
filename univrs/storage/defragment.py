"""Offline defragmentation of a stopped node's data dir (``univrs defrag``)."""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import attrs

from univrs.errors import StorageError
from univrs.storage import layout
from univrs.storage.datadir import ENV_DIR, fsync_dir, identity_node, locked_store_dir
from univrs.storage.env import StoreEnv
from univrs.storage.log_store import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, LogStore

# A scratch data dir for ``defrag``: the compacted copy is built and verified in
# DEFRAG_DIR/raft.lmdb before it replaces data.mdb; a leftover one is discarded.
DEFRAG_DIR = "raft.lmdb.defrag"


@attrs.frozen(kw_only=True)
class DefragResult:
    """What ``defrag`` did: the data file's size before and after, in bytes."""

    data_file: pathlib.Path
    before_bytes: int
    after_bytes: int
    in_use_bytes: int  # what the databases used before (the rest was free pages)
    seconds: float


def defrag(data_dir: str | os.PathLike[str]) -> DefragResult:
    """Give the free pages of a stopped node's ``data.mdb`` back to the file system.

    LMDB reuses free pages but never shrinks its file. This writes a compacted copy (LMDB's
    copy with compaction: one read transaction, no free pages), fsyncs it, verifies it like a
    store being opened (identity, every checksum, the log invariants), then renames it over
    ``data.mdb`` and fsyncs the directory: a crash leaves either file whole. Offline only: the
    data dir's lock refuses it while a node runs there. Refuses what ``LogStore.open``
    refuses (a missing, empty or truncated data file, corrupt data); changes nothing then.
    """
    started = time.monotonic()
    with locked_store_dir(data_dir) as (path, env_path):
        work = path / DEFRAG_DIR
        try:
            if work.exists():
                shutil.rmtree(work)  # a defrag that was interrupted: nothing used it
            (work / ENV_DIR).mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise StorageError(f"cannot prepare {work}: {exc.strerror}") from None
        env = StoreEnv.open(
            env_path, create=False, map_size=DEFAULT_MAP_SIZE, max_map_size=DEFAULT_MAX_MAP_SIZE
        )
        try:
            node_id = env.read(lambda txn: identity_node(txn.get(layout.KEY_IDENTITY, db=env.meta)))
            before, in_use = env.space()
            env.copy_compacted(work / ENV_DIR / "data.mdb")
        finally:
            env.close()
        # Opening the copy verifies it as the node would at its start.
        LogStore.open(work, node_id=node_id, create=False).close()
        compacted = work / ENV_DIR / "data.mdb"
        after = compacted.stat().st_size
        try:
            os.rename(compacted, env_path / "data.mdb")
            fsync_dir(env_path)
            shutil.rmtree(work)
        except OSError as exc:
            raise StorageError(f"cannot replace {env_path / 'data.mdb'}: {exc}") from None
    return DefragResult(
        data_file=env_path / "data.mdb",
        before_bytes=before,
        after_bytes=after,
        in_use_bytes=in_use,
        seconds=time.monotonic() - started,
    )
