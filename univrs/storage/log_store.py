"""The durable Raft log, hard state and snapshot of one node, in LMDB.

Theory of operation
-------------------
Every public method is synchronous and runs exactly ONE LMDB transaction; the runtime calls it
through ``trio.to_thread.run_sync``. A write transaction is committed with an fsync (the
environment is opened with ``sync=True, metasync=True``), so when ``append`` returns, the Ready
it persisted is durable: this is the group commit, one sync per Ready (Ready contract step 1).
LMDB commits are atomic: after a crash either the whole call is visible or none of it.

Log invariants, checked when the store opens (and by ``append`` for each new batch):

* entries are contiguous, their terms never decrease;
* with a snapshot at (S, T) and a non-empty log: first_index <= S + 1 <= last_index + 1, and
  the entry at S, if still present, has term T (entries <= S stay until ``compact``).

``last_index()`` is the last entry's index, or the snapshot index if the log is empty (or 0);
``first_index()`` is the first stored entry's index, or ``last_index() + 1`` if the log is empty.

Every entry and record carries a CRC-32 (see ``layout``), verified on every read and, for all
entries, at open. Transactions, map growth, threads and error translation: see ``env``; creating
a store and refusing a data dir that lost its state: ``datadir``; offline ``defrag``:
``defragment``; storing and reading the snapshot: ``log_snapshot``.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import attrs

from univrs.errors import StorageError, UnivrsError
from univrs.raft.messages import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    NodeId,
    SnapshotMeta,
    decode_membership,
)
from univrs.raft.ready import InitialState
from univrs.storage import layout
from univrs.storage.datadir import (
    ENV_DIR,
    LOST_STATE_HINT,
    check_data_file,
    create_env,
    new_incarnation,
    put_identity,
)
from univrs.storage.dirlock import DirLock
from univrs.storage.env import StorageStatistics, StoreEnv
from univrs.storage.layout import Corrupt
from univrs.storage.log_snapshot import SnapshotStorage, _require
from univrs.storage.snapshot_file import SnapshotFiles
from univrs.storage.snapshot_install import Prewritten
from univrs.storage.stored_snapshot import StoredSnapshot

if TYPE_CHECKING:
    from univrs.storage.env import Txn

DEFAULT_MAP_SIZE = 64 << 20
DEFAULT_MAX_MAP_SIZE = 1 << 40


class LogCompacted(UnivrsError):
    """The requested entries were compacted into a snapshot (send the snapshot instead)."""


@attrs.define(eq=False)
class LogStore(SnapshotStorage):
    """One node's durable Raft state in ``<data_dir>/raft.lmdb``; open with :meth:`open`."""

    data_dir: pathlib.Path
    node_id: NodeId
    _cluster_id: str | None
    _incarnation: str
    _env: StoreEnv
    _dirlock: DirLock
    # The StoredSnapshots handed out and still alive (detached before a replacement).
    _live: weakref.WeakSet[StoredSnapshot] = attrs.field(factory=weakref.WeakSet, init=False)
    # The snapshot files beside data.mdb (a node's own snapshots: snapshot_file.py).
    _files: SnapshotFiles = attrs.field(init=False)
    # A leader's snapshot whose file is written while it is checked (``prewrite_install``).
    _ahead: Prewritten = attrs.field(factory=Prewritten, init=False)
    # The pins this process last wrote (None: not yet known here, the write compares with the
    # stored record): a hard state whose pins did not change writes none (most group commits).
    _pins_written: tuple[tuple[NodeId, str], ...] | None = attrs.field(default=None, init=False)
    # Likewise for ``HardState.named`` (the ids of configurations folded away).
    _named_written: tuple[NodeId, ...] | None = attrs.field(default=None, init=False)

    # ----------------------------------------------------------------------------------------
    # Opening and closing
    # ----------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        node_id: NodeId,
        cluster_id: str | None = None,
        create: bool = True,
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
    ) -> LogStore:
        """Open (or create) the store of ``node_id`` in ``data_dir``, lock it and verify it.

        Refuses, with a ``StorageError`` saying why: a directory locked by another process, one
        that belongs to another node or cluster, a newer storage format, and corrupt data --
        including a store whose ``data.mdb`` is missing or empty or whose identity is lost,
        which is a data dir that lost its state, never a fresh one. A store is created (with a
        new incarnation) only where there is no ``raft.lmdb`` at all. A store created without
        a cluster id adopts the first one it is opened with.
        """
        path = pathlib.Path(data_dir)
        if not path.is_dir():
            if not create:
                raise StorageError(f"data dir {path} does not exist")
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create data dir {path}: {exc.strerror}") from None
        dirlock = DirLock.acquire(path)
        try:
            env_path = path / ENV_DIR
            if not env_path.exists():
                if not create:
                    raise StorageError(
                        f"data dir {path} holds no univrs store ({env_path} missing)"
                    )
                create_env(path, node_id, cluster_id, map_size, max_map_size)
            else:
                check_data_file(path, env_path)
            env = StoreEnv.open(
                env_path, create=False, map_size=map_size, max_map_size=max_map_size
            )
        except BaseException:
            dirlock.release()
            raise
        store = cls(
            data_dir=path,
            node_id=node_id,
            cluster_id=None,
            incarnation="",
            env=env,
            dirlock=dirlock,
        )
        store._files = SnapshotFiles(env.path)
        try:
            store._check_identity(cluster_id)
            store._verify()
            store._files.collect(env)  # files of a save that a crash interrupted
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Close the environment and release the directory lock; idempotent."""
        try:
            self._stop_prewrite()  # a file being written ahead: stopped after its piece
            self._env.close()
            files = getattr(self, "_files", None)  # unset if the open failed before it
            if files is not None:
                files.close_all()  # its snapshot files: no descriptor outlives the store
        finally:
            self._dirlock.release()

    @property
    def closed(self) -> bool:
        return self._env.closed

    @property
    def cluster_id(self) -> str | None:
        return self._cluster_id

    @property
    def incarnation(self) -> str:
        """The incarnation of this data dir: chosen at random when it was created, never
        changed while a node runs (only ``univrs recover`` rewrites it, offline). A node whose
        data dir is replaced comes back as another incarnation."""
        return self._incarnation

    @property
    def path(self) -> pathlib.Path:
        """The LMDB environment directory (holds ``data.mdb`` and ``lock.mdb``)."""
        return self._env.path

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> StorageStatistics:
        return self._env.statistics()

    def lmdb_flags(self) -> dict[str, bool]:
        """The LMDB environment flags; ``sync`` and ``metasync`` make every commit durable."""
        return self._env.flags()

    def _check_identity(self, cluster_id: str | None) -> None:
        """Validate format, node id and cluster id; record an adopted cluster id, or the
        incarnation of a store written before incarnations existed."""
        env = self._env

        def check(txn: Txn) -> bool:  # True: the identity must be (re)written
            raw_format = txn.get(layout.KEY_FORMAT, db=env.meta)
            if raw_format is None:
                # Every store is created with its identity (create_env): this one lost it.
                raise Corrupt(
                    "metadata record 'format' is missing: the store lost its identity"
                    f"{LOST_STATE_HINT}"
                )
            fmt = layout.decode_record(layout.KEY_FORMAT, raw_format)
            if type(fmt) is not int:
                raise Corrupt("metadata record 'format': malformed")
            if fmt != layout.FORMAT_VERSION:
                newer = "a newer" if fmt > layout.FORMAT_VERSION else "an older"
                raise StorageError(
                    f"data dir {self.data_dir} was written by {newer} univrs (storage format "
                    f"{fmt}; this build reads format {layout.FORMAT_VERSION} only)"
                )
            raw_identity = txn.get(layout.KEY_IDENTITY, db=env.meta)
            if raw_identity is None:
                raise Corrupt(f"metadata record 'identity' is missing{LOST_STATE_HINT}")
            node, cluster, incarnation = layout.parse_identity(
                layout.decode_record(layout.KEY_IDENTITY, raw_identity)
            )
            if node != self.node_id:
                raise StorageError(
                    f"data dir {self.data_dir} belongs to node {node!r}, not {self.node_id!r}"
                )
            if cluster is not None and cluster_id is not None and cluster != cluster_id:
                raise StorageError(
                    f"data dir {self.data_dir} belongs to cluster {cluster!r}, not {cluster_id!r}"
                )
            self._cluster_id = cluster if cluster is not None else cluster_id
            # A store from before incarnations keeps its state, so it is still the member it
            # was: it gets its incarnation now, once.
            self._incarnation = incarnation if incarnation is not None else new_incarnation()
            adopt = cluster is None and cluster_id is not None
            return adopt or incarnation is None

        if env.read(check):
            env.write(self._write_identity)

    def _write_identity(self, txn: Txn) -> None:
        put_identity(self._env, txn, self.node_id, self._cluster_id, self._incarnation)

    def set_cluster_id(self, cluster_id: str) -> None:
        """Record the cluster this node joined; refuses to change an existing cluster id."""
        if self._cluster_id == cluster_id:
            return
        if self._cluster_id is not None:
            raise StorageError(
                f"data dir {self.data_dir} belongs to cluster {self._cluster_id!r}, "
                f"not {cluster_id!r}"
            )
        self._cluster_id = cluster_id
        try:
            self._env.write(self._write_identity)
        except BaseException:
            self._cluster_id = None
            raise

    def _verify(self) -> None:
        """Check every entry's checksum and the log invariants (module docstring)."""

        def verify(txn: Txn) -> None:
            snap = self._snapshot_meta(txn)
            prev: Entry | None = None
            for entry in self._iter_entries(txn, 0):
                if prev is not None:
                    if entry.index != prev.index + 1:
                        raise Corrupt(f"log entries {prev.index} and {entry.index}: gap")
                    if entry.term < prev.term:
                        raise Corrupt(f"log entry {entry.index}: term decreases")
                elif snap is not None and entry.index > snap.index + 1:
                    raise Corrupt(f"log entry {entry.index}: gap after snapshot {snap.index}")
                if snap is not None and entry.index == snap.index and entry.term != snap.term:
                    raise Corrupt(f"log entry {entry.index}: term differs from the snapshot's")
                prev = entry
            if snap is not None and prev is not None and prev.index < snap.index:
                raise Corrupt(f"log ends at {prev.index}, before snapshot {snap.index}")
            hs = self._hard_state(txn)
            last = prev.index if prev is not None else (snap.index if snap is not None else 0)
            if hs.commit > last:
                # The commit index is written only with or after the entries it covers: a
                # store whose commit runs past its last entry lost entries it had made durable.
                raise Corrupt(f"hard state commit {hs.commit} beyond the last stored entry {last}")

        self._env.read(verify)

    # ----------------------------------------------------------------------------------------
    # Reads
    # ----------------------------------------------------------------------------------------

    def initial_state(self) -> InitialState:
        """The durable state the node restarts from (``InitialState`` for ``RaftNode``).

        ``entries`` are those after the snapshot; ``membership`` is the last CONFIG entry of
        the log, else the snapshot's, else empty. The hard state's commit is raised to the
        snapshot index, since a snapshot only ever holds committed entries.
        """

        def read(txn: Txn) -> InitialState:
            hs = self._hard_state(txn)
            snap = self._snapshot_meta(txn)
            start = snap.index + 1 if snap is not None else 0
            entries = tuple(self._iter_entries(txn, start))
            membership = snap.membership if snap is not None else Membership(voters=frozenset())
            for entry in reversed(entries):
                if entry.kind is EntryKind.CONFIG:
                    try:
                        membership = decode_membership(entry.data)
                    except (ValueError, KeyError, TypeError) as exc:
                        raise Corrupt(f"log entry {entry.index}: bad membership: {exc}") from None
                    break
            if snap is not None and hs.commit < snap.index:
                hs = attrs.evolve(hs, commit=snap.index)
            return InitialState(
                hard_state=hs,
                entries=entries,
                snapshot=snap,
                membership=membership,
                applied=snap.index if snap is not None else 0,
            )

        return self._env.read(read)

    def hard_state(self) -> HardState:
        return self._env.read(self._hard_state)

    def first_index(self) -> int:
        return self._env.read(lambda txn: self._bounds(txn)[0])

    def last_index(self) -> int:
        return self._env.read(lambda txn: self._bounds(txn)[1])

    def entries(self, lo: int, hi: int, *, max_bytes: int | None = None) -> tuple[Entry, ...]:
        """Entries with ``lo <= index < hi``; with ``max_bytes``, a prefix of them whose data
        adds up to at most ``max_bytes`` (but always at least one entry).

        Raises ``LogCompacted`` if ``lo < first_index()`` and ``IndexError`` if
        ``hi > last_index() + 1`` or ``lo > hi``.
        """

        def read(txn: Txn) -> tuple[Entry, ...]:
            first, last = self._bounds(txn)
            if lo < first:
                raise LogCompacted(f"entries before {first} are compacted (asked from {lo})")
            if hi > last + 1 or lo > hi:
                raise IndexError(f"entries [{lo}, {hi}) outside the log [{first}, {last + 1})")
            out: list[Entry] = []
            size = 0
            for entry in self._iter_entries(txn, lo):
                if entry.index >= hi:
                    break
                size += len(entry.data)
                if max_bytes is not None and out and size > max_bytes:
                    break
                out.append(entry)
            return tuple(out)

        return self._env.read(read)

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index`` (the snapshot's term at its index; 0 at index 0).

        ``None`` if ``index > last_index()``; raises ``LogCompacted`` below the snapshot.
        """

        def read(txn: Txn) -> int | None:
            if index == 0:
                return 0
            key = layout.index_key(index)
            raw = txn.get(key, db=self._env.log)
            if raw is not None:
                return layout.entry_term(key, raw)
            snap = self._snapshot_meta(txn)
            if snap is not None and index == snap.index:
                return snap.term
            first, last = self._bounds(txn)
            if index > last:
                return None
            raise LogCompacted(f"entry {index} is compacted (first index {first})")

        return self._env.read(read)

    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._env.read(self._snapshot_meta)

    # ----------------------------------------------------------------------------------------
    # Writes: one synced transaction each
    # ----------------------------------------------------------------------------------------

    def append(
        self,
        *,
        hard_state: HardState | None,
        truncate_from: int | None,
        entries: Sequence[Entry],
        wait: bool = True,
    ) -> None:
        """Persist one Ready in one synced transaction: delete entries ``>= truncate_from``,
        append ``entries`` (contiguous with what remains), store ``hard_state``.

        When several Readies are merged into one call, ``entries`` may start below
        ``truncate_from``; the stored log is then cut at the smaller of the two. Without
        ``truncate_from``, ``entries`` must follow the last index exactly. A call with nothing
        to write does not touch the disk. ``wait=False``: ``WouldWait`` (nothing written)
        where the write would wait for another writer or a map growth (``StoreEnv.write``).
        """
        if hard_state is None and truncate_from is None and not entries:
            return
        # The checks of this method are ``_require``'s, written out so that a message is
        # formatted only when its check fails: they run for every entry of every write.
        for a, b in itertools.pairwise(entries):
            if b.index != a.index + 1:
                raise AssertionError(f"entries not contiguous: {a.index}, {b.index}")
            if b.term < a.term:
                raise AssertionError(f"entry {b.index} has a smaller term than {a.index}")
        # Encode outside the transaction (it may be retried after a map growth).
        records = [(layout.index_key(e.index), layout.encode_entry(e)) for e in entries]
        hs_record = (
            layout.encode_record(layout.KEY_HARD_STATE, layout.hard_state_record(hard_state))
            if hard_state is not None
            else None
        )
        pins_record = (
            layout.encode_record(layout.KEY_PINS, layout.pins_record(hard_state.pins))
            if hard_state is not None and hard_state.pins and hard_state.pins != self._pins_written
            else None
        )
        named_record = (
            layout.encode_record(layout.KEY_NAMED, layout.named_record(hard_state.named))
            if hard_state is not None
            and hard_state.named
            and hard_state.named != self._named_written
            else None
        )

        def write(txn: Txn) -> None:
            # The last entry, if any: where entries follow it, its term is read from this
            # cursor rather than looked up again.
            log = txn.cursor(db=self._env.log)
            at_last = log.last()
            last = layout.key_index(log.key()) if at_last else self._bounds(txn)[1]
            if truncate_from is not None:
                cut = min(truncate_from, entries[0].index) if entries else truncate_from
                snap = self._snapshot_meta(txn)
                floor = snap.index if snap is not None else 0
                # Invariant: committed entries (those in the snapshot) are never rewritten.
                _require(
                    floor < cut <= last + 1,
                    f"truncation at {cut} outside ({floor}, {last + 1}]",
                )
                cursor = txn.cursor(db=self._env.log)
                if cursor.set_range(layout.index_key(cut)):
                    while cursor.delete():  # deletes and moves to the next entry
                        pass
                last = cut - 1
                at_last = False
            if entries:
                first = entries[0]
                if first.index != last + 1:
                    raise AssertionError(f"entry {first.index} does not follow {last}")
                prev_term = (
                    layout.entry_term(log.key(), log.value())
                    if at_last
                    else self._term_in(txn, last)
                )
                if first.term < prev_term:
                    raise AssertionError(
                        f"entry {first.index} term {first.term} < previous term {prev_term}"
                    )
                # MDB_APPEND: the keys increase and follow every stored key.
                _, added = txn.cursor(db=self._env.log).putmulti(records, append=True)
                if added != len(records):
                    raise AssertionError(f"stored {added} of {len(records)} entries")
            if hs_record is not None:
                txn.put(layout.KEY_HARD_STATE, hs_record, db=self._env.meta)
            if pins_record is not None and txn.get(layout.KEY_PINS, db=self._env.meta) != (
                pins_record
            ):
                # The pins, in the same synced transaction as the hard state that carries
                # them (rewritten only when they grew: they never shrink).
                txn.put(layout.KEY_PINS, pins_record, db=self._env.meta)
            if named_record is not None and txn.get(layout.KEY_NAMED, db=self._env.meta) != (
                named_record
            ):
                txn.put(layout.KEY_NAMED, named_record, db=self._env.meta)  # (grows only)

        self._env.write(write, wait=wait)
        if hard_state is not None and hard_state.pins:
            self._pins_written = hard_state.pins
        if hard_state is not None and hard_state.named:
            self._named_written = hard_state.named

    def append_nowait(
        self,
        *,
        hard_state: HardState | None,
        truncate_from: int | None,
        entries: Sequence[Entry],
    ) -> None:
        """``append`` that never waits for another writer or a map growth: ``WouldWait``
        instead, with nothing written (the storage writer's small writes on the event loop,
        univrs/runtime/writer.py)."""
        self.append(hard_state=hard_state, truncate_from=truncate_from, entries=entries, wait=False)

    def compact(self, up_to: int) -> None:
        """Delete the entries with index <= ``up_to``; the snapshot must cover them."""
        self.compact_some(up_to, limit=None)

    def compact_some(self, up_to: int, *, limit: int | None) -> bool:
        """``compact``, deleting at most ``limit`` entries (one bounded transaction: the
        runtime compacts in such steps, each its own item of the storage writer's queue).
        True when no entry <= ``up_to`` is left."""

        def write(txn: Txn) -> bool:
            snap = self._snapshot_meta(txn)
            _require(
                snap is not None and up_to <= snap.index,
                f"compact({up_to}) beyond the snapshot at {snap.index if snap else 'none'}",
            )
            cursor = txn.cursor(db=self._env.log)
            if not cursor.first():
                return True
            budget = limit
            while layout.key_index(cursor.key()) <= up_to:
                if budget is not None:
                    if budget == 0:
                        return False
                    budget -= 1
                if not cursor.delete() or not cursor.key():
                    break
            return True

        return self._env.write(write)

    # ----------------------------------------------------------------------------------------
    # Helpers that run inside a transaction
    # ----------------------------------------------------------------------------------------

    def _iter_entries(self, txn: Txn, lo: int) -> Iterator[Entry]:
        cursor = txn.cursor(db=self._env.log)
        if not cursor.set_range(layout.index_key(lo)):
            return
        for key, value in cursor.iternext(keys=True, values=True):
            yield layout.decode_entry(key, value)

    def _bounds(self, txn: Txn) -> tuple[int, int]:
        """(first_index, last_index), as defined in the module docstring."""
        cursor = txn.cursor(db=self._env.log)
        if cursor.last():
            last = layout.key_index(cursor.key())
            cursor.first()
            return layout.key_index(cursor.key()), last
        snap = self._snapshot_meta(txn)
        last = snap.index if snap is not None else 0
        return last + 1, last

    def _term_in(self, txn: Txn, index: int) -> int:
        if index == 0:
            return 0
        key = layout.index_key(index)
        raw = txn.get(key, db=self._env.log)
        if raw is not None:
            return layout.entry_term(key, raw)
        snap = self._snapshot_meta(txn)
        if snap is not None and snap.index == index:
            return snap.term
        raise Corrupt(f"log entry {index}: missing")

    def _hard_state(self, txn: Txn) -> HardState:
        raw = txn.get(layout.KEY_HARD_STATE, db=self._env.meta)
        hs = (
            HardState()
            if raw is None
            else layout.parse_hard_state(layout.decode_record(layout.KEY_HARD_STATE, raw))
        )
        raw_pins = txn.get(layout.KEY_PINS, db=self._env.meta)
        if raw_pins is not None:
            pins = layout.parse_pins(layout.decode_record(layout.KEY_PINS, raw_pins))
            hs = attrs.evolve(hs, pins=pins)
        raw_named = txn.get(layout.KEY_NAMED, db=self._env.meta)
        if raw_named is not None:
            named = layout.parse_named(layout.decode_record(layout.KEY_NAMED, raw_named))
            hs = attrs.evolve(hs, named=named)
        return hs
