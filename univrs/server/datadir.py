"""Opening a node's data dir at start-up: read it and lock it (``open_raw``), then bootstrap
a new cluster, or stamp it with the id of a cluster to join, and restore the stored snapshot
(``finish_opening``); and the wipe a pristine node does before it joins another cluster.

A restart never bootstraps again; a data dir whose stored snapshot cannot be restored stops
the start with an error that says what to do, never a crash loop.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
from collections.abc import Callable

import attrs

from univrs.config import NodeConfig
from univrs.errors import ConfigError, StorageError
from univrs.raft import bootstrap_state
from univrs.raft.messages import Membership, SnapshotMeta
from univrs.raft.ready import InitialState
from univrs.runtime.snapshots import restore
from univrs.server.joining import JoinRefused
from univrs.server.statedir import open_state, wipe_state
from univrs.sm.state import ClusterStateMachine
from univrs.storage import LogStore
from univrs.storage.datadir import LOST_STATE_HINT
from univrs.storage.sm_tables import StateEnv
from univrs.storage.snapshot_check import reading_for
from univrs.storage.snapshot_file import FileSnapshot
from univrs.storage.stored_snapshot import StoredSnapshot

log = logging.getLogger("univrs.node")


def initial_membership(config: NodeConfig) -> Membership:
    """The membership a brand-new data dir bootstraps with.

    With ``[raft.bootstrap]`` nodes: all of them as voters (every listed node starts from the
    same configuration). Without: a single-node cluster of this node (the embedded default).
    """
    if config.bootstrap:
        voters = frozenset(n.id for n in config.bootstrap)
        addresses = tuple(sorted((n.id, n.addr) for n in config.bootstrap))
        apis = tuple(sorted((n.id, n.api) for n in config.bootstrap if n.api))
    else:
        voters = frozenset({config.node_id})
        addresses = ((config.node_id, config.raft_addr),)
        apis = ((config.node_id, config.api_addr),)
    return Membership(voters=voters, addresses=addresses, api_addresses=apis)


def new_cluster_id(config: NodeConfig) -> str:
    """The id of a cluster this node bootstraps (docs/config.md, "Cluster ids").

    The configured one if any; for a single node a random one; for a static multi-node
    bootstrap one derived from ``initial_cluster_token`` (with the member list), so every
    initial member computes the same and two clusters differ as long as their tokens do.
    Never from the member list alone: two clusters of the same members would share an id.
    Raises ConfigError for a multi-node bootstrap with neither a cluster id nor a token."""
    if config.cluster_id:
        return config.cluster_id
    if len(config.bootstrap) > 1:
        token = config.initial_cluster_token
        if not token:
            raise ConfigError(
                "raft.initial_cluster_token: required to bootstrap a multi-node cluster "
                "without raft.cluster_id; give every initial member the same value, unique "
                "to this cluster (e.g. the output of `openssl rand -hex 16`)"
            )
        members = ",".join(sorted(f"{n.id}={n.addr}" for n in config.bootstrap))
        digest = hashlib.sha256(f"univrs-cluster-id\0{token}\0{members}".encode())
        return "c-" + digest.hexdigest()[:16]
    return "c-" + secrets.token_hex(8)


def _is_empty(initial: InitialState) -> bool:
    return (
        initial.snapshot is None
        and not initial.entries
        and initial.hard_state.term == 0
        and initial.hard_state.vote is None
    )


@attrs.frozen
class Opened:
    """What start-up read from the data dir."""

    storage: LogStore
    initial: InitialState
    cluster_id: str
    sm: ClusterStateMachine
    # The stored snapshot, read on demand (univrs/storage/stored_snapshot.py).
    snapshot: tuple[SnapshotMeta, StoredSnapshot | FileSnapshot] | None
    # The persistent state ([state] backend = "lmdb"), None in memory.
    state_env: StateEnv | None = None


def open_raw(config: NodeConfig) -> tuple[LogStore, InitialState]:
    """Open (or create) and lock the data dir and read its state, changing nothing yet.

    Opened without a cluster id so that the id is written only by bootstrap or join: an empty
    store that has an id is a joiner still waiting for its first entries."""
    storage = LogStore.open(config.data_dir, node_id=config.node_id)
    try:
        stored = storage.cluster_id
        if stored is not None and config.cluster_id is not None and stored != config.cluster_id:
            raise StorageError(
                f"data dir {config.data_dir} belongs to cluster {stored}, not "
                f"{config.cluster_id} (raft.cluster_id); refusing to start"
            )
        initial = storage.initial_state()
        _check_hard_state(str(config.data_dir), initial)
    except BaseException:
        storage.close()
        raise
    return storage, initial


def _check_hard_state(data_dir: str, initial: InitialState) -> None:
    """Refuse a hard state behind the log it comes with (s13-audit). A node writes the hard
    state of a term with, or before, every entry or snapshot of that term, and never commits
    past its log; a record that says otherwise was lost (read as term 0, no vote) or rolled
    back. Started on it, the node would vote again in a term it voted in: two leaders of one
    term. (The storage's own tests write such stores freely: the rule is the node's.)"""
    hs = initial.hard_state
    snap = initial.snapshot
    last_index, last_term = (0, 0) if snap is None else (snap.index, snap.term)
    if initial.entries:
        last_index, last_term = initial.entries[-1].index, initial.entries[-1].term
    problem = None
    if hs.term < last_term:
        problem = f"its hard state is at term {hs.term}, below its log's last term {last_term}"
    elif hs.commit > last_index:
        problem = f"its hard state commits {hs.commit}, beyond its log's last index {last_index}"
    if problem is not None:
        raise StorageError(
            f"data dir {data_dir}: {problem} (the hard state was lost or rolled back)"
            f"{LOST_STATE_HINT}"
        )


def data_dir_state(storage: LogStore, initial: InitialState) -> str:
    """``new`` (never bootstrapped nor joined), ``joining`` (stamped with a cluster id, waiting
    for its first entries) or ``member``."""
    if _is_empty(initial):
        return "new" if storage.cluster_id is None else "joining"
    return "member"


def finish_opening(
    storage: LogStore,
    initial: InitialState,
    config: NodeConfig,
    join_cluster: str | None,
    *,
    bootstrap: bool = True,
) -> Opened:
    """Bootstrap a new data dir (or, with ``join_cluster``, stamp it with that cluster's id and
    leave it empty for the leader to fill; without ``bootstrap``, leave it empty and unstamped
    to be joined later), then load the newest snapshot. A restart never bootstraps again."""
    if data_dir_state(storage, initial) == "new" and (bootstrap or join_cluster is not None):
        if join_cluster is not None:
            if config.cluster_id is not None and config.cluster_id != join_cluster:
                raise JoinRefused(
                    f"raft.cluster_id is {config.cluster_id} but the cluster to join is "
                    f"{join_cluster}"
                )
            storage.set_cluster_id(join_cluster)
            log.info("data dir prepared to join", extra={"cluster": join_cluster})
        else:
            cluster_id = new_cluster_id(config)
            storage.set_cluster_id(cluster_id)
            initial = bootstrap_state(initial_membership(config))
            storage.append(
                hard_state=initial.hard_state, truncate_from=None, entries=initial.entries
            )
            log.info(
                "bootstrapped a new cluster",
                extra={
                    "cluster": cluster_id,
                    "voters": ",".join(sorted(initial.membership.voters)),
                },
            )
    cluster_id = storage.cluster_id or config.cluster_id or "univrs"
    # Read on demand (the core streams it to followers a chunk at a time; a persisted state
    # that resumes never reads it at all): not held whole in memory for the node's life.
    stored = storage.stored_snapshot()
    loaded: tuple[SnapshotMeta, StoredSnapshot | FileSnapshot] | None = (
        (stored.meta, stored) if stored is not None else None
    )
    if config.state_backend == "lmdb":
        env, sm, initial = open_state(
            str(config.data_dir),
            initial,
            loaded,
            storage.cluster_id,
            lambda snapshot, into: _restore_stored(config, snapshot, into),
        )
        return Opened(
            storage=storage,
            initial=initial,
            cluster_id=cluster_id,
            sm=sm,
            snapshot=loaded,
            state_env=env,
        )
    sm = _restore_stored(config, loaded) if loaded is not None else ClusterStateMachine()
    return Opened(storage=storage, initial=initial, cluster_id=cluster_id, sm=sm, snapshot=loaded)


def _restore_stored(
    config: NodeConfig,
    loaded: tuple[SnapshotMeta, StoredSnapshot | FileSnapshot],
    into: Callable[[bytes], ClusterStateMachine] | None = None,
) -> ClusterStateMachine:
    """The state machine of the stored snapshot, or a StorageError that says which data dir
    holds what cannot be restored and what to do (a clean exit, never a crash loop). A node
    refuses such a snapshot when it receives one (issue 12); this catches older data dirs and
    disk corruption."""
    meta, stored = loaded
    try:
        with reading_for("start"):  # damage found here is counted as the start's
            return restore(stored.read(), into)  # read whole: size and checksum verified
    except StorageError as exc:
        raise StorageError(
            f"data dir {config.data_dir}: the stored snapshot at index {meta.index} cannot be "
            f"restored ({exc}); this data dir cannot serve. Move it away (keep it for "
            "analysis) and bring the node back as a new member: start it on an empty data "
            'dir with initial_cluster_state = "existing" and run `univrs cluster join '
            "<member-api> --replace` (see the README)"
        ) from None


def open_storage(config: NodeConfig, *, join_cluster: str | None = None) -> Opened:
    """``open_raw`` then ``finish_opening`` (for tools and tests; the node checks a join in
    between)."""
    storage, initial = open_raw(config)
    try:
        return finish_opening(storage, initial, config, join_cluster)
    except BaseException:
        storage.close()
        raise


def wipe_raft_state(config: NodeConfig) -> None:
    """Discard the data dir's Raft state (used only on a pristine node that joins).

    Renamed away first, so a crash midway leaves no half-deleted store (which would be refused
    as corrupt) but no store at all: the next start creates a new one. The persisted state
    machine goes before the log: a crash between the two then leaves a log without its state
    (which a start rebuilds), never a state without its log (which a start refuses)."""
    wipe_state(str(config.data_dir))  # the state machine's, if persisted: of the old log
    path = config.data_dir / "raft.lmdb"
    discarded = config.data_dir / "raft.lmdb.discarded"
    if discarded.exists():
        shutil.rmtree(discarded)
    if path.exists():
        path.rename(discarded)
        shutil.rmtree(discarded)
