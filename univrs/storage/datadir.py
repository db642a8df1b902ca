"""A node's data dir before its store opens: creating the store, refusing one that lost its state.

A store is created in one step (``create_env``): built under ``raft.lmdb.new`` with its identity
and a new incarnation, then renamed to ``raft.lmdb``. So a ``raft.lmdb`` without an identity,
or whose ``data.mdb`` is missing, empty or cut short (``check_data_file``), is always a store
that lost its state, never a fresh one: it is refused, with ``LOST_STATE_HINT`` saying what to
do. The directory lock is ``dirlock`` (``locked_store_dir`` holds it for the offline tools);
opening and verifying the store is ``log_store``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

from univrs.errors import StorageError
from univrs.raft.messages import NodeId
from univrs.storage import header, layout, pages
from univrs.storage.dirlock import DirLock
from univrs.storage.env import StoreEnv
from univrs.storage.layout import Corrupt

if TYPE_CHECKING:
    from univrs.storage.env import Txn

ENV_DIR = "raft.lmdb"
# A store being created: renamed to ENV_DIR once its identity is durable, so a ``raft.lmdb``
# without an identity (or with an empty data.mdb) is always a store that lost its state.
NEW_ENV_DIR = "raft.lmdb.new"
# The persistent state machine ([state] backend = "lmdb", univrs/server/statedir.py): derived
# from raft.lmdb (its stored snapshot and log always suffice to rebuild it).
STATE_ENV_DIR = "state.lmdb"

LOST_STATE_HINT = (
    ". A data dir that lost its state is not a new one: move it away, start the node on an "
    'empty data dir with initial_cluster_state = "existing" and replace the member with '
    "`univrs cluster join <member-api> --replace` (see the README)"
)


def new_incarnation() -> str:
    """A fresh incarnation id: 16 random hex characters (64 bits), one per data dir."""
    return secrets.token_hex(8)


def put_identity(
    env: StoreEnv, txn: Txn, node_id: NodeId, cluster_id: str | None, incarnation: str
) -> None:
    fmt = layout.encode_record(layout.KEY_FORMAT, layout.FORMAT_VERSION)
    txn.put(layout.KEY_FORMAT, fmt, db=env.meta)
    identity = layout.identity_record(node_id, cluster_id, incarnation)
    txn.put(layout.KEY_IDENTITY, layout.encode_record(layout.KEY_IDENTITY, identity), db=env.meta)


def fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_env(
    data_dir: pathlib.Path,
    node_id: NodeId,
    cluster_id: str | None,
    map_size: int,
    max_map_size: int,
) -> None:
    """Create ``raft.lmdb`` with its identity (and a new incarnation) in one step.

    The store is built under ``raft.lmdb.new`` and renamed into place only once its identity
    is durable; a creation interrupted by a crash leaves only the ``.new`` directory, which
    the next creation discards (nothing in it was ever acknowledged).
    """
    tmp = data_dir / NEW_ENV_DIR
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        env = StoreEnv.open(tmp, create=True, map_size=map_size, max_map_size=max_map_size)
        try:
            incarnation = new_incarnation()
            env.write(lambda txn: put_identity(env, txn, node_id, cluster_id, incarnation))
        finally:
            env.close()
        fsync_dir(tmp)
        os.rename(tmp, data_dir / ENV_DIR)
        fsync_dir(data_dir)
    except OSError as exc:
        raise StorageError(f"cannot create a store in {data_dir}: {exc}") from None


def check_data_file(data_dir: pathlib.Path, env_path: pathlib.Path) -> None:
    """A store whose data file is gone, empty or cut short lost its state: refuse it, never
    recreate it, and never map a truncated file (that is a SIGBUS, see ``header``)."""
    data_file = env_path / "data.mdb"
    try:
        size = data_file.stat().st_size
    except FileNotFoundError:
        raise StorageError(
            f"corrupt data dir {data_dir}: {data_file} is missing{LOST_STATE_HINT}"
        ) from None
    except OSError as exc:
        raise StorageError(f"cannot read {data_file}: {exc.strerror}") from None
    if size == 0:
        raise StorageError(
            f"corrupt data dir {data_dir}: {data_file} is empty (zero length){LOST_STATE_HINT}"
        )
    if not header.SUPPORTED:
        return
    try:
        pages.check_trees(data_file, header.check_length(data_file))
    except header.BadHeader as exc:
        # Mapping a file shorter than its pages would kill the process with SIGBUS; a damaged
        # tree would fail an LMDB assertion (SIGABRT) or fault.
        raise StorageError(
            f"corrupt data dir {data_dir}: {data_file} {exc}; nothing was changed{LOST_STATE_HINT}"
        ) from None
    except OSError as exc:
        raise StorageError(f"cannot read {data_file}: {exc.strerror}") from None


@contextlib.contextmanager
def locked_store_dir(
    data_dir: str | os.PathLike[str],
) -> Iterator[tuple[pathlib.Path, pathlib.Path]]:
    """A stopped node's data dir and its store's ``raft.lmdb``, with the data dir's lock held
    for the block (the offline tools). ``StorageError`` if the dir or its store is missing,
    if the data file lost its state (``check_data_file``) or if a node holds the lock."""
    path = pathlib.Path(data_dir)
    if not path.is_dir():
        raise StorageError(f"data dir {path} does not exist")
    dirlock = DirLock.acquire(path)
    try:
        env_path = path / ENV_DIR
        if not env_path.exists():
            raise StorageError(f"data dir {path} holds no univrs store ({env_path} missing)")
        check_data_file(path, env_path)
        yield path, env_path
    finally:
        dirlock.release()


def identity_node(raw: bytes | None) -> NodeId:
    """The node id in a store's identity record as read from its meta database (``Corrupt``
    if the record is missing: a store that lost its state)."""
    if raw is None:
        raise Corrupt(f"metadata record 'identity' is missing{LOST_STATE_HINT}")
    node, _, _ = layout.parse_identity(layout.decode_record(layout.KEY_IDENTITY, raw))
    return node
