"""A node's own snapshot stored in bounded transactions, so the log's writes go on meanwhile.

``LogStore.save_snapshot`` stores a snapshot in one transaction: at 1,000,000 workloads +
1,000,000 instances that is 212 MB written and synced while the storage writer does nothing
else, and a leader's own appends wait behind it (it hands out no committed entry it has not
made durable itself): every client's write waits for the whole save (docs/state-at-scale.md,
tenth increment). ``SnapshotParts`` stores the same chunks in steps; the runtime runs each
step as its own item of the storage writer's FIFO queue (``Snapshotter.take``), so the
appends queued meanwhile are written between two steps. Each step is one transaction of at
most ``part_chunks`` chunk puts or deletes.

Theory of operation. The ``snap`` database holds the stored snapshot's chunks at keys
``first .. first + chunks - 1`` (the ``snapshot`` record says which: ``layout.snapshot_record``);
any other key in it is garbage (left by a save in parts that was interrupted or given up).

1. ``prune``: the garbage is deleted, a bounded batch per step, until only the stored
   snapshot's chunks remain (usually nothing to do).
2. ``parts``: the new chunks go at keys from ``base = first + chunks`` of the stored record
   (above every key present: appends), each step a batch. Nothing a reader uses changes: the
   record still names the old chunks, which are never touched here.
3. ``switch``: one small transaction writes the record naming the new chunks (and, as
   ``save_snapshot``, drops the log if it conflicts with the snapshot); the old chunks are
   garbage from then on. Streams holding the old snapshot detach first (read it into memory),
   as before a ``save_snapshot``.
4. ``switched``: the runtime hands the core the new snapshot before it runs the next step;
   until then the core's StoredSnapshot of the old one still reads the old chunks
   (``StoredSnapshot.superseded_by``: they are intact while the new record is stored). The
   runtime runs the whole save in the snapshotter's own task (univrs/runtime/snapshotter.py),
   so no cancelled caller stops it between the switch and the core's ``snapshot_taken``:
   the next save's prune (step 1) would delete the chunks of the snapshot the core holds.
5. ``prune`` again: the streams still reading the old one are read into memory first, then
   the old chunks are deleted in batches.

Every step checks that the stored record is still the one it started from; if not (a
snapshot from the leader was installed meanwhile: ``save_snapshot`` drops the database and
writes its own), the save gives up: ``stored`` is False, nothing of it is used, and what is
left of it is garbage for the next save's prune. A crash at any point leaves the record
naming a complete snapshot: the old one until the switch commits (its chunks untouched), the
new one after (its chunks were committed, synced, in earlier transactions).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from univrs.raft.messages import SnapshotMeta
from univrs.storage import layout

if TYPE_CHECKING:
    import weakref

    from univrs.storage.env import StoreEnv, Txn
    from univrs.storage.stored_snapshot import StoredSnapshot

# Chunk puts or deletes per transaction: 512 chunks of a 4 KiB page are 2 MB, a few
# milliseconds of writing and syncing, about the time of a group commit under load.
PART_CHUNKS = 512


class SnapshotParts:
    """One snapshot being stored in steps (see the module docstring): call ``step`` (in the
    storage writer's thread, one transaction each) until it returns True; then ``stored``
    says whether the snapshot is the stored one (False: a newer one or another one was
    stored meanwhile, and this one was given up)."""

    def __init__(
        self,
        env: StoreEnv,
        live: weakref.WeakSet[StoredSnapshot],
        meta: SnapshotMeta,
        data: bytes,
        *,
        crc: int | None = None,
        part_chunks: int = PART_CHUNKS,
    ) -> None:
        if part_chunks < 1:
            raise ValueError(f"part_chunks must be >= 1, got {part_chunks}")
        self._env = env
        self._live = live  # the store's StoredSnapshots handed out and alive
        self.meta = meta
        self._data = memoryview(data)
        self._size = len(data)
        # The whole data's CRC-32: computed by the caller where it costs nobody a wait (a
        # worker thread; 0.2 s at 212 MB), else in the first part's step.
        self._crc = crc
        self._part = part_chunks
        self._step_bytes = layout.snapshot_chunk_size(self._env.page_size)
        self._chunks = -(-self._size // self._step_bytes)
        self._phase = "start"
        self._old: Any = None  # the stored record (decoded) this save started from
        self._base = 0  # key of the new snapshot's first chunk
        self._written = 0  # new chunks stored so far
        self.stored: bool | None = None
        self.steps = 0  # transactions run (for tests and logs)

    def step(self) -> bool:
        """Run the next step (one transaction); True when the save is over."""
        if self.stored is not None and self._phase == "done":
            return True
        self.steps += 1
        if self._phase == "start":
            self._env.read(self._start)
            if self.stored is False:
                self._phase = "done"
                return True
            self._phase = "prune-before"
            return False
        if self._phase == "prune-before":
            if self._env.write(self._prune):
                self._phase = "parts"
            return False
        if self._phase == "parts":
            if self._crc is None:
                self._crc = zlib.crc32(self._data)  # without the interpreter lock
            self._env.write(self._put_part)
            if self.stored is False:
                self._phase = "done"
                return True
            if self._written == self._chunks:
                self._phase = "switch"
            return False
        if self._phase == "switch":
            self._detach_streams(keep=None)
            self._hand_over()
            self._env.write(self._switch)
            if self.stored is False:
                self._phase = "done"
                return True
            self._phase = "switched"
            return False
        if self._phase == "switched":
            # The runtime hands the new snapshot to the core before it runs this step (see
            # ``switched``): a stream of the old one begun in between is read into memory
            # now, while its chunks are still there, before the prune deletes them.
            self._detach_streams(keep=self._env.read(self._record))
            self._phase = "prune-after"
        if self._phase == "prune-after":
            if self._env.write(self._prune):
                self._phase = "done"
                return True
            return False
        return True

    @property
    def at_switch(self) -> bool:
        """The next step is the switch: the one that makes this snapshot the stored one."""
        return self._phase == "switch"

    @property
    def switched(self) -> bool:
        """This snapshot is the stored one; the old one's chunks are still all there (they
        are pruned by the steps after, which the caller runs once the core holds the new
        snapshot: a StoredSnapshot of the old one still reads them until then)."""
        return self._phase == "switched"

    def _hand_over(self) -> None:
        """Tell the old snapshot's StoredSnapshots which record replaces theirs, before the
        switch stores it: they read their intact chunks until the prune (``switched``)."""
        if self._old is None:
            return
        old = layout.parse_snapshot(self._old)
        assert self._crc is not None or self._chunks == 0
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
        if record is None:
            return 0, 0
        _, _, chunks, _, first = layout.parse_snapshot(record)
        return first, first + chunks

    def _start(self, txn: Txn) -> None:
        record = self._record(txn)
        if record is not None:
            old = layout.parse_snapshot(record)[0]
            if old.index >= self.meta.index:
                self.stored = False  # a newer one (e.g. from the leader) is already stored
                return
        self._old = record
        self._base = self._range(record)[1]

    def _still(self, txn: Txn) -> bool:
        if self._record(txn) != self._old:
            self.stored = False  # replaced meanwhile: give up
            return False
        return True

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

    def _put_part(self, txn: Txn) -> None:
        if not self._still(txn):
            return
        lo = self._written
        hi = min(self._chunks, lo + self._part)
        step, view, base = self._step_bytes, self._data, self._base

        def records() -> Iterator[tuple[bytes, bytes]]:
            for number in range(lo, hi):
                at = number * step
                key = base + number
                yield layout.index_key(key), layout.encode_chunk(key, view[at : at + step])

        _, added = txn.cursor(db=self._env.snap).putmulti(records(), append=True)
        if added != hi - lo:
            raise AssertionError(f"stored {added} of {hi - lo} chunks")
        self._written = hi

    def _new_record(self) -> list[Any]:
        """The record the switch stores (what ``layout.parse_snapshot`` reads back)."""
        assert self._crc is not None or self._chunks == 0
        return layout.snapshot_record(
            self.meta,
            size=self._size,
            chunks=self._chunks,
            crc=self._crc if self._crc is not None else zlib.crc32(b""),
            first=self._base,
        )

    def _switch(self, txn: Txn) -> None:
        if not self._still(txn):
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
