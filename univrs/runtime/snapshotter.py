"""Snapshots on a running node: the node's own (taken, stored, log compacted) and the leader's
(installed).

Own snapshots. Every ``threshold`` applied entries (0: never automatically), or when asked
(``take``: ``univrs cluster snapshot``), the state machine is captured at the applied index
(univrs/runtime/snapshots.py: references on the event loop, encoding in a worker thread that
waits for the loop between chunks, the apply loop goes on), stored durably, the core is told
(``snapshot_taken``, keeping ``keep`` entries behind it for slightly-behind followers) and
storage is compacted to what the core allows. One at a time, all in the snapshotter's own
task (``run``): a caller of ``take`` (an admin or backup request) only waits for the result,
so a caller cancelled meanwhile (its client gone) cannot stop a save between the stored
record's switch and the core's ``snapshot_taken``, which would leave the core holding the old
snapshot, whose chunks the next save prunes (a stream to a follower then fails). The task
is the runtime's, not shielded: a node being stopped cancels it (anything after the switch
is redone from storage at the next start), and the callers waiting are told ``Unavailable``.
The storage work goes through the storage writer's FIFO queue, so it is
ordered with appends and installs, and in bounded steps (``LogStore.snapshot_parts``), so the
appends queued meanwhile are written between them instead of after the whole save; the
snapshot's data itself goes to a file written in a worker thread, off the writer's queue
(univrs/storage/snapshot_parts.py).

Damage (docs/storage.md, "Guarantees"). The stored snapshot's readers report damage they
find to the store's ``DamageHook`` (univrs/storage/snapshot_check.py): a stream to a follower
that hit it (the core ends that stream and stops offering the snapshot instead of failing its
step) or the scrub. The snapshotter logs each damaged copy once at ERROR, tells the core
(``snapshot_damaged``: the snapshot is not offered any more) and stores a new snapshot taken
from the state machine (``_take(retake=True)``: at the applied index, which may be the damaged
one's), then hands it to the core like any other, which starts the streams that waited. Until
then nothing is compacted (only a stored snapshot compacts the log). ``_scrub`` reads the
stored snapshot whole after start and every ``ScrubPolicy.every`` seconds, a piece at a time
in a worker thread, paced to ``ScrubPolicy.rate`` bytes per second.

The leader's snapshots. ``install`` is the one place where a snapshot from the leader
(``Ready.snapshot``, complete and verified by the core) enters the runtime: it goes to the
storage writer (stored before anything later of its Ready) and then to the apply loop
(restored before any later entry). When the storage can (``LogStore.install_file``), its data
goes to a file written from that moment in a thread of its own, off the writer's queue, and
the install's item of the queue only switches the record once the file is durable
(``StorageWriter.stage``; univrs/storage/snapshot_install.py): nothing queued behind the
install waits for a transaction of the snapshot's size. A check of the snapshot's contents
before it is stored belongs in ``install``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from univrs.errors import StorageError, Unavailable
from univrs.raft.interpreter import InstallJob
from univrs.raft.messages import SnapshotMeta
from univrs.raft.node import RaftNode
from univrs.raft.ready import SnapshotInstall
from univrs.raft.snapshot import SnapshotData
from univrs.runtime.applier import Applier
from univrs.runtime.ports import LogStorage
from univrs.runtime.snapshots import capture, let_the_loop_run
from univrs.runtime.waiter import Waiter
from univrs.runtime.writer import StorageTask, StorageWriter
from univrs.storage.snapshot_check import SCRUB_PIECE, SnapshotDamaged

log = logging.getLogger("univrs.node")

# Log entries deleted per storage-writer item when the log is compacted after a snapshot.
COMPACT_STEP = 4096


class PartsSave(Protocol):
    """A snapshot being stored in steps (univrs/storage/snapshot_parts.py ``SnapshotParts``,
    from ``LogStore.snapshot_parts``): each step one transaction in the writer's thread."""

    stored: bool | None

    @property
    def at_switch(self) -> bool: ...

    @property
    def in_writer(self) -> bool: ...

    def step(self) -> bool: ...


@attrs.frozen(kw_only=True)
class ScrubPolicy:
    """How the stored snapshot is scrubbed on a running node (``every`` <= 0: never)."""

    every: float = 6 * 3600.0  # seconds between two scrubs
    first_after: float = 10.0  # seconds after start (at most ``every``)
    rate: float = 32 * 1024 * 1024  # bytes read per second, at most (a pause after each piece)
    piece: int = SCRUB_PIECE  # bytes per read (one worker-thread step)


@attrs.define(eq=False)
class Snapshotter:
    """Takes and installs snapshots (see the module docstring); ``run`` is its task."""

    storage: LogStorage
    writer: StorageWriter
    applier: Applier
    call: Callable[[Callable[[RaftNode], Any]], Awaitable[Any]]  # the driver's ``call``
    threshold: int = 0
    keep: int = 0
    # Index of the newest snapshot stored here (taken, installed, or loaded at start).
    last_index: int = 0
    # Forces the state machine's committed state to disk (``StateBackend.durable``), in the
    # storage writer's thread before the log is compacted: a persistent state is then at or
    # past the snapshot, so the log it needs to resume is never compacted away.
    durable: Callable[[], None] = lambda: None
    scrub: ScrubPolicy = ScrubPolicy()
    _due: trio.Event = attrs.field(factory=trio.Event, init=False)
    # The callers of ``take`` waiting for the next snapshot ``run`` takes (their requests are
    # served together: each gets one taken after it asked).
    _asked: list[Waiter[SnapshotMeta | None]] = attrs.field(factory=list, init=False)
    _stopped: bool = attrs.field(default=False, init=False)
    # Damage reported and not yet recovered from: (meta, which copy), oldest first; and every
    # copy ever reported (each is logged once).
    _damaged: list[tuple[SnapshotMeta, str]] = attrs.field(factory=list, init=False)
    _reported: set[str] = attrs.field(factory=set, init=False)

    def install(self, install: SnapshotInstall, job: InstallJob) -> None:
        """A snapshot from the leader: store it, then restore the state machine from it (the
        apply loop adopts it once it is stored: a persistent state is never ahead of the
        durable log, or a crash in between would leave a state the start must refuse)."""
        durable = trio.Event()
        self.writer.when_stored(job, durable.set)
        install_file = getattr(self.storage, "install_file", None)
        if install_file is not None:  # its data to a file off the writer's queue, from now
            self.writer.stage(job, install_file(job.meta, job.data))
        self.writer.submit(job)
        self.applier.enqueue_install(install, durable)

    def restored(self, meta: SnapshotMeta) -> None:
        """The apply loop restored the state machine from a leader's snapshot."""
        self.last_index = meta.index

    def maybe_snapshot(self) -> None:
        """Called after entries were applied: start a snapshot if ``threshold`` says so."""
        if self._is_due():
            self._due.set()

    def _is_due(self) -> bool:
        return self.threshold > 0 and self.applier.applied_index - self.last_index >= self.threshold

    async def run(self) -> None:
        """Take the snapshots, automatic and asked for (``take``), one at a time, and new ones
        for damaged ones (with the scrub, ``_scrub``), until cancelled (the node stops): then
        every caller still waiting is told ``Unavailable``."""
        hook = getattr(self.storage, "snapshot_damage", None)
        token = trio.lowlevel.current_trio_token()

        def heard(meta: SnapshotMeta, where: str, message: str) -> None:
            # Any thread (a scrub's worker, a read on the event loop): onto the loop.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._damage_found, meta, where, message)

        if hook is not None:
            hook.listen(heard)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._scrub)
                await self._run()
        finally:
            if hook is not None:
                hook.listen(None)

    async def _run(self) -> None:
        serving: list[Waiter[SnapshotMeta | None]] = []
        try:
            while True:
                await self._due.wait()
                self._due = trio.Event()
                while self._damaged:
                    await self._recover(*self._damaged.pop(0))
                serving, self._asked = self._asked, []
                if serving:
                    try:
                        meta = await self._take()
                    except Exception as exc:  # the callers' to handle, as if they had taken it
                        for waiter in serving:
                            waiter.fail(exc)
                    else:
                        for waiter in serving:
                            waiter.set(meta)
                    serving = []
                elif self._is_due():  # still: it may have been set while the last one was taken
                    await self._take()
        finally:
            self._stopped = True
            stopped = Unavailable("the node stopped before its snapshot was stored; retry")
            for waiter in [*serving, *self._asked]:
                waiter.fail(stopped)
            self._asked = []

    async def take(self) -> SnapshotMeta | None:
        """Snapshot the state machine at the applied index now (taken by ``run``, after any
        in progress: at an applied index at or past the one when asked), store it durably, let
        the core compact its log and compact storage to match (see the module docstring).
        Returns the newest stored snapshot's meta (None: nothing applied yet). A caller
        cancelled meanwhile leaves the snapshot to be finished; ``Unavailable`` if the node
        stops first."""
        if self._stopped:
            raise Unavailable("the node is stopping; retry")
        waiter: Waiter[SnapshotMeta | None] = Waiter()
        self._asked.append(waiter)
        self._due.set()
        return await waiter.wait()

    # ---- damage and the scrub ----------------------------------------------------------------

    def _damage_found(self, meta: SnapshotMeta, where: str, message: str) -> None:
        """A reader found the stored snapshot copy ``where`` damaged (on the event loop)."""
        if where in self._reported:
            return  # logged once; already being recovered from
        self._reported.add(where)
        log.error(
            "stored snapshot damaged: taking a new one from the state",
            extra={"index": meta.index, "term": meta.term, "where": where, "problem": message},
        )
        self._damaged.append((meta, where))
        self._due.set()

    async def _recover(self, meta: SnapshotMeta, where: str) -> None:
        """Replace the damaged copy ``where`` of the snapshot at ``meta`` (``run``'s task):
        the core stops offering it, a new snapshot is taken from the state machine and stored
        (at the applied index, possibly the damaged one's) and handed to the core, whose
        waiting streams start. A report about a copy that is no longer the stored one (a
        stream of a replaced snapshot) needs nothing more: the stream ended."""
        where_now = getattr(self.storage, "stored_snapshot_where", None)
        if where_now is not None:
            try:
                stored = await trio.to_thread.run_sync(where_now)
            except StorageError:
                stored = where  # the stored snapshot does not even open: replace it too
            if stored != where:
                return
        await self.call(lambda core: core.snapshot_damaged(meta))
        taken = await self._take(retake=True)
        log.warning(
            "snapshot retaken after damage",
            extra={
                "damaged_index": meta.index,
                "index": None if taken is None else taken.index,
                "where": where,
            },
        )

    async def _scrub(self) -> None:
        """Scrub the stored snapshot ``scrub.first_after`` seconds after start, then every
        ``scrub.every`` seconds (``ScrubPolicy``); never if ``every`` <= 0."""
        policy = self.scrub
        if policy.every <= 0 or getattr(self.storage, "snapshot_scrub", None) is None:
            return
        await trio.sleep(min(policy.first_after, policy.every))
        while True:
            await self.scrub_once()
            await trio.sleep(policy.every)

    async def scrub_once(self) -> bool | None:
        """Read the stored snapshot whole and check it (every block's CRC and the whole
        data's CRC-32): a piece of ``scrub.piece`` bytes per worker-thread step, then a pause
        that keeps the reads at ``scrub.rate`` bytes per second. True: intact; False: damaged
        (reported: the snapshotter's task logs it and takes a new one); None: nothing to
        check, or the snapshot was replaced meanwhile (the next scrub checks the new one)."""
        make = getattr(self.storage, "snapshot_scrub", None)
        if make is None:
            return None
        policy = self.scrub
        scrub = await trio.to_thread.run_sync(lambda: make(piece=policy.piece))
        if scrub is None:
            return None
        started = trio.current_time()
        try:
            while not await trio.to_thread.run_sync(scrub.step):
                if policy.rate > 0:
                    await trio.sleep(policy.piece / policy.rate)  # pacing, not synchronisation
        except SnapshotDamaged:
            return False  # reported to the store's hook by the reader: see ``_damage_found``
        except StorageError:
            return None  # no longer stored (a chunk snapshot replaced meanwhile)
        finally:
            close = getattr(scrub.source, "close", None)
            if close is not None:
                close()
        log.info(
            "snapshot scrubbed",
            extra={
                "index": scrub.meta.index,
                "bytes": scrub.read,
                "seconds": round(trio.current_time() - started, 3),
            },
        )
        return True

    # ---- taking ----------------------------------------------------------------------------

    async def _take(self, *, retake: bool = False) -> SnapshotMeta | None:
        """``take``'s work, in ``run``'s task only. ``retake``: the stored snapshot is damaged;
        take one even if nothing was applied since, replacing it at the same index."""
        storage = self.storage
        applier = self.applier
        if applier.applied_index == 0:
            return None
        if applier.applied_index <= self.last_index and not retake:
            stored: SnapshotMeta | None = await self._storage_task(storage.snapshot_meta)
            return stored  # nothing applied since the last one
        started = trio.current_time()
        meta = SnapshotMeta(
            index=applier.applied_index,
            term=applier.applied_term,
            membership=applier.view.applied_membership,
        )
        # On the loop: references only; encoding in a thread that lets the loop run
        # between its chunks (``capture``).
        encode = capture(applier.sm, pause=let_the_loop_run)
        data = await trio.to_thread.run_sync(encode)
        marks = [("encode", trio.current_time())]  # the phases' ends, for the log line

        saving = await self._save_until_switch(meta, data, retake=retake)
        marks.append(("save", trio.current_time()))
        # From the switch until the core holds the new snapshot, the core's old one must
        # stay readable (a follower may need it meanwhile): its chunks are pruned only
        # after ``snapshot_taken``. Nothing but the node's stop cancels this task (callers
        # only wait for it: ``take``), and that is not shielded: a node being stopped must
        # not wait here for a driver that is gone (its next start reads the stored record).
        kept = await self._switch(meta, data, saving, retake=retake)
        marks.append(("switch", trio.current_time()))
        if kept is None:
            newer: SnapshotMeta | None = await self._storage_task(storage.snapshot_meta)
            return newer
        keep = self.keep
        upto: int = await self.call(lambda core: core.snapshot_taken(meta, kept, keep=keep))
        if saving is not None:
            while not await self._step(saving):
                pass  # the old snapshot's file or chunks deleted, in bounded steps
        marks.append(("prune", trio.current_time()))
        if upto > 0:
            # The state forced to disk off the writer's queue (an fsync of the state env:
            # the log's appends need not wait for it), then the log compacted in order.
            await trio.to_thread.run_sync(self.durable)
            marks.append(("state_fsync", trio.current_time()))
            await self._compact(upto)
            marks.append(("compact", trio.current_time()))
        self.last_index = max(self.last_index, meta.index)
        log.info(
            "snapshot taken",
            extra={
                "index": meta.index,
                "term": meta.term,
                "bytes": len(data),
                "compacted_to": upto,
                "seconds": round(trio.current_time() - started, 3),
                # each phase's seconds (docs/state-at-scale.md, thirteenth increment)
                **{
                    f"{name}_s": round(end - begin, 3)
                    for (_, begin), (name, end) in itertools.pairwise([("", started), *marks])
                },
            },
        )
        return meta

    async def _save_until_switch(
        self, meta: SnapshotMeta, data: bytes, *, retake: bool = False
    ) -> PartsSave | None:
        """Store the new snapshot's data, up to its switch, when the storage saves in steps
        (``LogStore.snapshot_parts``): the data goes to a file in steps run off the writer's
        queue, and the few steps that write the log's environment are bounded items of it, so
        the log's appends never wait for the snapshot's bytes (in one step, a leader's writes
        waited for the whole save: 212 MB written and synced at 1,000,000 + 1,000,000
        objects; docs/state-at-scale.md, tenth and thirteenth increments). None: the storage
        saves in one step."""
        parts_of = getattr(self.storage, "snapshot_parts", None)
        if parts_of is None:
            return None
        crc = await trio.to_thread.run_sync(zlib.crc32, data)  # not in the writer's queue
        options = {"retake": True} if retake else {}  # same index as the stored one allowed
        saving: PartsSave = parts_of(meta, data, crc=crc, **options)
        while not saving.at_switch:
            if await self._step(saving):
                break  # given up: another snapshot was stored meanwhile
        return saving

    async def _step(self, saving: PartsSave) -> bool:
        """Run ``saving``'s next step: as an item of the storage writer's queue when it writes
        to the log's environment (one bounded transaction), else in a worker thread, off the
        queue (the snapshot file's pieces: the log's appends never wait for them)."""
        if saving.in_writer:
            done: bool = await self._storage_task(saving.step)
            return done
        return await trio.to_thread.run_sync(saving.step)

    async def _compact(self, upto: int) -> None:
        """The log compacted up to ``upto``: in bounded steps (``COMPACT_STEP`` entries, each
        its own item of the writer's queue) when the storage can (``LogStore.compact_some``)."""
        storage = self.storage
        compact: Any = getattr(storage, "compact_some", None)
        if compact is None:
            await self._storage_task(lambda: storage.compact(upto))
            return
        while not await self._storage_task(lambda: compact(upto, limit=COMPACT_STEP)):
            pass

    async def _switch(
        self, meta: SnapshotMeta, data: bytes, saving: PartsSave | None, *, retake: bool = False
    ) -> SnapshotData | None:
        """Make the new snapshot the stored one; what the core keeps of it (None: a newer one
        was stored meanwhile). The old one's chunks stay until ``saving``'s remaining steps."""
        storage = self.storage
        if saving is None:

            def save() -> SnapshotData | None:
                current = storage.snapshot_meta()
                same = current is not None and (current.index, current.term) == (
                    meta.index,
                    meta.term,
                )
                if current is not None and current.index >= meta.index and not (retake and same):
                    return None  # a newer one (e.g. from the leader) is already stored
                storage.save_snapshot(meta, data)
                stored = _stored(storage, meta)
                return data if stored is None else stored

            saved: SnapshotData | None = await self._storage_task(save)
            return saved
        if saving.at_switch:
            await self._step(saving)
        if not saving.stored:
            return None  # another snapshot (the leader's, or a newer one) was stored meanwhile
        stored = await self._storage_task(lambda: _stored(storage, meta))
        return data if stored is None else stored

    async def _storage_task(self, fn: Callable[[], Any]) -> Any:
        waiter: Waiter[Any] = Waiter()
        self.writer.submit(StorageTask(fn=fn, waiter=waiter))
        return await waiter.wait()


def _stored(storage: LogStorage, meta: SnapshotMeta) -> SnapshotData | None:
    """The snapshot just stored at ``meta``, read on demand from storage when it can be
    (``LogStore.stored_snapshot``): what the core keeps to stream to followers, instead of
    the encoded bytes (212 MB at 1,000,000 + 1,000,000 objects, for the node's life)."""
    stored_snapshot = getattr(storage, "stored_snapshot", None)
    if stored_snapshot is None:
        return None
    try:
        stored: SnapshotData | None = stored_snapshot()
    except StorageError as exc:
        # The record names the new snapshot already: the core must hold it now, or the next
        # save prunes the old one the core would keep (a stream to a follower then fails, "no
        # longer stored"). Its bytes are at hand (found by the session-12 review: the error
        # went to ``take``'s caller and the core kept the old snapshot).
        log.warning(
            "snapshot stored, not read back: the core keeps its bytes",
            extra={"index": meta.index, "error": str(exc)},
        )
        return None
    if stored is None or getattr(stored, "meta", None) != meta:
        return None
    return stored
