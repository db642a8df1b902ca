"""Opening the state machine at start-up, for either ``[state] backend``
(docs/state-at-scale.md, docs/config.md).

``memory``: the state machine is the stored snapshot restored (or an empty one) and the log
after it is replayed: O(state) at every start.

``lmdb``: the state machine is persisted in ``data_dir/state.lmdb`` (``StateEnv``), beside the
Raft log (``raft.lmdb``), committed once per applied batch together with its applied index.
A start opens it and resumes after its applied index ``A``; only the log after ``A`` is
replayed (the core is told ``applied = A``), so the start is O(1) in the state. Cases, with
``S`` the stored snapshot's index (0: none) and ``L`` the log's last index:

* ``A >= S`` and ``A <= L``, the entry at ``A`` (or the snapshot, at ``S``) of the term stored
  with ``A``: resume;
* ``A < S``: the state is older than the snapshot (a snapshot from the leader was stored and
  the node stopped before the apply loop replaced the state with it; or the environment is new:
  a data dir switching from ``memory``): replaced by the restored snapshot, once, then resume;
* ``A > L``, or a term that does not match the log, or another cluster's stamp: refused at
  start-up with a ``StorageError`` saying what to do. Nothing is changed or deleted: the log
  and snapshot in ``raft.lmdb`` always hold everything needed to rebuild the state (the log is
  compacted only below a snapshot, and only once the state is durable past it).

The environment is opened with ``sync=False``: a commit is not fsynced. A process crash loses
nothing (the page cache holds it); a machine crash may lose the last commits, leaving the state
behind the durable log (replayed at the next start), never ahead of it, because every entry it
reflects was durable in the log before it was applied. Before the log is compacted the state is
forced to disk (``StateEnv.sync``, via ``StateBackend.durable``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

import attrs
import lmdb

from univrs.errors import StorageError
from univrs.raft.messages import EntryKind, Membership, SnapshotMeta, decode_membership
from univrs.raft.ready import InitialState
from univrs.sm.state import ClusterStateMachine
from univrs.storage.datadir import STATE_ENV_DIR
from univrs.storage.sm_tables import StateEnv
from univrs.storage.snapshot_file import FileSnapshot
from univrs.storage.stored_snapshot import StoredSnapshot

log = logging.getLogger("univrs.node")

STATE_DIR = STATE_ENV_DIR
Stored = tuple[SnapshotMeta, StoredSnapshot | FileSnapshot]  # the stored snapshot, read on demand
BACKENDS = ("memory", "lmdb")


@attrs.define(eq=False)
class PersistentState:
    """``StateBackend`` on a ``StateEnv`` (univrs/runtime/ports.py)."""

    env: StateEnv

    def adopt(self, sm: ClusterStateMachine) -> ClusterStateMachine:
        """Replace the stored state by ``sm``'s (restored from a snapshot), atomically."""
        stored = self.env.replace(sm)
        log.info("state replaced from a snapshot", extra={"index": sm.last_applied_index})
        return stored

    def durable(self) -> None:
        """Force the committed state to disk."""
        self.env.sync()


def _fix(path: str) -> str:
    return (
        f"the node refuses to start and changes nothing. If the log in raft.lmdb is the one "
        f"to trust, move {path} away (keep it for analysis): the next start rebuilds the "
        "state from the stored snapshot and the log"
    )


def open_state(
    data_dir: str,
    initial: InitialState,
    snapshot: Stored | None,
    cluster_id: str | None,
    restore: Callable[[Stored, Callable[[bytes], ClusterStateMachine]], ClusterStateMachine],
) -> tuple[StateEnv, ClusterStateMachine, InitialState]:
    """Open (or create) the persistent state of a data dir (see the module docstring).

    Returns the environment, the state machine on it and ``initial`` with ``applied`` set to
    the state's applied index. ``restore`` restores the stored snapshot (the node's, with its
    error message) through the function it is given (``StateEnv.stage``: a row at a time into
    a new environment beside the state, which then replaces it by renames: memory bounded by a
    row, not the state). ``StorageError`` when the state cannot be used."""
    path = f"{data_dir}/{STATE_DIR}"
    try:
        env = StateEnv(path)
    except StorageError as exc:  # not an LMDB environment, or another one than a state env
        raise StorageError(f"{exc}: {_fix(path)}") from None
    try:
        stamped = env.cluster_id()
        if stamped is not None and cluster_id is not None and stamped != cluster_id:
            raise StorageError(
                f"state env {path} belongs to cluster {stamped}, but the log belongs to "
                f"{cluster_id}: {_fix(path)}"
            )
        applied, term = env.applied()
        snap_index = snapshot[0].index if snapshot is not None else 0
        last = initial.entries[-1].index if initial.entries else snap_index
        if applied > last:
            raise StorageError(
                f"state env {path} is at applied index {applied}, ahead of the log, which ends "
                f"at {last}: {_fix(path)}"
            )
        if applied >= snap_index and applied > 0:
            expected = _term_at(initial, snapshot, applied)
            if expected != term:
                raise StorageError(
                    f"state env {path} is at index {applied} of term {term}, but the log's "
                    f"entry {applied} is of term {expected}: {_fix(path)}"
                )
            sm = env.load()
            how = "resumed"
        elif snapshot is not None:
            sm = env.replace(restore(snapshot, env.stage))
            how = "replaced from the stored snapshot"
        else:
            sm = env.load()  # new and empty
            how = "new"
        if stamped is None and cluster_id is not None:
            env.set_cluster_id(cluster_id)
        log.info(
            "state opened",
            extra={"backend": "lmdb", "how": how, "applied": sm.last_applied_index},
        )
    except StorageError as exc:
        env.store.close()
        if _fix(path) in str(exc):
            raise
        raise StorageError(f"{exc}: {_fix(path)}") from None  # it does not decode
    except lmdb.Error as exc:  # a garbled page (MDB_CORRUPTED ...): refused like the others
        env.store.close()
        raise StorageError(f"state env {path} is corrupt: {exc}: {_fix(path)}") from None
    except BaseException:
        env.store.close()
        raise
    return env, sm, attrs.evolve(initial, applied=sm.last_applied_index)


def _term_at(initial: InitialState, snapshot: Stored | None, index: int) -> int | None:
    if snapshot is not None and snapshot[0].index == index:
        return snapshot[0].term
    for entry in initial.entries:
        if entry.index == index:
            return entry.term
    return None


def applied_membership(initial: InitialState, snapshot: Stored | None, applied: int) -> Membership:
    """The configuration of the applied log at ``applied``: the last CONFIG entry at or below
    it, else the snapshot's, else empty."""
    for entry in reversed(initial.entries):
        if entry.index <= applied and entry.kind is EntryKind.CONFIG:
            return decode_membership(entry.data)
    if snapshot is not None:
        return snapshot[0].membership
    return Membership(voters=frozenset())


def wipe_state(data_dir: str) -> None:
    """Discard the persistent state (a pristine node that joins another cluster), renamed away
    first like the log (a crash midway leaves none, not half of one)."""
    path = f"{data_dir}/{STATE_DIR}"
    discarded = path + ".discarded"
    shutil.rmtree(discarded, ignore_errors=True)
    try:
        shutil.move(path, discarded)
    except FileNotFoundError:
        return
    shutil.rmtree(discarded, ignore_errors=True)
