"""A snapshot from the leader stored without holding the log's writer: its data in a file
written off the storage writer's queue, only its record switched in the log's transaction.

Why. ``LogStore.save_snapshot`` stores the leader's snapshot in ONE write transaction of
``raft.lmdb``: at 1,000,000 workloads + 1,000,000 instances, 212 MB written and synced as one
item of the follower's storage writer, and everything queued behind it (the hard state of a
new term, a vote, the appends after the snapshot and their acks) waits for all of it. The
node's own snapshot has been written to a file since the thirteenth increment of
docs/state-at-scale.md (univrs/storage/snapshot_parts.py); ``InstallFile`` does the same for
the leader's snapshot (docs/state-at-scale.md, fourteenth increment).

Theory of operation.

1. ``write_file`` (any thread, never the writer's queue; the runtime starts it as soon as the
   core hands over the snapshot, univrs/runtime/writer.py ``StorageWriter.stage``): the
   file ``raft.lmdb/snapshot-<index>-<term>-<token>.dat`` (the format of
   univrs/storage/snapshot_file.py) is written ``part_blocks`` blocks (512 KB) at a time, each
   piece written and flushed while no log commit runs (``StoreEnv.turn``: a commit waits for
   at most one piece), then the file and its directory entry are fsynced. While it is
   written its name is ``pending``: ``SnapshotFiles.collect`` (an own save's start, a
   ``save_snapshot``) leaves it alone.
2. ``switch`` (the writer's queue, where the install's item sits, so it stays ordered with the
   appends and hard states before and after it): one small transaction, the checks and the
   log rule of ``save_snapshot`` (the stored snapshot is not newer; the log is dropped if it
   conflicts with the snapshot, paper Figure 13, 6-7), then the record naming the file. No
   snapshot byte goes through a transaction of ``raft.lmdb``; the largest put is the record.
   A replaced file is unlinked (its readers keep it open). Chunks a replaced snapshot held in
   the ``snap`` database are left there: the record no longer names them, so they are
   garbage, deleted in bounded writer items by the next own snapshot's save
   (``SnapshotParts``, ``prune-before``). Streams that read the replaced chunks are handed
   over (``StoredSnapshot.superseded_by``, as a save's switch does): they read the intact
   chunks on, through later installs too, until that save reads them into memory off the
   writer's queue (its ``detach-before`` step) before it prunes. The switch reads no
   snapshot byte (before s13-small it read every streamed old chunk snapshot whole, in the
   writer's item).

Crashes. Until the switch commits, the record names the old snapshot, untouched (the install
only adds a file); after it, the file it names was synced with its directory entry before.
A file the record does not name (a crash before the switch) is deleted at the next open.

``cancel`` (the node stopping) makes ``write_file`` stop after the piece in progress.

Given up (s14-small). A file that will never be switched to (cancelled, dropped by a failed
check, superseded by another snapshot, or its write failed) is deleted at once, by whoever
gives it up or, if its write is under way, by the writing thread on its way out: before,
it stayed on disk (203 MB at 1,000,000 + 1,000,000 objects) until the next open or own
save collected files the record does not name. A file is deleted only under
``SnapshotFiles.lock`` and only if it is not switched and the record does not name it.
``claim`` (``install_file`` taking over a file written ahead) makes ``drop`` a no-op, so a
check's late drop can never stop or delete a file the install took over; ``switch`` refuses
a file that was given up (``InstallCancelled``), so a record never names a deleted file.

Written ahead of the install (``LogStore.prewrite_install``). The follower checks a received
snapshot before the core installs it (univrs/runtime/snapshots.py ``SnapshotChecker.
precheck``, in a worker thread: at 1,000,000 + 1,000,000 objects the staging of the state,
tens of seconds). The file is begun in a thread of its own at the start of the check
(``start``), so it is written while the check runs; the install of that very data then finds
it written or being written (``LogStore.install_file``). A snapshot that fails the check, or
that another one replaces before it is installed, is dropped (``drop``: deleted at once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import zlib
from typing import TYPE_CHECKING, Any

from univrs.errors import StorageError
from univrs.raft.messages import SnapshotMeta
from univrs.storage import layout
from univrs.storage.snapshot_file import PART_BLOCKS, FileWriter, SnapshotFiles, named_file

if TYPE_CHECKING:
    import weakref

    from univrs.storage.env import StoreEnv, Txn
    from univrs.storage.stored_snapshot import StoredSnapshot


log = logging.getLogger(__name__)


def _require(cond: bool, message: str) -> None:
    # A caller bug (as ``log_snapshot._require``): crash, never persist it; kept under -O.
    if not cond:
        raise AssertionError(message)


class InstallCancelled(Exception):
    """``write_file`` stopped by ``cancel`` before the file was whole."""


class Prewritten:
    """The store's one slot for a leader's snapshot whose file is written while it is
    checked (``LogStore.prewrite_install``)."""

    __slots__ = ("file",)

    def __init__(self) -> None:
        self.file: InstallFile | None = None


class InstallFile:
    """One snapshot from the leader being stored (see the module docstring): ``write_file``
    off the writer's queue, then ``switch`` as the install's item of the writer's queue."""

    def __init__(
        self,
        env: StoreEnv,
        live: weakref.WeakSet[StoredSnapshot],
        files: SnapshotFiles,
        meta: SnapshotMeta,
        data: bytes,
        *,
        part_blocks: int = PART_BLOCKS,
    ) -> None:
        _require(meta.index >= 1 and meta.term >= 1, f"snapshot at ({meta.index}, {meta.term})")
        if part_blocks < 1:
            raise ValueError(f"part_blocks must be >= 1, got {part_blocks}")
        self._env = env
        self._live = live
        self._files = files
        self.meta = meta
        self._data = data
        self._size = len(data)
        self._crc: int | None = None
        self.name = layout.snapshot_file_name(meta, secrets.token_hex(4))
        self._file = FileWriter(files, self.name, data, part_blocks, env.turn)
        self._cancelled = threading.Event()
        self._starting = threading.Lock()
        # Guards ``_claimed`` and ``_given_up``: ``drop`` never gives up a claimed file.
        self._state = threading.Lock()
        self._claimed = False  # taken over by ``install_file``: ``drop`` leaves it alone
        self._given_up = False  # never to be switched to: its file is deleted
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.written = False  # the file is whole and durable
        self.switched = False

    @property
    def data(self) -> bytes:
        return self._data

    @property
    def pieces(self) -> int:
        return self._file.pieces

    @property
    def given_up(self) -> bool:
        return self._given_up

    def cancel(self) -> None:
        """Stop ``write_file`` after the piece in progress and give the file up (the node is
        stopping: its writer cancels the installs it has not switched); the file is deleted
        (see the module docstring), unless it was switched to already."""
        with self._state:
            self._given_up = True
        self._give_up()

    def claim(self) -> bool:
        """Take the file over for its install (``LogStore.install_file``); False if it was
        given up already (then the install writes a file of its own)."""
        with self._state:
            if self._given_up:
                return False
            self._claimed = True
            return True

    def drop(self) -> bool:
        """Give the file up unless ``install_file`` took it over (a failed check, a newer
        snapshot written ahead, the store closing); True if it was given up."""
        with self._state:
            if self._claimed:
                return False
            self._given_up = True
        self._give_up()
        return True

    def _give_up(self) -> None:
        self._cancelled.set()
        self._remove()  # the writing thread, if any, removes it again on its way out

    def _remove(self) -> None:
        """Delete the file if it is given up, not switched and not named by the record
        (under the lock that orders the record's changes): at once, not at the next collect.
        A failure leaves it to the next ``SnapshotFiles.collect``."""
        with self._files.lock:
            if not self._given_up or self.switched:
                return
            self._files.pending.discard(self.name)
            try:
                if self._env.read(lambda txn: named_file(self._env, txn)) == self.name:
                    return  # cannot be (switch refuses a given-up file); never delete it
                os.unlink(self._file.path)
            except FileNotFoundError:
                pass
            except (OSError, StorageError):  # a closed store, a failing disk: the next open
                log.warning("cannot remove the given-up snapshot file %s", self.name, exc_info=True)

    def start(self) -> None:
        """Begin ``_write`` in a thread of its own (``LogStore.prewrite_install``: while the
        received snapshot is being checked); ``write_file`` then waits for it. Idempotent."""
        with self._starting:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._write_in_thread, name="univrs-snapshot-prewrite", daemon=True
            )
            self._thread.start()

    def _write_in_thread(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # handed to ``write_file``
            self._error = exc

    def write_file(self) -> None:
        """Write the file and make it durable (any thread but the writer's queue; blocking),
        or wait for the thread ``start`` began. Raises ``InstallCancelled`` if ``cancel`` came
        first (the file is then garbage)."""
        with self._starting:
            thread = self._thread
        if thread is None:
            self._write()
            return
        thread.join()
        if self._error is not None:
            raise self._error

    def join(self) -> None:
        """Wait for the thread ``start`` began, if any (after ``cancel``: one piece at most)."""
        with self._starting:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _write(self) -> None:
        with self._files.lock:
            self._files.pending.add(self.name)
        try:
            self._crc = zlib.crc32(self._data)  # without the interpreter lock
            while not self._cancelled.is_set():
                if self._file.write_piece():
                    self.written = True
                    break
            else:
                raise InstallCancelled(f"install of the snapshot at {self.meta.index} cancelled")
        except BaseException:
            self.abandon()
            raise
        # Given up while its last piece was written (after that piece created the file, or
        # after the remover found none): removed here.
        self._remove()

    def abandon(self) -> None:
        """Give the file up (its write failed or was cancelled; not switched to): closed and
        deleted at once."""
        self._file.close()
        with self._state:
            self._given_up = True
        with contextlib.suppress(Exception):
            self._remove()
        with self._files.lock:
            self._files.pending.discard(self.name)

    def switch(self) -> None:
        """Make the snapshot the stored one (in the writer's queue: one small transaction);
        ``write_file`` must have finished."""
        _require(self.written, f"snapshot file {self.name} switched to before it was written")
        # No read of a replaced chunk snapshot here (a writer item: seconds at 100 MB, found
        # by s13-small): its streams are handed over first and read its chunks on, which stay
        # until an own save's prune, and that save detaches them before, off the writer's
        # queue (univrs/storage/snapshot_parts.py, ``detach-before``). Handed over before the
        # write (as a save's switch does), not inside its transaction: a stream's read may
        # hold its snapshot's lock meanwhile. Nothing else writes the record in between (this
        # is the writer's item); if the switch then fails, a successor never stored is inert.
        with self._files.lock:
            if self._given_up:  # cancelled or dropped: its file is (being) deleted
                raise InstallCancelled(f"snapshot file {self.name} was given up")
            self._hand_over(self._env.read(self._stored_record), self._record())
            self._env.write(self._switch)
            self._files.pending.discard(self.name)
            self.switched = True  # under the lock: ``_remove`` never deletes it
        self._files.collect(self._env)  # the replaced file, if any (its readers keep it open)

    def _hand_over(self, raw_old: bytes | None, new: list[Any]) -> None:
        """Tell the StoredSnapshots that read the stored record (or read an older chunk
        snapshot handed over to it by an install before) that ``new`` replaces it: they read
        their chunks on, intact until an own save prunes them (``StoredSnapshot.
        superseded_by``). Only the record is compared: nothing of theirs is read."""
        if raw_old is None:
            return
        old = layout.parse_snapshot(layout.decode_record(layout.KEY_SNAPSHOT, raw_old))
        successor = layout.parse_snapshot(new)
        for live in list(self._live):
            if live.record == old or live.successor == old:
                live.superseded_by(successor)

    def _stored_record(self, txn: Txn) -> bytes | None:
        raw = txn.get(layout.KEY_SNAPSHOT, db=self._env.meta)
        return None if raw is None else bytes(raw)

    def _record(self) -> list[Any]:
        """The record the switch stores (what ``layout.parse_snapshot`` reads back)."""
        assert self._crc is not None
        return layout.snapshot_record(
            self.meta, size=self._size, chunks=self._file.blocks, crc=self._crc, file=self.name
        )

    def _switch(self, txn: Txn) -> None:
        meta = self.meta
        raw_record = txn.get(layout.KEY_SNAPSHOT, db=self._env.meta)
        old = None
        if raw_record is not None:
            old = layout.parse_snapshot(layout.decode_record(layout.KEY_SNAPSHOT, raw_record))[0]
        _require(
            old is None or meta.index >= old.index,
            f"snapshot at {meta.index} is older than the stored one at {old.index if old else 0}",
        )
        raw = txn.get(layout.index_key(meta.index), db=self._env.log)
        same_point = old is not None and (old.index, old.term) == (meta.index, meta.term)
        if not same_point and (
            raw is None or layout.decode_entry(layout.index_key(meta.index), raw).term != meta.term
        ):
            # The log conflicts with or is older than the snapshot (as ``save_snapshot``).
            txn.drop(self._env.log, delete=False)
        record = self._record()
        txn.put(
            layout.KEY_SNAPSHOT,
            layout.encode_record(layout.KEY_SNAPSHOT, record),
            db=self._env.meta,
        )
