"""The state machine in LMDB: the object tables (the ``Table`` / ``PairIndex`` interface of
``univrs.sm.tables``), the session table, the ledger, the API tokens and the applied index on
named databases of one LMDB environment (docs/state-at-scale.md's design; in the storage
layer: the state machine itself stays pure).

Keys are the UTF-8 bytes of the ids (LMDB orders keys bytewise, which for UTF-8 is code point
order: the order of Python's ``str``, the in-memory backend's). A pair (first, second) is the
key ``first + NUL + second``: ids never contain NUL (``univrs.sm.validate``: letters, digits
and ``._:@+=-``), so bytewise order of these keys is the order of the tuples, and the pairs of
one ``first`` are a contiguous range. Values are encoded by the functions the table is given
(for objects: the snapshot's rows as CBOR, ``object_tables``).

Transactions: inside ``LmdbStore.batch()`` every read and write goes through one write
transaction, committed when the block ends (aborted if it raises), so a command's changes are
durable together or not at all; outside a batch each write is its own transaction and reads
open a read transaction (an iterator holds its read transaction until it is exhausted or
closed). One thread uses a store at a time (the state machine's).

The small tables (``LmdbJournal``): the state machine keeps its sessions, balances and tokens
as Python objects too (bounded: at most ``SessionPolicy.max_sessions`` sessions and
``MAX_TOKENS`` tokens) and tells the journal which keys it changes; when the batch commits, the
journal writes their current values, and the applied index, term, clock and the other scalars,
in the same transaction. So what the environment holds is always the state after some applied
index, never half a batch. Databases:

* ``sessions``: client id -> CBOR ``[owner, client id, last_index, last_ms, max_seq]`` (the
  session's head; format 3, s14-journal: before it, this row held every cached response);
  written when the session opens and when its activity moves without a response row
  written (a retry, a stale seq); else older than its newest response row (format 4);
* ``session_responses`` (format 4, s15-follow): ``client id + NUL + seq % window (8 bytes,
  big-endian)`` -> ``seq, last_index, last_ms`` (8 bytes each, big-endian) followed by the
  plain response's CBOR (``sm_journal.response_bytes``), one row per slot of
  the session's window: a keyed write puts its response into its seq's slot (overwriting the
  seq that left the window), with the session's last index and time, and nothing else. Read
  back (``sm_rows.read_small``), a session's last index, time and max seq are the
  newest of its head's and its rows' (they only grow), and its responses the rows whose seq
  is in the window below that max seq; the sessions are sorted by (last index, client id),
  their activity order. (Format 3 keyed rows by seq, deleted the rows leaving the window,
  and kept the order in ``session_activity``, ``last_index + client id`` -> empty: three
  puts, two deletes per keyed write. An env of format 3 or older is upgraded at open.)
* ``ledger``: peer -> CBOR balance; ``tokens``: token id -> CBOR snapshot token row;
* ``workload_counts``: workload id -> its instances' counts by status (``sm_store.COUNTS_ROW``),
  for the workloads that have instances: derived from the instances, kept by apply in the
  same batch (s14-page);
* ``meta``: ``state`` -> CBOR ``[STATE_FORMAT, last_index, last_term, clock_ms,
  tokens_bootstrapped, policy row, revision]``, ``cluster`` -> the cluster id (UTF-8).

The code is split by concept: ``sm_store`` (the environment, the object tables, the pair
indexes, raw rows for snapshots), ``sm_journal`` (the small tables and meta), ``sm_rows`` (the
small tables read back and checked at open and at an upgrade), ``sm_stream`` (a snapshot's
bytes read one row at a time); this module keeps ``StateEnv`` and re-exports the
names others import from here.

``StateEnv`` is the node's: open (``load``: O(small tables), the object tables are not read),
replace everything from a snapshot in one transaction (``replace``), force to disk (``sync``).
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import threading
import time

import cbor2
import lmdb

from univrs import codec
from univrs.errors import StorageError
from univrs.sm.objects import Objects, new_objects
from univrs.sm.state import ClusterStateMachine
from univrs.storage import header, nospace, pages
from univrs.storage.datadir import fsync_dir
from univrs.storage.sm_ingest import staged_plain
from univrs.storage.sm_journal import (
    _ALL_DBS,
    _LEGACY_DBS,
    _OBJECT_DBS,
    _SMALL_DBS,
    STATE_FORMAT,
    LmdbJournal,
    _objects_on,
    build_counts,
    counts_damage,
    objects_in_lmdb,
)
from univrs.storage.sm_rows import (
    SmallTables,
    StateMeta,
    read_small,
    slot_sessions,
    split_sessions,
    state_format,
    state_meta,
)
from univrs.storage.sm_store import (
    DEFAULT_MAP_SIZE,
    RAW_CHUNK,
    LmdbPairIndex,
    LmdbRawRows,
    LmdbStore,
    LmdbTable,
    cbor_codec,
)
from univrs.storage.sm_stream import MAX_SNAPSHOT_BYTES, streamed_plain

log = logging.getLogger("univrs.node")

__all__ = [
    "DEFAULT_MAP_SIZE",
    "RAW_CHUNK",
    "STATE_FORMAT",
    "LmdbJournal",
    "LmdbPairIndex",
    "LmdbRawRows",
    "LmdbStore",
    "LmdbTable",
    "StateEnv",
    "cbor_codec",
    "objects_in_lmdb",
    "streamed_plain",
]

_STAGING = ".incoming."  # ``StateEnv.stage``'s folders: ``<path>.incoming.<n>``
_READY = ".ready"  # a staged env, complete and synced, about to replace ``<path>``
_RETIRED = ".retired"  # the replaced env, renamed away, removed once the new one is in place


# Called with the name of each step of ``StateEnv.replace``'s swap just before it (tests kill
# the process there: tests/runtime/test_state_swap.py).
def swap_step(step: str) -> None:
    """A hook (nothing in a node)."""


def recover_swap(path: str) -> str | None:
    """Finish or undo a swap of ``path`` that a crash interrupted (``StateEnv.replace``), so
    that ``path`` is a complete environment, the old or the new one; remove the leftovers
    (staged, ready and retired folders). Returns what was done (None: nothing to do).

    The swap's steps, each crash-safe: the staged env is synced and renamed ``.ready``
    (complete); ``path`` is renamed ``.retired``; ``.ready`` is renamed ``path``; the parent
    directory is synced; ``.retired`` is removed. So: no ``path`` but a ``.ready`` -> the new
    one goes in; no ``path``, no ``.ready``, a ``.retired`` -> the old one comes back (never
    happens in that order; kept for a hand-made mess); ``path`` present -> it is used, the
    rest is removed (a ``.ready`` beside it never replaced it: the start restores the stored
    snapshot again if the state is behind it)."""
    parent, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(parent):
        return None
    ready, retired = path + _READY, path + _RETIRED
    done: str | None = None
    if not os.path.exists(path):
        if os.path.isdir(ready):
            os.rename(ready, path)
            done = "the staged state env replaced the old one (a swap was interrupted)"
        elif os.path.isdir(retired):
            os.rename(retired, path)
            done = "the old state env was put back (a swap was interrupted)"
        if done is not None:
            fsync_dir(pathlib.Path(parent))
    for leftover in os.listdir(parent):
        if leftover in (name + _READY, name + _RETIRED) or leftover.startswith(name + _STAGING):
            shutil.rmtree(os.path.join(parent, leftover), ignore_errors=True)
    return done


def _resume(objects: Objects, meta: StateMeta, small: SmallTables) -> ClusterStateMachine:
    """The state machine on ``objects`` with the small tables read back (``DecodeError`` if
    they break an invariant)."""
    _, index, term, clock_ms, bootstrapped, policy, revision = meta
    sessions, balances, tokens = small
    return ClusterStateMachine.resume(
        objects,
        policy=policy,
        last_index=index,
        last_term=term,
        clock_ms=clock_ms,
        balances=balances,
        sessions=sessions,
        tokens=tokens,
        tokens_bootstrapped=bootstrapped,
        revision=revision,
    )


def check_state_pages(path: str) -> None:
    """Refuse a state env whose ``data.mdb`` LMDB could not read without dying, before it is
    mapped (univrs/storage/pages.py, as the log's store at open): a file shorter than its
    pages (SIGBUS on the first access past the end) or a damaged tree (an LMDB assertion:
    SIGABRT, naming no file). The state has no checksums of its own and is opened without
    fsync, so a machine crash or a bad sector can leave such pages; the start must say so, and
    the remedy (move it away, the next start rebuilds it from the log) is the caller's to name.
    It reads every page in use once: about 6 ms of CPU per MB of small rows (19 ms for 60,000
    workloads, 3 MB), so some 2 s at 1,000,000 + 1,000,000 objects (338 MiB) per start.
    A missing or empty file is a new env: nothing to check."""
    data_file = pathlib.Path(path) / "data.mdb"
    if not header.SUPPORTED:
        return
    try:
        if data_file.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    try:
        pages.check_trees(data_file, header.check_length(data_file))
    except header.BadHeader as exc:
        raise StorageError(f"state env {path} is corrupt: {data_file} {exc}") from None


class StateEnv:
    """A node's persistent state machine: one LMDB environment (``data_dir/state.lmdb``)
    holding every table and the applied index (see the module docstring).

    Opened with ``sync=False`` by default: a commit is not fsynced (a process crash loses
    nothing, the page cache has it; a machine crash may lose the last batches, so the state
    may be behind the durable log, never ahead of it: replay covers it). ``sync`` forces it to
    disk; the node calls it before compacting its log below the state's applied index."""

    def __init__(self, path: str, *, sync: bool = False, map_size: int = DEFAULT_MAP_SIZE) -> None:
        try:
            self.recovered = recover_swap(path)
            os.makedirs(path, mode=0o700, exist_ok=True)
            check_state_pages(path)
            self.store = LmdbStore(path, sync=sync, map_size=map_size)
        except (lmdb.Error, OSError) as exc:
            raise StorageError(f"state env {path} cannot be opened: {exc}") from None
        self.path = path
        self.map_size = map_size
        # Another LMDB environment put here (a copy of raft.lmdb, ...) is refused before
        # anything is created in it.
        try:
            with self.store.env.begin() as txn:
                foreign = sorted(
                    bytes(k).decode(errors="replace")
                    for k, _ in txn.cursor()
                    if bytes(k).decode(errors="replace") not in _ALL_DBS | _LEGACY_DBS
                )
        except lmdb.Error as exc:  # garbled pages behind valid meta pages: MDB_CORRUPTED
            self.store.close()
            raise StorageError(f"state env {path} is corrupt: {exc}") from None
        if foreign:
            self.store.close()
            raise StorageError(
                f"state env {path} is not a state env: it holds the databases {foreign}"
            )
        for name in (*_OBJECT_DBS, *_SMALL_DBS, "meta"):
            self.store.db(name)
        self._meta = self.store.db("meta")
        # Snapshots restored beside the state (``stage``), not yet replacing it: (number, the
        # state machine, its store, its folder). A crash leaves their folders: removed here.
        self._staged: list[tuple[int, ClusterStateMachine, LmdbStore, str]] = []
        self._staged_lock = threading.Lock()
        self._stage_count = 0

    def stage(self, data: bytes) -> ClusterStateMachine:
        """Restore snapshot ``data`` straight into a new environment beside this one (the
        folder ``<path>.incoming.<n>``), one row at a time, and return the state machine on
        it; ``replace`` of that state machine then copies its tables here as stored bytes.

        The same reader and checks as a restore in memory (``restore_plain``: format and
        version, every row, duplicates, dangling references, sessions, ledger, tokens), in
        the same order of rows, so the same state and digest; what differs is memory: the rows
        are decoded one at a time and written to the new environment, so a restore holds one
        row and LMDB's pages, not the state as Python objects. Thread-safe (the runtime runs
        it in a worker thread: the core's snapshot check); touches nothing of this state.
        Raises what ``restore_plain`` and the codec raise for bad data (the new folder is
        removed then), ``StorageError`` if the environment cannot be written."""
        from univrs.sm.snapshot_read import restore_plain

        with self._staged_lock:
            self._stage_count += 1
            number = self._stage_count
        path = f"{self.path}{_STAGING}{number}"
        shutil.rmtree(path, ignore_errors=True)
        store: LmdbStore | None = None
        try:
            store = LmdbStore(path, sync=False, map_size=self.map_size)
            for name in (*_OBJECT_DBS, *_SMALL_DBS, "meta"):
                store.db(name)
            # One walk storing canonical rows as they come (a node's snapshot); anything else
            # (nothing written then) goes through the full reader, which decides.
            wall, cpu = time.perf_counter(), time.thread_time()
            plain = staged_plain(data, store)
            one_walk = plain is not None
            if plain is None:
                plain = streamed_plain(data)
            if plain is None:  # not laid out for streaming: decoded whole (its errors)
                plain = codec.decode_plain(data, max_size=MAX_SNAPSHOT_BYTES, max_depth=64)
            sm = restore_plain(plain, objects=_objects_on(store))
            staged = time.perf_counter(), time.thread_time()
            # Complete and durable here, in the caller's thread: ``replace`` then only renames.
            stamp = self.cluster_id()
            if stamp is not None:
                with store.env.begin(write=True) as txn:
                    txn.put(b"cluster", stamp.encode(), db=store.db("meta"))
            store.env.sync(True)
            # The parts of a check's time (docs/state-at-scale.md, s13-scale).
            log.info(
                "snapshot staged",
                extra={
                    "one_walk": one_walk,
                    "stage_s": round(staged[0] - wall, 3),
                    "stage_cpu_s": round(staged[1] - cpu, 3),
                    "sync_s": round(time.perf_counter() - staged[0], 3),
                },
            )
        except BaseException as exc:
            if store is not None:
                store.close()
            shutil.rmtree(path, ignore_errors=True)
            if isinstance(exc, lmdb.Error):
                raise StorageError(f"snapshot cannot be restored into {path}: {exc}") from None
            raise
        with self._staged_lock:
            self._staged.append((number, sm, store, path))
        return sm

    def unstage(self, sm: ClusterStateMachine) -> None:
        """Drop the environment ``stage`` made for ``sm``, which will not be installed (its
        check was superseded, failed or replaced: univrs/runtime/snapshots.py
        ``SnapshotChecker``): closed and removed now, not at the next install or start.
        Nothing if ``sm`` was not staged here (or was installed)."""
        with self._staged_lock:
            match = next((entry for entry in self._staged if entry[1] is sm), None)
            if match is None:
                return
            self._staged.remove(match)
        _, _, store, path = match
        store.close()
        shutil.rmtree(path, ignore_errors=True)

    def _take_staged(self, sm: ClusterStateMachine) -> tuple[LmdbStore, str] | None:
        """The store ``sm`` was staged on (None: not staged here); forgets it and discards
        the environments staged before it (checks nobody will install any more)."""
        with self._staged_lock:
            match = next((entry for entry in self._staged if entry[1] is sm), None)
            if match is None:
                return None
            older = [entry for entry in self._staged if entry[0] < match[0]]
            self._staged = [entry for entry in self._staged if entry[0] > match[0]]
        for _, _, store, path in older:
            store.close()
            shutil.rmtree(path, ignore_errors=True)
        return match[2], match[3]

    def cluster_id(self) -> str | None:
        """The cluster this state belongs to (None: never stamped)."""
        with self.store.env.begin() as txn:
            raw = txn.get(b"cluster", db=self._meta)
        try:
            return None if raw is None else bytes(raw).decode()
        except UnicodeDecodeError:
            raise StorageError(f"state env {self.path}: its cluster id does not decode") from None

    def set_cluster_id(self, cluster_id: str) -> None:
        """Stamp the state with its cluster (durably)."""
        with self.store.env.begin(write=True) as txn:
            txn.put(b"cluster", cluster_id.encode(), db=self._meta)
        self.sync()

    def applied(self) -> tuple[int, int]:
        """(index, term) of the last entry the stored state reflects ((0, 0): empty)."""
        with self.store.env.begin() as txn:
            raw = txn.get(b"state", db=self._meta)
        if raw is None:
            return 0, 0
        try:
            meta = cbor2.loads(raw)
            index, term = meta[1], meta[2]
        except (ValueError, TypeError, KeyError, IndexError, cbor2.CBORDecodeError) as exc:
            raise StorageError(
                f"state env {self.path}: its applied index does not decode: {exc}"
            ) from None
        if type(index) is not int or type(term) is not int:
            raise StorageError(f"state env {self.path}: its applied index does not decode")
        return index, term

    def load(self) -> ClusterStateMachine:
        """The state machine on this environment, as last committed (an empty one if none
        was). Reads the small tables only (an env of state format 1 first gets its counts
        rows built: ``_upgrade``). ``StorageError`` if they do not decode."""
        objects = _objects_on(self.store)
        try:
            self._upgrade()
            with self.store.env.begin() as txn:
                raw = txn.get(b"state", db=self._meta)
                if raw is None:
                    if any(
                        txn.stat(self.store.db(n))["entries"] for n in (*_OBJECT_DBS, *_SMALL_DBS)
                    ):
                        raise StorageError("tables are filled but the applied index is missing")
                    return ClusterStateMachine(objects=objects)
                meta = state_meta(raw)
                if meta[0] != STATE_FORMAT:
                    raise StorageError(f"state format {meta[0]} is not {STATE_FORMAT}")
                small = read_small(txn, self.store, meta[5].window)
            return _resume(objects, meta, small)
        except StorageError as exc:
            raise StorageError(f"state env {self.path}: {exc}") from None
        except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
            raise StorageError(f"state env {self.path} does not decode: {exc}") from None

    def counts_damage(self) -> str | None:
        """What is wrong with the stored counts rows against a recount of the instances, or
        None (``sm_journal.counts_damage``; ``univrs state-scrub``). Reads every instance."""
        with self.store.env.begin() as txn:
            return counts_damage(txn, self.store)

    def _upgrade(self) -> None:
        """An env of an older state format is brought to the current one in one write
        transaction (once): format 1 (before ``workload_counts``) gets that table built from
        its instances (s14-page); formats 1 and 2 (a session's responses in its one row) get
        their sessions split into head rows and response rows (``split_sessions``,
        s14-journal); formats 1 to 3 get their response rows put in their window's slots and
        lose ``session_activity`` (``slot_sessions``, s15-follow). Then it says format 4."""
        with self.store.env.begin() as txn:
            raw = txn.get(b"state", db=self._meta)
        if raw is None or state_format(raw) not in (1, 2, 3) or STATE_FORMAT != 4:
            return  # new or current (``load`` refuses any other format)
        meta = state_meta(raw)
        started = time.perf_counter()
        before, window = meta[0], meta[5].window
        # One transaction: a malformed row (a StorageError naming it), in the tables it
        # rewrites or in those ``load`` reads, aborts it: nothing written.
        with self.store.env.begin(write=True) as txn:
            rows = build_counts(txn, self.store) if before == 1 else None
            if before < 3:
                split_sessions(txn, self.store)
            responses = slot_sessions(txn, self.store, window)
            # what ``load`` reads and checks next, on objects in memory: refused here, not after
            _resume(new_objects(), meta, read_small(txn, self.store, window))
            row = cbor2.loads(raw)
            row[0] = STATE_FORMAT
            txn.put(b"state", cbor2.dumps(row), db=self._meta)
        self.store.invalidate()
        log.info(
            "state env upgraded",
            extra={
                "from_format": before,
                "format": STATE_FORMAT,
                "counts_rows": rows,
                "response_rows": responses,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def replace(self, sm: ClusterStateMachine) -> ClusterStateMachine:
        """Replace the whole stored state by ``sm``'s (a restored snapshot) and return the
        state machine on this environment.

        A state machine from ``stage`` sits in a complete, synced environment of its own: it
        replaces this one by renames (``_swap``: O(1) in the state, crash-safe at every step,
        see ``recover_swap``), and is returned as it is. Any other is copied in one write
        transaction (the old state stays whole if this raises, or at a crash meanwhile)."""
        staged = self._take_staged(sm)
        if staged is not None:
            self._swap(staged)
            return sm
        objects = _objects_on(self.store)
        with self.store.batch():
            with self.store.writing() as txn:
                for name in (*_OBJECT_DBS, *_SMALL_DBS):
                    txn.drop(self.store.db(name), delete=False)
            self.store.invalidate()  # emptied around the tables: nothing cached holds
            stored = ClusterStateMachine.from_parts(
                policy=sm.policy,
                last_index=sm.last_applied_index,
                last_term=sm.last_applied_term,
                clock_ms=sm.clock_ms,
                workloads=sm.stored_workloads(),
                instances=sm.stored_instances(),
                nodes=sm.stored_nodes(),
                balances=list(sm.ledger_items()),
                sessions=list(sm.stored_sessions()),
                tokens=list(sm.stored_tokens()),
                tokens_bootstrapped=sm.tokens_bootstrapped,
                revision=sm.revision,
                objects=objects,
            )
        return stored

    def _swap(self, staged: tuple[LmdbStore, str]) -> None:
        """Put the staged environment in place of this one by renames (``recover_swap`` says
        what a crash at each step leaves). The old environment is not closed: readers that
        began before (a snapshot being encoded, a page being listed) finish on it; it is
        unlinked at once and its files go when the last of them is dropped."""
        store, staged_path = staged
        ready, retired = self.path + _READY, self.path + _RETIRED
        parent = pathlib.Path(os.path.dirname(os.path.abspath(self.path)))
        swap_step("ready")
        shutil.rmtree(ready, ignore_errors=True)
        os.rename(staged_path, ready)  # its data was synced by ``stage``
        fsync_dir(parent)
        swap_step("retire")
        shutil.rmtree(retired, ignore_errors=True)
        os.rename(self.path, retired)
        swap_step("install")
        os.rename(ready, self.path)
        swap_step("sync")
        fsync_dir(parent)
        self.store = store
        self._meta = store.db("meta")
        swap_step("remove")
        shutil.rmtree(retired, ignore_errors=True)

    def sync(self) -> None:
        """Force every committed transaction to disk."""
        try:
            self.store.env.sync(True)
        except lmdb.Error as exc:
            full = nospace.disk_full(pathlib.Path(self.path, "data.mdb"), exc)
            if full is not None:
                raise full from None
            raise

    def close(self) -> None:
        """Force to disk and close."""
        self.sync()
        self.store.close()
