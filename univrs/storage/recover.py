"""Recovery after a lost quorum (``univrs recover``): one surviving member becomes a one-voter
cluster, offline, keeping its whole log.

When a majority of voters is gone for good, nothing can commit, not even the removal of the
dead (a two-voter cluster with one dead member cannot remove it). etcd's
``--force-new-cluster`` and Consul's ``peers.json`` answer this by rewriting one survivor's
configuration; so does ``force_new_cluster``, in one synced LMDB transaction on a stopped
node's data dir:

* **Every entry stays.** The survivor's whole log, committed or not, is kept and becomes
  committed: the survivor may hold entries the dead leader committed (and acknowledged) that
  it had not yet heard were committed, so cutting at its own commit index (as etcd does) could
  drop acknowledged writes. Entries that never committed in the old cluster (their clients saw
  an unknown outcome) now commit, as any leader's predecessors' entries may.
* **A new configuration entry** is appended after the last one: this node alone as the voter,
  at a new term (one above anything in its hard state or log), and the hard state says it is
  committed (term = that term, vote = this node, commit = its index).
* **A new cluster id** (random, or the one given). The recovered cluster's history forks from
  what the old members hold, so it is another cluster in all but name: every raft connection,
  probe and join from an old member that comes back with its old data is refused at the hello
  ("cluster id ... is not this cluster"), whatever its log or configuration holds. etcd keeps
  the id and fences removed members by their ids; here the incarnation rules deliberately let
  a peer with a newer-looking configuration through (a lagging member must hear its new
  leader), so they cannot fence a forked history, and a new id can. The cost: a config file
  that sets ``raft.cluster_id`` must be given the new id (the node refuses to start and says
  so otherwise); clients do not depend on it.
* **A new incarnation.** The data dir gets a fresh incarnation (the one identity change a data
  dir ever sees, and only offline, by the operator), and the new configuration binds the node
  to it: the member that leads the new cluster is not the member it was.

* **The persistent state machine** (``state.lmdb``, ``[state] backend = "lmdb"``) is kept: it
  reflects a prefix of the kept log, so it only needs the new cluster id. It is moved aside
  (``state.lmdb.recover``, a rename) before the log is changed, restamped there, forced to disk
  and renamed back once the log is recovered. Interrupted anywhere, the data dir has either no
  ``state.lmdb`` (the next start rebuilds it from the stored snapshot and the log, which always
  suffice) or the restamped one, never one stamped with the old id (which the start would
  refuse); a leftover ``state.lmdb.recover`` is discarded by the next recover. A state that
  cannot be kept (it does not open, belongs to another cluster or is ahead of the log) is
  discarded the same way: the next start rebuilds it.

Choose the survivor with the most up-to-date log (highest last term, then highest last index;
``inspect_data_dir`` shows them): entries that only the dead members had are lost, and a
survivor that missed a later leader's entries may hold older, replaced ones (reported to their
proposers as not applied) that recovery then commits.
"""

from __future__ import annotations

import logging
import os
import pathlib
import secrets
import shutil
from typing import TYPE_CHECKING

import attrs

from univrs.errors import StorageError
from univrs.raft.messages import Entry, EntryKind, HardState, Membership, encode_membership
from univrs.storage import layout
from univrs.storage.datadir import (
    STATE_ENV_DIR,
    fsync_dir,
    identity_node,
    locked_store_dir,
    new_incarnation,
    put_identity,
)
from univrs.storage.env import StoreEnv
from univrs.storage.log_store import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, LogStore
from univrs.storage.sm_tables import StateEnv

if TYPE_CHECKING:
    from univrs.storage.env import Txn

log = logging.getLogger("univrs.storage")

STATE_ASIDE = STATE_ENV_DIR + ".recover"  # state.lmdb while the log is being recovered


@attrs.frozen(kw_only=True)
class DataDirSummary:
    """A stopped node's durable Raft state, as ``univrs recover --dry-run`` shows it."""

    data_dir: pathlib.Path
    node_id: str
    cluster_id: str | None
    incarnation: str
    term: int
    vote: str | None
    commit: int
    last_index: int
    last_term: int
    snapshot_index: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]

    def to_plain(self) -> dict[str, object]:
        doc = attrs.asdict(self)
        doc["data_dir"] = str(self.data_dir)
        doc["voters"] = list(self.voters)
        doc["learners"] = list(self.learners)
        return doc


@attrs.frozen(kw_only=True)
class RecoverResult:
    """What ``force_new_cluster`` did."""

    before: DataDirSummary
    incarnation: str  # the new one
    cluster_id: str  # the new one
    term: int  # of the new configuration entry
    config_index: int  # the new configuration entry's index (= the new commit index)
    # The persistent state machine: "none" (no state.lmdb), "kept" (restamped with the new
    # cluster id: the start resumes from it) or "discarded: <why>" (the start rebuilds it).
    state: str = "none"


def stored_node_id(data_dir: str | os.PathLike[str]) -> str:
    """The node id recorded in a stopped node's data dir (``StorageError`` if none)."""
    with locked_store_dir(data_dir) as (_, env_path):
        env = StoreEnv.open(
            env_path, create=False, map_size=DEFAULT_MAP_SIZE, max_map_size=DEFAULT_MAX_MAP_SIZE
        )
        try:
            raw = env.read(lambda txn: txn.get(layout.KEY_IDENTITY, db=env.meta))
        finally:
            env.close()
    return identity_node(raw)


def _summary(store: LogStore) -> DataDirSummary:
    initial = store.initial_state()
    hs = store.hard_state()
    last = store.last_index()
    snap = store.snapshot_meta()
    m = initial.membership
    return DataDirSummary(
        data_dir=store.data_dir,
        node_id=store.node_id,
        cluster_id=store.cluster_id,
        incarnation=store.incarnation,
        term=hs.term,
        vote=hs.vote,
        commit=initial.hard_state.commit,
        last_index=last,
        last_term=store.term(last) or 0,
        snapshot_index=snap.index if snap is not None else 0,
        voters=tuple(sorted(m.voters)),
        learners=tuple(sorted(m.learners)),
    )


def inspect_data_dir(data_dir: str | os.PathLike[str]) -> DataDirSummary:
    """The durable state of a stopped node's data dir, changing nothing."""
    store = LogStore.open(data_dir, node_id=stored_node_id(data_dir), create=False)
    try:
        return _summary(store)
    finally:
        store.close()


def recovered_membership(old: Membership, node_id: str, incarnation: str) -> Membership:
    """``node_id`` alone as the voter, bound to ``incarnation``, at its old addresses."""
    raft = old.address_of(node_id)
    api = old.api_address_of(node_id)
    return Membership(
        voters=frozenset({node_id}),
        addresses=((node_id, raft),) if raft else (),
        api_addresses=((node_id, api),) if api else (),
        incarnations=((node_id, incarnation),),
    )


def new_cluster_id() -> str:
    """A random cluster id for a recovered cluster."""
    return "c-" + secrets.token_hex(8)


def force_new_cluster(
    data_dir: str | os.PathLike[str], *, cluster_id: str | None = None
) -> RecoverResult:
    """Make a stopped member's data dir a one-voter cluster of that member (module docstring),
    under ``cluster_id`` (default: a new random one; it must differ from the old one).

    Refuses (``StorageError``, nothing written) a data dir in use by a running node, one that
    holds no log (never bootstrapped, or still waiting to be joined), and one whose newest
    configuration does not list the node (it was removed: recover a member instead)."""
    store = LogStore.open(data_dir, node_id=stored_node_id(data_dir), create=False)
    try:
        before = _summary(store)
        me = before.node_id
        if before.last_index == 0:
            raise StorageError(
                f"data dir {store.data_dir} holds no log: it never served in a cluster, so "
                "there is nothing to recover"
            )
        old = store.initial_state().membership
        if me not in old.members:
            raise StorageError(
                f"the newest configuration in {store.data_dir} does not list {me} (voters "
                f"{sorted(old.voters)}): it was removed; recover a member of the cluster"
            )
        if cluster_id is None:
            cluster_id = new_cluster_id()
        if cluster_id == before.cluster_id:
            raise StorageError(
                f"the recovered cluster needs a new cluster id, not its old one ({cluster_id})"
            )
        incarnation = new_incarnation()
        term = max(before.term, before.last_term) + 1
        index = before.last_index + 1
        membership = recovered_membership(old, me, incarnation)
        entry = Entry(
            term=term, index=index, kind=EntryKind.CONFIG, data=encode_membership(membership)
        )
        hard_state = HardState(term=term, vote=me, commit=index)
        env = store._env  # one transaction for all three records: the storage package's own
        key = layout.index_key(index)
        value = layout.encode_entry(entry)
        hs_record = layout.encode_record(
            layout.KEY_HARD_STATE, layout.hard_state_record(hard_state)
        )

        def write(txn: Txn) -> None:
            assert txn.get(key, db=env.log) is None
            txn.put(key, value, db=env.log)
            txn.put(layout.KEY_HARD_STATE, hs_record, db=env.meta)
            # The pins of the old cluster's unbound members go: the recovered configuration
            # binds its one member, and anyone added to it is bound by the join.
            txn.delete(layout.KEY_PINS, db=env.meta)
            txn.delete(layout.KEY_NAMED, db=env.meta)  # (the old cluster's history: gone too)
            put_identity(env, txn, me, cluster_id, incarnation)

        aside = _state_aside(store.data_dir)
        try:
            env.write(write)
        except BaseException:
            if aside:  # the log is as it was: so is the state's cluster
                os.rename(store.data_dir / STATE_ASIDE, store.data_dir / STATE_ENV_DIR)
            raise
        state = _state_back(store.data_dir, aside, before, cluster_id)
    finally:
        store.close()
    # Open it as the node will (identity, checksums, the log invariants).
    LogStore.open(data_dir, node_id=me, create=False).close()
    assert cluster_id is not None
    return RecoverResult(
        before=before,
        incarnation=incarnation,
        cluster_id=cluster_id,
        term=term,
        config_index=index,
        state=state,
    )


def _state_aside(data_dir: pathlib.Path) -> bool:
    """Move ``state.lmdb`` aside before the log changes (module docstring); whether there
    was one. A leftover of an interrupted recover is discarded first."""
    path, aside = data_dir / STATE_ENV_DIR, data_dir / STATE_ASIDE
    shutil.rmtree(aside, ignore_errors=True)
    if not path.exists():
        return False
    os.rename(path, aside)
    fsync_dir(data_dir)
    return True


def _state_back(
    data_dir: pathlib.Path, aside: bool, before: DataDirSummary, cluster_id: str
) -> str:
    """Restamp the state moved aside with the new cluster id and put it back, or discard it
    when it cannot be kept; what was done (``RecoverResult.state``)."""
    if not aside:
        return "none"
    path = data_dir / STATE_ASIDE
    why = ""
    try:
        env = StateEnv(str(path))
    except StorageError as exc:
        why = str(exc)
    else:
        try:
            stamped = env.cluster_id()
            applied, _ = env.applied()
            if stamped is not None and stamped != before.cluster_id:
                why = f"it belongs to cluster {stamped}, not {before.cluster_id}"
            elif applied > before.last_index:
                why = f"its applied index {applied} is ahead of the log ({before.last_index})"
            else:
                env.set_cluster_id(cluster_id)
        finally:
            env.close()
    if why:
        shutil.rmtree(path)
        fsync_dir(data_dir)
        log.warning("recover discarded the state env", extra={"reason": why})
        return f"discarded: {why}"
    os.rename(path, data_dir / STATE_ENV_DIR)
    fsync_dir(data_dir)
    return "kept"
