"""The driver: the one task that owns the Raft core, and the apply loop it feeds.

Theory of operation. Every input to the core arrives as an event on one bounded memory channel:
Raft messages from the transport (put there by the transport's reader tasks), ticks (the driver's
own deadline), proposals and read requests from the API, ``persisted`` reports from the storage
writer and ``applied`` reports from the apply loop. The driver drains whatever is queued, feeds
it to the core (all proposals that arrived together become one ``propose_many``, so one log
append and one fsync), then takes the core's Ready and hands it to the one interpreter of its
contract (univrs/raft/interpreter.py ``execute``, shared with the simulator), which calls the
driver's effects in the contract's order:

* persist parts + ``messages_after_persist``  -> the storage writer (group commit, then sends);
* a snapshot from the leader                  -> the writer (install) and the apply loop;
* ``messages``                                -> the transport, at once;
* ``committed``                               -> the apply loop (in order);
* ``reads`` / ``dropped_reads``               -> the waiting readers.

Ticks come from a ticker task as events too, so the driver waits on its channel with no
deadline of its own (a cancel scope per loop iteration cost more than the ticks).

``status()`` is rebuilt lazily: the core's full status (with every peer's progress) is built
once per driver step only if somebody asks for it. The driver itself rebuilds it, and fires
``wait_changed``, only after a step that can change what it watches: role, leader and term
come with a Ready's soft state, term and commit with its hard state, the membership with
its entries, truncation or snapshot, ``applied`` with an ``_Applied`` report; a ``call`` may
do anything.

Nothing but the driver calls the core. The apply loop applies committed entries to the state
machine, hands each entry's change events to the watch history (``watch_hub``,
univrs/runtime/watch.py; a snapshot install resets it), resolves the proposals waiting on them
and reports ``applied`` back.

Proposal outcomes. A proposal's waiter ends in exactly one of these ways, and only the first
two say that nothing applied (the API retries those; docs/api.md, "Write outcomes"):

* ``NotLeader`` / ``ProposalDropped`` before its entry is appended (``propose`` on a follower,
  the core refusing ``propose_many``, a leadership change while it waited in the batch);
* ``ProposalDropped`` when the committed entry at its index has another term: its own entry
  was replaced and can never commit (State Machine Safety);
* the response, when its own entry (same index and term) applies;
* ``OutcomeUnknown`` when a snapshot installed from the leader covers its index: the snapshot
  says nothing about which entry sat there, so it may have applied. Never retried blindly.

A proposal whose node lost leadership stays pending: its entry may still be committed by the
next leader, and the apply (or a snapshot) decides. Its caller's deadline bounds the wait.

ReadIndex request ids (the ``ctx`` handed to the core) start at a random 62-bit base in each
process, so an answer to a read of a previous process of this node (late, from a peer's send
queue) never matches a read of this one.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from univrs.errors import NotLeader, OutcomeUnknown, ProposalDropped, Unavailable
from univrs.raft.interpreter import InstallJob, Persisted, PersistJob, execute, report_persisted
from univrs.raft.messages import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    Message,
    SnapshotMeta,
    decode_membership,
)
from univrs.raft.node import RaftNode
from univrs.raft.ready import Role, SnapshotInstall, SoftState, Status
from univrs.runtime.payload import decode_payload, encode_payload
from univrs.runtime.proposals import Outcome, PendingProposals
from univrs.runtime.snapshots import capture, restore
from univrs.runtime.waiter import Waiter
from univrs.runtime.watch import WatchHub
from univrs.runtime.writer import StorageTask, StorageWriter
from univrs.sm.commands import Envelope
from univrs.sm.responses import ErrorCode, Failure, Response
from univrs.sm.state import ClusterStateMachine

log = logging.getLogger("univrs.node")

EVENT_QUEUE = 4096  # bounded: a flood of peer messages back-pressures the transport
APPLY_CHUNK = 512  # entries applied between checkpoints, so the apply loop never hogs trio


@attrs.define(eq=False)
class _Propose:
    payload: bytes
    waiter: Waiter[Response]
    started: float


class _Tick:
    """The ticker's event: one tick of the core's logical clock."""


_TICK = _Tick()


@attrs.frozen
class _Read:
    waiter: Waiter[int]


@attrs.frozen
class _Applied:
    index: int


@attrs.frozen
class _Call:
    """Run ``fn(core)`` on the driver (campaign, transfer, membership) and report the result."""

    fn: Callable[[RaftNode], Any]
    waiter: Waiter[Any]


@attrs.define(eq=False)
class RaftRuntime:
    """Drives one RaftNode: see the module docstring. Start it with ``run`` in a nursery."""

    core: RaftNode
    sm: ClusterStateMachine
    writer_write: Callable[..., None]  # LogStore.append
    send: Callable[[Message], None]  # transport.send
    tick_seconds: float
    # Called with the peers to keep links to whenever they change: every member of the newest
    # (appended) configuration and of the applied one. A removed member stays reachable until
    # its removal is applied here, so it can still hear the acks that let it commit the change.
    on_membership: Callable[[dict[str, str]], None] = lambda _peers: None
    metrics: Any = None  # univrs.runtime.metrics.NodeMetrics, optional
    write_in_thread: bool = True  # False only with in-memory storage (tests)
    # Snapshots: the LogStore (save_snapshot, compact); a snapshot is taken every
    # ``snapshot_threshold`` applied entries (0: never automatically), keeping
    # ``snapshot_keep`` entries of log behind it for slightly-behind followers.
    storage: Any = None
    snapshot_threshold: int = 0
    snapshot_keep: int = 0
    applied_membership: Membership = Membership(voters=frozenset())
    # The recent change events of the applied state, for watches (fed by _apply_one only).
    watch_hub: WatchHub = attrs.field(factory=WatchHub)
    last_snapshot_index: int = 0
    _events_send: trio.MemorySendChannel[object] = attrs.field(init=False)
    _events_recv: trio.MemoryReceiveChannel[object] = attrs.field(init=False)
    _writer: StorageWriter = attrs.field(init=False)
    _batch: list[_Propose] = attrs.field(factory=list, init=False)
    # Appended proposals by index (univrs/runtime/proposals.py: the outcome rules, which the
    # simulator runs too).
    _pending: PendingProposals[_Propose] = attrs.field(factory=PendingProposals, init=False)
    _reads: dict[int, Waiter[int]] = attrs.field(factory=dict, init=False)
    # Unique across restarts: a random base per process (see the module docstring).
    _next_ctx: int = attrs.field(factory=lambda: 1 + secrets.randbits(62), init=False)
    _apply_queue: collections.deque[tuple[Entry, ...] | SnapshotInstall] = attrs.field(
        factory=collections.deque, init=False
    )
    _applied_term: int = attrs.field(default=0, init=False)
    _snapshotting: bool = attrs.field(default=False, init=False)
    _snapshot_lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    # Index -> term of the CONFIG entries applied lately (membership changes check theirs).
    config_terms: dict[int, int] = attrs.field(factory=dict, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    # Peer id -> trio time we last received a message from it (for `cluster members`).
    last_contact: dict[str, float] = attrs.field(factory=dict, init=False)
    _apply_wakeup: trio.Event = attrs.field(factory=trio.Event, init=False)
    _soft: SoftState | None = attrs.field(default=None, init=False)
    _peers: dict[str, str] | None = attrs.field(default=None, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _status: Status = attrs.field(init=False)
    # _status is out of date (a step changed something it does not watch; see the docstring).
    _status_stale: bool = attrs.field(default=False, init=False)
    # The current step handled an event that may change the watched fields (applied, a call).
    _step_dirty: bool = attrs.field(default=False, init=False)
    applied_index: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._events_send, self._events_recv = trio.open_memory_channel[object](EVENT_QUEUE)
        self._writer = StorageWriter(
            write=self.writer_write,
            send=lambda msg: self.send(msg),  # late-bound: the transport is attached after
            on_persisted=self._on_persisted,
            observe_fsync=self._observe_fsync,
            in_thread=self.write_in_thread,
            install=lambda meta, data: self.storage.save_snapshot(meta, data),
        )
        self._status = self.core.status()
        self.applied_index = self._status.applied
        self._applied_term = self.sm.last_applied_term
        self.watch_hub.reset(self.sm.last_applied_index)

    # ------------------------------------------------------------------ public API

    @property
    def inbox(self) -> trio.MemorySendChannel[object]:
        """Where the transport delivers received Raft messages."""
        return self._events_send

    def status(self) -> Status:
        """The core's status as of the last driver step (safe from any task; built at most
        once per step)."""
        if self._status_stale:
            self._status = self.core.status()
            self._status_stale = False
        return self._status

    @property
    def node_id(self) -> str:
        return self.core.id

    @property
    def storage_writes(self) -> int:
        """Synced storage transactions so far (one per group commit)."""
        return self._writer.writes

    async def propose(self, envelope: Envelope) -> Response:
        """Propose a command on this node (it must lead); wait until it is applied here.

        Raises NotLeader (with a hint) on a follower, ProposalDropped when the command was
        refused before it was appended or its entry was replaced by another leader's (either
        way it did not apply; retrying is safe), and OutcomeUnknown when a snapshot covered its
        entry (it may have applied: retry only with an idempotency key). Callers put a
        deadline around it: an entry may also stay uncommitted without a quorum, or after this
        node lost its leadership (the outcome is then unknown too).
        """
        if self._status.role is not Role.LEADER:
            raise NotLeader(self._status.leader)
        waiter: Waiter[Response] = Waiter()
        payload = encode_payload(envelope, int(time.time() * 1000))
        await self._events_send.send(_Propose(payload, waiter, trio.current_time()))
        try:
            return await waiter.wait()
        finally:
            # Abandoned (deadline or cancellation): a proposal not yet handed to the core is
            # skipped; one already in the log may still commit, and nobody waits for it.
            waiter.fail(OutcomeUnknown("abandoned by its caller"))

    async def read_index(self) -> int:
        """Confirm a linearizable read point (ReadIndex); returns once applied >= it here."""
        waiter: Waiter[int] = Waiter()
        await self._events_send.send(_Read(waiter))
        return await waiter.wait()

    async def call(self, fn: Callable[[RaftNode], Any]) -> Any:
        """Run ``fn(core)`` on the driver task (for campaign, transfer_leader, membership)."""
        waiter: Waiter[Any] = Waiter()
        await self._events_send.send(_Call(fn, waiter))
        return await waiter.wait()

    async def wait_changed(self) -> None:
        """Wait until the status next changes (role, leader, term, commit or applied)."""
        await self._changed.wait()

    # ------------------------------------------------------------------ tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the driver, the storage writer and the apply loop until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._writer.run)
            nursery.start_soon(self._apply_loop)
            nursery.start_soon(self._drive)
            nursery.start_soon(self._ticker)
            task_status.started()

    async def _ticker(self) -> None:
        next_tick = trio.current_time() + self.tick_seconds
        while True:
            await trio.sleep_until(next_tick)
            await self._events_send.send(_TICK)
            now = trio.current_time()
            next_tick += self.tick_seconds
            if next_tick <= now:  # we stalled: do not fire a burst of catch-up ticks
                next_tick = now + self.tick_seconds

    async def _drive(self) -> None:
        recv = self._events_recv
        self._step_dirty = True
        self._process_ready()  # the start-up Ready (committed entries to replay, etc.)
        while True:
            self._handle(await recv.receive())
            while True:
                try:
                    ev = recv.receive_nowait()
                except trio.WouldBlock:
                    break
                self._handle(ev)
            self._flush_proposals()
            self._process_ready()

    def _handle(self, ev: object) -> None:
        if isinstance(ev, Message):
            self.last_contact[ev.src] = trio.current_time()
            self.core.step(ev)
        elif isinstance(ev, _Propose):
            self._batch.append(ev)
        elif isinstance(ev, Persisted):
            report_persisted(self.core, ev)
        elif ev is _TICK:
            self.core.tick()
        elif isinstance(ev, _Applied):
            self._step_dirty = True
            self.core.applied(ev.index)
        elif isinstance(ev, _Read):
            ctx = self._next_ctx
            self._next_ctx += 1
            self._reads[ctx] = ev.waiter
            self.core.read_index(ctx)
        elif isinstance(ev, _Call):
            self._step_dirty = True
            try:
                ev.waiter.set(ev.fn(self.core))
            except AssertionError:
                raise  # a bug in the core: the node must stop, not carry on
            except Exception as exc:  # reported to the caller, e.g. NotLeader
                ev.waiter.fail(exc)
        else:
            raise AssertionError(f"unknown driver event {ev!r}")

    def _flush_proposals(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        live = [p for p in batch if not p.waiter.done]
        if not live:
            return
        try:
            term, first = self.core.propose_many([p.payload for p in live])
        except (NotLeader, ProposalDropped) as exc:
            for p in live:
                p.waiter.fail(exc)
            return
        self._pending.appended(term, first, live)
        if self.metrics is not None:
            self.metrics.proposals.inc(len(live))

    def _process_ready(self) -> None:
        if self.core.has_ready():
            rd = self.core.ready()
            config_changed = rd.snapshot is not None or any(
                e.kind is EntryKind.CONFIG for e in rd.entries
            )
            if (
                config_changed
                or rd.soft_state is not None
                or rd.hard_state is not None
                or rd.truncate_from is not None
            ):
                self._step_dirty = True
            if rd.hard_state is not None and rd.hard_state.term != self._status.term:
                log.info("term changed", extra={"term": rd.hard_state.term})
            if config_changed:
                # Tell the transport the new members' addresses before this Ready's messages
                # go out: the leader's first append to a member just added must not be
                # dropped for want of its address (it would wait for the next heartbeat).
                self._refresh_status()
            execute(rd, self)
        if self._step_dirty:
            self._step_dirty = False
            self._refresh_status()
        else:
            self._status_stale = True  # e.g. last index, persisted, peers' progress

    # ---------------------------------------------- the Ready's effects (interpreter.execute)

    def soft_state_changed(self, soft: SoftState) -> None:
        old = self._soft
        self._soft = soft
        if old is None or old.role != soft.role:
            log.info(
                "role changed",
                extra={"role": soft.role.value, "term": soft.term, "leader": soft.leader},
            )
            if self.metrics is not None and soft.role is Role.CANDIDATE:
                self.metrics.elections.inc()
            if old is not None and old.role is Role.LEADER:
                self._fail_batch(NotLeader(soft.leader))
        if old is None or old.leader != soft.leader:
            log.info("leader changed", extra={"leader": soft.leader, "term": soft.term})
            if self.metrics is not None and soft.leader is not None:
                self.metrics.leader_changes.inc()

    def restore_snapshot(self, install: SnapshotInstall, job: InstallJob) -> None:
        # Stored before anything else of this Ready, restored before later entries apply.
        self._writer.submit(job)
        self._apply_queue.append(install)
        self._apply_wakeup.set()

    def submit_write(self, job: PersistJob) -> None:
        self._writer.submit(job)

    def apply_committed(self, entries: tuple[Entry, ...]) -> None:
        self._apply_queue.append(entries)
        self._apply_wakeup.set()

    def read_ready(self, ctx: int, index: int) -> None:
        read = self._reads.pop(ctx, None)
        if read is not None:
            read.set(index)

    def read_dropped(self, ctx: int) -> None:
        read = self._reads.pop(ctx, None)
        if read is not None:
            read.fail(Unavailable("the read could not be confirmed by a leader; retry"))

    def _refresh_status(self) -> None:
        status = self.core.status()
        old = self._status
        self._status = status
        self._status_stale = False
        peers = {**dict(self.applied_membership.addresses), **dict(status.membership.addresses)}
        if peers != self._peers:
            self._peers = peers
            self.on_membership(peers)
        if (
            status.role != old.role
            or status.leader != old.leader
            or status.term != old.term
            or status.commit != old.commit
            or status.applied != old.applied
        ):
            self._changed.set()
            self._changed = trio.Event()

    def _fail_batch(self, exc: Exception) -> None:
        for p in self._batch:
            p.waiter.fail(exc)
        self._batch.clear()

    async def _on_persisted(self, index: int, term: int, hard_state: HardState | None) -> None:
        # The writer and the apply loop may wait here when the channel is full: the driver
        # never waits on them, so it keeps draining and they get through.
        await self._events_send.send(Persisted(index=index, term=term, hard_state=hard_state))

    def _observe_fsync(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.fsync_seconds.observe(seconds)

    async def _apply_loop(self) -> None:
        while True:
            await self._apply_wakeup.wait()
            self._apply_wakeup = trio.Event()
            while self._apply_queue:
                item = self._apply_queue.popleft()
                if isinstance(item, SnapshotInstall):
                    await self._restore(item)
                    continue
                entries = [e for e in item if e.index > self.applied_index]
                for start in range(0, len(entries), APPLY_CHUNK):
                    for entry in entries[start : start + APPLY_CHUNK]:
                        self._apply_one(entry)
                    await self._events_send.send(_Applied(self.applied_index))
                self._maybe_snapshot()

    async def _restore(self, install: SnapshotInstall) -> None:
        meta = install.meta
        started = trio.current_time()
        self.sm = await trio.to_thread.run_sync(restore, install.data)
        self.watch_hub.reset(meta.index)  # what happened between is unknown here: compacted
        self.applied_index, self._applied_term = meta.index, meta.term
        self.applied_membership = meta.membership
        self.last_snapshot_index = meta.index
        covered = self._pending.covered(meta.index)
        if covered:
            # The snapshot does not say which entry sat at their indexes: ours may have
            # applied (the rule is PendingProposals.covered_outcome: unknown).
            outcome = self._pending.covered_outcome()
            what = f"proposals up to {meta.index} were covered by a snapshot from the leader"
            for p in covered:  # one exception each: they are raised in different tasks
                p.waiter.fail(_outcome_error(outcome, what))
        log.info(
            "snapshot installed",
            extra={
                "index": meta.index,
                "term": meta.term,
                "bytes": len(install.data),
                "seconds": round(trio.current_time() - started, 3),
            },
        )
        await self._events_send.send(_Applied(meta.index))

    def _maybe_snapshot(self) -> None:
        if (
            self.snapshot_threshold > 0
            and not self._snapshotting
            and self.storage is not None
            and self._nursery is not None
            and self.applied_index - self.last_snapshot_index >= self.snapshot_threshold
        ):
            self._snapshotting = True
            self._nursery.start_soon(self._snapshot_task)

    async def _snapshot_task(self) -> None:
        try:
            await self.take_snapshot()
        finally:
            self._snapshotting = False

    async def take_snapshot(self) -> SnapshotMeta | None:
        """Snapshot the state machine at the applied index now, store it durably, let the core
        compact its log (keeping ``snapshot_keep`` entries) and compact storage to match.

        One at a time (automatic and requested ones share a lock), and the storage work goes
        through the writer's queue, so it is ordered with the leader's snapshot installs and
        with appends. Returns the newest stored snapshot's meta (None: nothing applied yet)."""
        assert self.storage is not None, "no storage to keep snapshots in"
        storage = self.storage
        async with self._snapshot_lock:
            if self.applied_index == 0:
                return None
            if self.applied_index <= self.last_snapshot_index:
                stored: SnapshotMeta | None = await self._storage_task(storage.snapshot_meta)
                return stored  # nothing applied since the last one
            started = trio.current_time()
            meta = SnapshotMeta(
                index=self.applied_index,
                term=self._applied_term,
                membership=self.applied_membership,
            )
            encode = capture(self.sm)  # on the loop: references only; encoding in a thread
            data = await trio.to_thread.run_sync(encode)

            def save() -> bool:
                current = storage.snapshot_meta()
                if current is not None and current.index >= meta.index:
                    return False  # a newer one (e.g. from the leader) is already stored
                storage.save_snapshot(meta, data)
                return True

            if not await self._storage_task(save):
                newer: SnapshotMeta | None = await self._storage_task(storage.snapshot_meta)
                return newer
            keep = self.snapshot_keep
            upto: int = await self.call(lambda core: core.snapshot_taken(meta, data, keep=keep))
            if upto > 0:
                await self._storage_task(lambda: storage.compact(upto))
            self.last_snapshot_index = max(self.last_snapshot_index, meta.index)
            log.info(
                "snapshot taken",
                extra={
                    "index": meta.index,
                    "term": meta.term,
                    "bytes": len(data),
                    "compacted_to": upto,
                    "seconds": round(trio.current_time() - started, 3),
                },
            )
            return meta

    async def _storage_task(self, fn: Callable[[], Any]) -> Any:
        waiter: Waiter[Any] = Waiter()
        self._writer.submit(StorageTask(fn=fn, waiter=waiter))
        return await waiter.wait()

    def _apply_one(self, entry: Entry) -> None:
        response: Response | None = None
        if entry.kind is EntryKind.NORMAL:
            decoded = decode_payload(entry.data)
            if isinstance(decoded, str):
                self.sm.mark_applied(index=entry.index, term=entry.term)
                response = Failure(code=ErrorCode.INVALID_ARGUMENT, message=decoded)
            else:
                envelope, time_ms = decoded
                response = self.sm.apply(
                    envelope, index=entry.index, term=entry.term, time_ms=time_ms
                )
        else:
            if entry.kind is EntryKind.CONFIG:
                self.applied_membership = decode_membership(entry.data)
                self.config_terms[entry.index] = entry.term
                if len(self.config_terms) > 64:
                    del self.config_terms[min(self.config_terms)]
            self.sm.mark_applied(index=entry.index, term=entry.term)
        self.applied_index, self._applied_term = entry.index, entry.term
        self.watch_hub.applied(entry.index, self.sm.last_events(), len(entry.data))
        settled = self._pending.applied(entry.index, entry.term)
        if settled is None:
            return
        pending, outcome = settled
        if outcome is Outcome.APPLIED and response is not None:
            if self.metrics is not None:
                self.metrics.commit_seconds.observe(trio.current_time() - pending.started)
            pending.waiter.set(response)
        else:
            pending.waiter.fail(
                ProposalDropped(f"entry {entry.index} was replaced by a newer leader's entry")
            )


def _outcome_error(outcome: Outcome, what: str) -> Exception:
    """The error a proposer gets for an attempt that ended without a response."""
    if outcome is Outcome.NOT_APPLIED:
        return ProposalDropped(f"{what}; they did not apply: retrying is safe")
    return OutcomeUnknown(f"{what}; whether they applied is unknown here")
