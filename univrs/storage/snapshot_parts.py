"""A node's own snapshot stored without holding the log's writer: its data in a file of its own
written off the storage writer's queue, only its record in the log's transaction.

``LogStore.save_snapshot`` stores a snapshot in one transaction of ``raft.lmdb``: at 1,000,000
workloads + 1,000,000 instances that is 212 MB written and synced while the storage writer does
nothing else, and a leader's own appends wait behind it (it hands out no committed entry it has
not made durable itself). The tenth increment of docs/state-at-scale.md stored the same chunks
in 2 MB transactions, each its own item of the writer's queue: a write still waited for one
part and its fsync. ``SnapshotParts`` now writes the data to a file beside ``data.mdb``
(univrs/storage/snapshot_file.py) in steps that do not use the writer's queue at all; the
runtime asks ``in_writer`` before each step (``Snapshotter``) and runs it in a worker thread
when it is False. Only the steps that change ``raft.lmdb`` are writer items, each bounded:
the switch (one small record) and the deletion of chunks left in the ``snap`` database
(``part_chunks`` deletes per step).

Theory of operation. The stored record names either chunks of the ``snap`` database (a
backup restored by ``save_snapshot``, or a leader's snapshot stored by a build before the
fourteenth increment; or an older build's save in parts) or a file
(``layout.snapshot_record``). Anything else (chunks outside the record's range, files it does
not name) is garbage.

1. ``start`` (any thread): the stored record is read; an older snapshot than it is given up
   (and one at the same index, unless it is a ``retake`` of a damaged one at the same point).
   Files left by an earlier save are deleted (``SnapshotFiles.collect``).
2. ``detach-before`` (any thread, only if there are garbage chunks: those of a chunk snapshot
   a leader's snapshot replaced, univrs/storage/snapshot_install.py): every stream that has
   read from them is read into memory (``_detach_streams``), off the writer's queue, before
   the prune deletes them (s13-small: before, the install's switch did it in its writer item).
   ``prune-before`` (writer): bounded batches of deletes.
3. ``file`` (any thread): the file is written ``part_blocks`` blocks (512 KB) per step, each
   piece written and flushed to the disk while no log commit runs (``StoreEnv.turn``,
   ``snapshot_file.flush_range``); the last step fsyncs the file and its directory entry.
4. ``switch`` (writer): one small transaction writes the record naming the file (and, as
   ``save_snapshot``, drops the log if it conflicts with the snapshot). Only now is the file
   named: its data is durable. A chunk snapshot replaced here is handed over as in the tenth
   increment (its StoredSnapshots read its intact chunks until the prune).
5. ``switched``: the runtime hands the core the new snapshot before it runs the next step.
   The runtime runs the whole save in the snapshotter's own task (univrs/runtime/
   snapshotter.py), so no cancelled caller stops it between the switch and the core's
   ``snapshot_taken``: the next save's prune would delete what the core still holds.
6. ``prune-after``: a replaced file is unlinked (any thread; its open readers go on reading
   it); replaced chunks are deleted in bounded batches (writer), after the streams still
   reading them were read into memory.

Every step checks that the stored record is still the one it started from; if not (a
snapshot from the leader was installed meanwhile), the save gives up: ``stored`` is False,
its file is deleted. A crash at any point leaves the record naming a complete snapshot: the
old one until the switch commits (untouched: the save only adds a new file), the new one after
(its file was synced before).
"""

from __future__ import annotations

import contextlib
import secrets
import zlib
from typing import TYPE_CHECKING, Any

from univrs.errors import StorageError
from univrs.raft.messages import SnapshotMeta
from univrs.storage import layout
from univrs.storage.snapshot_file import PART_BLOCKS, FileWriter, SnapshotFiles

if TYPE_CHECKING:
    import weakref

    from univrs.storage.env import StoreEnv, Txn
    from univrs.storage.stored_snapshot import StoredSnapshot

# Chunk deletes per transaction (garbage chunks of the ``snap`` database): 512 chunks of a
# 4 KiB page are 2 MB, a few milliseconds of writing and syncing.
PART_CHUNKS = 512

# The phases whose steps change ``raft.lmdb`` (items of the storage writer's queue).
_WRITER_PHASES = frozenset({"prune-before", "switch", "prune-chunks"})
# The phases before this snapshot is surely the stored one: a failure in them abandons the save.
_BEFORE_SWITCHED = frozenset({"start", "detach-before", "prune-before", "file", "switch"})


class SnapshotParts:
    """One snapshot being stored in steps (see the module docstring): call ``step`` (in the
    storage writer's thread when ``in_writer``, else in any thread) until it returns True;
    then ``stored`` says whether the snapshot is the stored one (False: a newer one or another
    one was stored meanwhile, and this one was given up)."""

    def __init__(
        self,
        env: StoreEnv,
        live: weakref.WeakSet[StoredSnapshot],
        files: SnapshotFiles,
        meta: SnapshotMeta,
        data: bytes,
        *,
        crc: int | None = None,
        part_chunks: int = PART_CHUNKS,
        part_blocks: int = PART_BLOCKS,
        retake: bool = False,
    ) -> None:
        if part_chunks < 1 or part_blocks < 1:
            raise ValueError(f"parts must be >= 1, got {part_chunks}, {part_blocks}")
        self._env = env
        self._live = live  # the store's StoredSnapshots (chunks) handed out and alive
        self._files = files
        self.meta = meta
        self._size = len(data)
        # The whole data's CRC-32: computed by the caller where it costs nobody a wait (a
        # worker thread; 0.2 s at 212 MB), else in the file's first step.
        self._crc = crc
        self._data = data
        self._part = part_chunks
        # May replace a stored snapshot at the same index and term (a damaged one: the file's
        # name has a token of its own, so the two never share a file).
        self._retake = retake
        self._name = layout.snapshot_file_name(meta, secrets.token_hex(4))
        self._file = FileWriter(files, self._name, data, part_blocks, env.turn)
        self._phase = "start"
        self._old: Any = None  # the stored record (decoded) this save started from
        self.stored: bool | None = None
        self.steps = 0  # steps run (for tests and logs)
        self.writer_steps = 0  # of which in the storage writer's queue (``in_writer``)

    @property
    def in_writer(self) -> bool:
        """The next step writes to ``raft.lmdb`` (a bounded transaction, to run as an item
        of the storage writer's queue); False: it runs in any thread, off the queue."""
        return self._phase in _WRITER_PHASES

    def step(self) -> bool:
        """Run the next step; True when the save is over. A step that fails (a disk full or
        failing while the file is written) before this snapshot is the stored one ends the
        save: its file is closed and removed (unless the record names it), then the error is
        raised."""
        if self._phase == "done":
            return True
        try:
            return self._step()
        except BaseException:
            if self._phase in _BEFORE_SWITCHED:
                self._abandon()
            raise

    def _abandon(self) -> None:
        """The save failed: close its file and remove it, as ``_give_up`` does, keeping the
        error that ended it (a failure to remove is left to the next ``collect``). Before,
        the file stayed ``pending`` for the process's life, so no ``collect`` removed it,
        and its descriptor stayed open (found by the session-12 review)."""
        self._file.close()
        with self._files.lock:
            self._files.pending.discard(self._name)
        with contextlib.suppress(StorageError):
            self._files.collect(self._env)  # not if the record names it (a switch committed)
        self._phase = "done"

    def _step(self) -> bool:
        self.steps += 1
        if self.in_writer:
            self.writer_steps += 1
        if self._phase == "start":
            self._env.read(self._start)
            if self.stored is False:
                return self._done()
            self._files.collect(self._env)  # files left by a save that did not finish
            self._phase = "detach-before" if self._env.read(self._garbage) else "file"
            return False
        if self._phase == "detach-before":
            # Streams of the garbage chunks (handed over by an install's switch) read them
            # until now: into memory here, off the writer's queue, before the prune.
            self._detach_streams(keep=self._env.read(self._record))
            self._phase = "prune-before"
            return False
        if self._phase == "prune-before":
            if self._env.write(self._prune):
                self._phase = "file"
            return False
        if self._phase == "file":
            if not self._env.read(self._still):
                return self._give_up()
            if self._crc is None:
                self._crc = zlib.crc32(self._data)  # without the interpreter lock
            with self._files.lock:
                self._files.pending.add(self._name)
            if self._file.write_piece():
                self._phase = "switch"
            return False
        if self._phase == "switch":
            if self._old_is_chunks():
                # Streams of the old chunks read them until ``switched`` detaches them, off
                # the writer's queue: this step stays one small transaction.
                self._hand_over()
            with self._files.lock:
                self._env.write(self._switch)
                self._files.pending.discard(self._name)
            if self.stored is False:
                return self._give_up()
            self._phase = "switched"
            return False
        if self._phase == "switched":
            if not self._old_is_chunks():
                self._files.collect(self._env)  # the old file: its readers keep it open
                return self._done()
            # The runtime handed the new snapshot to the core before it runs this step (see
            # ``switched``): a stream of the old one begun in between is read into memory
            # now, while its chunks are still there, before the prune deletes them.
            self._detach_streams(keep=self._env.read(self._record))
            self._phase = "prune-chunks"
            return False
        if self._phase == "prune-chunks":
            if self._env.write(self._prune):
                return self._done()
            return False
        return True

    def _done(self) -> bool:
        self._phase = "done"
        return True

    def _give_up(self) -> bool:
        self.stored = False
        self._file.close()
        with self._files.lock:
            self._files.pending.discard(self._name)
        self._files.collect(self._env)  # its file, unless named (it is not: given up)
        return self._done()

    @property
    def at_switch(self) -> bool:
        """The next step is the switch: the one that makes this snapshot the stored one."""
        return self._phase == "switch"

    @property
    def switched(self) -> bool:
        """This snapshot is the stored one; the old one is still all there (removed by the
        steps after, which the caller runs once the core holds the new snapshot: a
        StoredSnapshot of old chunks still reads them until then)."""
        return self._phase == "switched"

    def _old_is_chunks(self) -> bool:
        return self._old is not None and layout.snapshot_file(self._old) is None

    def _hand_over(self) -> None:
        """Tell the old snapshot's StoredSnapshots which record replaces theirs, before the
        switch stores it: they read their intact chunks until the prune (``switched``)."""
        old = layout.parse_snapshot(self._old)
        new = layout.parse_snapshot(self._new_record())
        for live in list(self._live):
            if live.record == old:
                live.superseded_by(new)

    def _detach_streams(self, keep: Any) -> None:
        """Read into memory every StoredSnapshot a stream has read from, but one of the
        stored record ``keep`` (None: every one): the prunes delete their chunks."""
        kept = None if keep is None else layout.parse_snapshot(keep)
        for live in list(self._live):
            if live.touched and not live.detached and live.record != kept:
                live.detach_if_readable()

    # ------------------------------------------------------------------ in a transaction

    def _record(self, txn: Txn) -> Any:
        raw = txn.get(layout.KEY_SNAPSHOT, db=self._env.meta)
        return None if raw is None else layout.decode_record(layout.KEY_SNAPSHOT, raw)

    def _range(self, record: Any) -> tuple[int, int]:
        """The keys of the ``snap`` database the record uses (none if it names a file)."""
        if record is None or layout.snapshot_file(record) is not None:
            return 0, 0
        _, _, chunks, _, first = layout.parse_snapshot(record)
        return first, first + chunks

    def _start(self, txn: Txn) -> None:
        record = self._record(txn)
        if record is not None:
            old = layout.parse_snapshot(record)[0]
            same = (old.index, old.term) == (self.meta.index, self.meta.term)
            if old.index >= self.meta.index and not (self._retake and same):
                self.stored = False  # a newer one (e.g. from the leader) is already stored
                return
        self._old = record

    def _still(self, txn: Txn) -> bool:
        return bool(self._record(txn) == self._old)

    def _garbage(self, txn: Txn) -> bool:
        """Are there chunks outside the stored record's range?"""
        lo, hi = self._range(self._record(txn))
        cursor = txn.cursor(db=self._env.snap)
        if cursor.first() and layout.key_index(cursor.key()) < lo:
            return True
        return bool(cursor.set_range(layout.index_key(hi)))

    def _prune(self, txn: Txn) -> bool:
        """Delete up to ``part_chunks`` keys outside the stored snapshot's range; True when
        none is left."""
        lo, hi = self._range(self._record(txn))
        cursor = txn.cursor(db=self._env.snap)
        budget = self._part
        if cursor.first():
            while budget > 0 and cursor.key() and layout.key_index(cursor.key()) < lo:
                cursor.delete()  # moves to the next key
                budget -= 1
        if cursor.set_range(layout.index_key(hi)):
            while budget > 0 and cursor.key():
                cursor.delete()
                budget -= 1
        return budget > 0

    def _new_record(self) -> list[Any]:
        """The record the switch stores (what ``layout.parse_snapshot`` reads back)."""
        assert self._crc is not None
        return layout.snapshot_record(
            self.meta,
            size=self._size,
            chunks=self._file.blocks,
            crc=self._crc,
            file=self._name,
        )

    def _switch(self, txn: Txn) -> None:
        if not self._still(txn):
            self.stored = False
            return
        meta = self.meta
        old = None if self._old is None else layout.parse_snapshot(self._old)[0]
        raw = txn.get(layout.index_key(meta.index), db=self._env.log)
        same_point = old is not None and (old.index, old.term) == (meta.index, meta.term)
        if not same_point and (
            raw is None or layout.decode_entry(layout.index_key(meta.index), raw).term != meta.term
        ):
            txn.drop(self._env.log, delete=False)  # as ``save_snapshot``: Figure 13, 6-7
        txn.put(
            layout.KEY_SNAPSHOT,
            layout.encode_record(layout.KEY_SNAPSHOT, self._new_record()),
            db=self._env.meta,
        )
        self.stored = True
