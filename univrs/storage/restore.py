"""Build a data dir of a NEW cluster from a backup file (``univrs snapshot restore``).

Run once per member of the new cluster, each with the same file and the same member list
(etcdutl's ``snapshot restore``). Every run computes the same new cluster id (derived from the
file's checksum and the member list, unless one is given) and the same initial snapshot: the
saved state machine, unchanged, at the saved index and term, with the membership of the new
members (unbound: the first leader records their incarnations, as after a bootstrap). Each data
dir is created with its own new incarnation, so no member of the new cluster can be mistaken
for a member of the old one.

The data dir is built beside its destination (``D.restore-tmp``), closed, then renamed to ``D``
and the parent directory fsynced: a crash leaves no half-restored ``D``. ``D`` must not exist
or be empty.

With ``state_backend = "lmdb"`` (the node's default) the data dir also gets its persistent
state machine, ``state.lmdb`` (univrs/server/statedir.py), built from the backup's state at
the snapshot's index and term and stamped with the new cluster id, in the same temporary
directory: the node's first start resumes from it (O(1) in the state) instead of filling it
from the stored snapshot. With ``"memory"`` none is built (a later switch to ``lmdb`` fills it
once at start-up).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import secrets
import shutil

import attrs

from univrs.errors import StorageError
from univrs.raft.messages import HardState, Membership, SnapshotMeta
from univrs.storage.backup import BackupFile, decode_state
from univrs.storage.datadir import STATE_ENV_DIR, fsync_dir
from univrs.storage.log_store import LogStore
from univrs.storage.sm_tables import StateEnv

STATE_BACKENDS = ("lmdb", "memory")


@attrs.frozen(kw_only=True)
class Member:
    """One member of the new cluster: id, raft address and (optional) API address."""

    id: str
    raft_addr: str
    api_addr: str | None = None


@attrs.frozen(kw_only=True)
class RestoreResult:
    """What ``restore_data_dir`` built."""

    data_dir: pathlib.Path
    node_id: str
    cluster_id: str
    incarnation: str
    index: int
    term: int
    voters: tuple[str, ...]
    state_backend: str = "lmdb"


def restored_cluster_id(sha256: str, members: list[Member], token: str | None) -> str:
    """The new cluster's id: the same for every member restored from one file with one member
    list and one ``token`` (etcd's ``--initial-cluster-token``), never the old cluster's.

    The token keeps two clusters restored from one file onto the same addresses apart (never
    an id from the member list alone); a lone member needs none and gets a random id. Raises
    ``StorageError`` for several members without a token."""
    if token is None:
        if len(members) > 1:
            raise StorageError(
                "restoring several members needs --initial-cluster-token (the same value on "
                "every member, unique to the new cluster) or --cluster-id"
            )
        return "c-" + secrets.token_hex(8)
    listed = ",".join(sorted(f"{m.id}={m.raft_addr}" for m in members))
    digest = hashlib.sha256(f"univrs-restore\0{token}\0{sha256}\0{listed}".encode())
    return "c-" + digest.hexdigest()[:16]


def new_membership(members: list[Member]) -> Membership:
    """Every given member a voter, unbound (the first leader binds their incarnations)."""
    return Membership(
        voters=frozenset(m.id for m in members),
        addresses=tuple(sorted((m.id, m.raft_addr) for m in members)),
        api_addresses=tuple(sorted((m.id, m.api_addr) for m in members if m.api_addr)),
    )


def restore_data_dir(
    backup: BackupFile,
    data_dir: str | os.PathLike[str],
    *,
    node_id: str,
    members: list[Member],
    cluster_id: str | None = None,
    token: str | None = None,
    state_backend: str = "lmdb",
) -> RestoreResult:
    """Create ``data_dir`` for ``node_id``, a member of a new cluster of ``members`` whose
    initial state is the backup's snapshot. Refuses (``StorageError``) a non-empty
    ``data_dir``, a member list without ``node_id`` or with duplicate ids, and a backup whose
    data is not a state machine at its header's index. ``state_backend``: the backend the
    node will run (module docstring)."""
    assert backup.data is not None, "load the backup's data first"
    if state_backend not in STATE_BACKENDS:
        raise StorageError(f"state backend {state_backend!r} is not one of {STATE_BACKENDS}")
    ids = [m.id for m in members]
    if len(set(ids)) != len(ids):
        raise StorageError(f"duplicate member ids in {ids}")
    if node_id not in ids:
        raise StorageError(f"{node_id!r} is not one of the members {sorted(ids)}")
    if state_backend != "lmdb":
        decode_state(backup)  # refuse data a node could not start from
    path = pathlib.Path(data_dir)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise StorageError(f"data dir {path} exists and is not empty: restore into a new one")
    work = path.with_name(path.name + ".restore-tmp")
    if cluster_id is None:
        cluster_id = restored_cluster_id(backup.sha256, members, token)
    h = backup.header
    meta = SnapshotMeta(index=h.index, term=h.term, membership=new_membership(members))
    try:
        if work.exists():
            shutil.rmtree(work)  # an interrupted restore: nothing used it
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot prepare {work}: {exc.strerror or exc}") from None
    if state_backend == "lmdb":
        # Restored a row at a time straight into the new state env (the check a node could
        # start from it is this restore): memory bounded by a row, not the state.
        env = StateEnv(str(work / STATE_ENV_DIR))
        try:
            env.set_cluster_id(cluster_id)
            env.replace(decode_state(backup, into=env.stage))
        except BaseException:
            env.store.close()
            shutil.rmtree(work, ignore_errors=True)
            raise
        env.close()  # forced to disk before the rename makes the data dir usable
    store = LogStore.open(work, node_id=node_id, cluster_id=cluster_id, create=True)
    try:
        store.save_snapshot(meta, backup.data)
        # The snapshot holds only committed entries; the term is the snapshot's.
        store.append(
            hard_state=HardState(term=h.term, vote=None, commit=h.index),
            truncate_from=None,
            entries=(),
        )
        incarnation = store.incarnation
    finally:
        store.close()
    if state_backend == "lmdb":
        fsync_dir(work)
    try:
        if path.exists():
            path.rmdir()
        os.rename(work, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot move {work} to {path}: {exc.strerror or exc}") from None
    return RestoreResult(
        data_dir=path,
        node_id=node_id,
        cluster_id=cluster_id,
        incarnation=incarnation,
        index=h.index,
        term=h.term,
        voters=tuple(sorted(ids)),
        state_backend=state_backend,
    )
