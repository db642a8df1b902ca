"""``RaftRuntime``, a node's runtime: its construction, its public surface and the proposal path.

A runtime is built whole at construction from what it needs (univrs/runtime/ports.py:
``LogStorage``, ``Transport``, ``Metrics``; an ``Inbox`` and a ``RuntimeView`` that a server may
make first, see below) and runs four tasks under ``run``: the driver (its step loop: step.py,
mixed in), the storage writer (writer.py), the apply loop (applier.py) and the snapshotter
(snapshotter.py).

The proposal path (``propose``, ``propose_together``, ``read_index``, ``call``) runs on the
callers' tasks: it checks the role as of the last step, encodes the commands' payloads and
puts one event on the inbox; the step loop (step.py, whose docstring holds the theory of
operation) batches the proposals, steps the core and settles the waiters. Nothing but the
driver calls the core.

Proposal outcomes. A proposal's waiter ends in exactly one of these ways, and only the first
two say that nothing applied (the API retries those; docs/api.md, "Write outcomes"):

* ``NotLeader`` / ``ProposalDropped`` before its entry is appended (``propose`` on a follower,
  the core refusing ``propose_many``, a leadership change while it waited in the open batch);
* ``ProposalDropped`` when the committed entry at its index has another term (applier.py);
* the response, when its own entry (same index and term) applies;
* ``OutcomeUnknown`` when a snapshot installed from the leader covers its index.

A proposal whose node lost leadership stays pending: its entry may still be committed by the
next leader, and the apply (or a snapshot) decides. Its caller's deadline bounds the wait.

ReadIndex request ids (the ``ctx`` handed to the core) start at a random 62-bit base in each
process, so an answer to a read of a previous process of this node (late, from a peer's send
queue) never matches a read of this one.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from univrs.errors import NotLeader, OutcomeUnknown
from univrs.raft.interpreter import Persisted
from univrs.raft.messages import Message, SnapshotMeta
from univrs.raft.node import RaftNode
from univrs.raft.ready import Role, SoftState, Status
from univrs.runtime.applier import Applier
from univrs.runtime.batching import DEFAULT_MAX_GATHER, DEFAULT_PROPOSAL_DEPTH, ProposalBatches
from univrs.runtime.capabilities import (
    Announced,
    BatchGate,
    LeaseGate,
    OwnerGate,
    lease_hold_ms,
    no_announcements,
)
from univrs.runtime.checking import SnapshotChecks
from univrs.runtime.events import Call, Inbox, Propose, ProposeMany, Read
from univrs.runtime.packing import Packing
from univrs.runtime.payload import MAX_PAYLOAD_VERSION, encode_payload_doc
from univrs.runtime.ports import (
    MEMORY_STATE,
    NO_METRICS,
    LogStorage,
    Metrics,
    StateBackend,
    Transport,
)
from univrs.runtime.snapshotter import ScrubPolicy, Snapshotter
from univrs.runtime.stamps import LogClock
from univrs.runtime.step import StepLoop
from univrs.runtime.ticks import LeaseClock, run_ticker
from univrs.runtime.view import RuntimeView
from univrs.runtime.waiter import Waiter
from univrs.runtime.watch import WatchHub
from univrs.runtime.writer import StorageWriter
from univrs.sm.commands import Envelope
from univrs.sm.responses import Response
from univrs.sm.state import ClusterStateMachine

__all__ = ["DEFAULT_PROPOSAL_DEPTH", "RaftRuntime", "RuntimeStatistics"]


def _no_peers(_peers: dict[str, str]) -> None:
    pass


@attrs.frozen(kw_only=True)
class RuntimeStatistics:
    """Counters of a runtime since it started."""

    storage_writes: int  # synced storage transactions (one per group commit)
    proposals: int  # proposals appended to the log
    proposal_batches: int  # propose_many calls (log appends of proposals)


@attrs.define(eq=False)
class RaftRuntime(StepLoop):
    """Drives one RaftNode: see the module docstring (and step.py's for the step loop).
    Start it with ``run`` in a nursery.

    Everything it talks to is given here and never replaced. ``view`` and ``inbox`` may be
    made first (a server hands the view to the transport, the peer map and the metrics, and
    the inbox's sender to the transport, before it builds the runtime); by default the
    runtime makes its own."""

    core: RaftNode
    # The state machine to start from (restored from ``last_snapshot_index``'s snapshot, or
    # empty); the apply loop owns it from then on (``sm``). Dropped once handed over, so an
    # installed snapshot's predecessor is not kept alive.
    _initial_sm: ClusterStateMachine | None = attrs.field(alias="sm", repr=False)
    storage: LogStorage
    transport: Transport
    tick_seconds: float
    # Called with the peers to keep links to whenever they change: every member of the newest
    # (appended) configuration and of the applied one. A removed member stays reachable until
    # its removal is applied here, so it can still hear the acks that let it commit the change.
    on_membership: Callable[[dict[str, str]], None] = _no_peers
    metrics: Metrics = NO_METRICS
    write_in_thread: bool = True  # False only with in-memory storage (tests)
    # Storage writes of entries up to this many bytes run on the loop, not the writer's
    # thread (0: never; univrs/runtime/writer.py, "Small writes on the loop").
    write_inline_bytes: int = 0
    # A snapshot is taken every ``snapshot_threshold`` applied entries (0: never
    # automatically), keeping ``snapshot_keep`` entries of log behind it for slightly-behind
    # followers; ``last_snapshot_index``: the snapshot the state machine was restored from.
    snapshot_threshold: int = 0
    snapshot_keep: int = 0
    _restored_index: int = attrs.field(default=0, alias="last_snapshot_index")
    # How the stored snapshot is scrubbed for damage (snapshotter.py).
    snapshot_scrub: ScrubPolicy = ScrubPolicy()
    proposal_depth: int = DEFAULT_PROPOSAL_DEPTH
    # Seconds at most the open batch gathers the applied batch's proposers (0: off;
    # univrs/runtime/batching.py).
    proposal_gather: float = DEFAULT_MAX_GATHER
    # How proposals become entries: one each, or batch entries (univrs/runtime/packing.py).
    packing: Packing = attrs.field(factory=Packing)
    # The payload versions the peers announced in their hellos (univrs/runtime/
    # capabilities.py): batch entries are packed only while every member announced 2.
    payload_versions: Callable[[], Announced] = no_announcements
    # The newest entry payload version this node applies (lower only in tests, to play a node
    # of older code; its transport then announces the same).
    max_payload_version: int = MAX_PAYLOAD_VERSION
    # The vote holds the peers announced in their hellos (capabilities.py ``lease_gate``): a
    # lease read is confirmed by the lease only while every member's is long enough. None:
    # not checked (in-process test clusters of one configuration).
    lease_holds: Callable[[], Announced] | None = None
    view: RuntimeView = attrs.field(
        default=attrs.Factory(lambda self: RuntimeView(self.core), takes_self=True)
    )
    inbox: Inbox = attrs.field(factory=Inbox)
    # The recent change events of the applied state, for watches (fed by the apply loop).
    watch_hub: WatchHub = attrs.field(factory=WatchHub)
    # Where the state machine lives (in memory, or persisted: docs/state-at-scale.md).
    state_backend: StateBackend = MEMORY_STATE
    _writer: StorageWriter = attrs.field(init=False)
    _applier: Applier = attrs.field(init=False)
    _snapshots: Snapshotter = attrs.field(init=False)
    # The open batch and the batches in flight (batching.py).
    _batches: ProposalBatches = attrs.field(init=False)
    _reads: dict[int, Waiter[int]] = attrs.field(factory=dict, init=False)
    # Unique across restarts: a random base per process (see the module docstring).
    _next_ctx: int = attrs.field(factory=lambda: 1 + secrets.randbits(62), init=False)
    # Peer id -> trio time we last received a message from it (for `cluster members`).
    _last_contact: dict[str, float] = attrs.field(factory=dict, init=False)
    _soft: SoftState | None = attrs.field(default=None, init=False)
    _peers: dict[str, str] | None = attrs.field(default=None, init=False)
    # The current step handled an event that may change the watched fields (applied, a call).
    _step_dirty: bool = attrs.field(default=False, init=False)
    # The current step moved the commit or the applied index and changed nothing that
    # ``wait_changed`` watches (step.py ``_take_ready``, ``_handle``, ``_finish_step``).
    _moved: bool = attrs.field(default=False, init=False)
    _clock: LeaseClock = attrs.field(init=False)  # read leases on: ticks by trio's clock
    # Reports of the storage writer not yet given to the core (oldest first), and whether a
    # ``WAKE`` (inline_steps.py) for them is in the inbox (see ``_on_persisted``).
    _persisted: collections.deque[Persisted] = attrs.field(factory=collections.deque, init=False)
    _wake_sent: bool = attrs.field(default=False, init=False)
    # The apply loop's last report, left for the driver's next step (``_applied_later``).
    _applied_later_index: int = attrs.field(default=0, init=False)
    # May a transport reader step an append, its answer or a heartbeat itself while the
    # driver waits idle (step.py ``_step_now``; False: every message goes through the
    # driver's task)?
    reader_steps: bool = True
    # The driver waits idle in its plain ``receive`` (what ``_step_now`` requires), or in the
    # open batch's gather (``_gathering``; inline_steps.py ``hold_proposals`` takes either).
    _parked: bool = attrs.field(default=False, init=False)
    _gathering: bool = attrs.field(default=False, init=False)
    # The proposals a client frame handed over while it holds them (``hold_proposals``).
    _held: list[ProposeMany] | None = attrs.field(default=None, init=False)
    # A step a reader ran raised: the driver raises it (the node stops).
    _reader_failure: BaseException | None = attrs.field(default=None, init=False)
    _may_pack: BatchGate = attrs.field(init=False)
    # May an envelope carry its caller's identity (payload version 3, s14-owner)? Asked by
    # the driver before it appends proposals that carry one (batching.py ``flush``).
    _may_own: OwnerGate = attrs.field(init=False)
    # The time stamped into this node's entries (stamps.py); made at the first use.
    _stamps: LogClock | None = attrs.field(default=None, init=False)
    _may_lease: LeaseGate = attrs.field(init=False)
    # The index an ``apply_committed`` of this Ready applied on the step (0: none).
    _applied_on_step: int = attrs.field(default=0, init=False)
    # A Ready's messages while ``execute`` runs, sent together (effects.py ``_send_out``).
    _outgoing: list[Message] | None = attrs.field(default=None, init=False)
    # The leader's snapshot checked while the core steps on (checking.py, s12-gate).
    _checks: SnapshotChecks = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        assert self.view.core is self.core, "the view must show this runtime's core"
        self._batches = ProposalBatches(
            depth=self.proposal_depth,
            max_gather=self.proposal_gather,
            packing=self.packing,
            metrics=self.metrics,
        )
        # The core's newest configuration, not the view's: a configuration appended in this
        # step (a member being added) must count before the entries that follow it.
        self._may_pack = BatchGate(
            own_id=self.core.id,
            enabled=self.packing.enabled,
            max_payload_version=self.max_payload_version,
            configurations=lambda: (self.core.status().membership, self.applied_membership),
            announced=self.payload_versions,
        )
        self._may_own = OwnerGate(
            own_id=self.core.id,
            max_payload_version=self.max_payload_version,
            configurations=lambda: (self.core.status().membership, self.applied_membership),
            announced=self.payload_versions,
        )
        self._may_lease = LeaseGate(
            own_id=self.core.id,
            need_ms=lease_hold_ms(self.core.config, round(self.tick_seconds * 1000)),
            configurations=lambda: (self.core.status().membership, self.applied_membership),
            holds=self.lease_holds,
        )
        self._clock = LeaseClock(self.tick_seconds)
        self._checks = SnapshotChecks(self.inbox.sender)
        # Which messages the transport may leave for the driver's next step, or step itself
        # while the driver waits idle (step.py).
        self.inbox.may_leave = self._may_leave
        self.inbox.step_now = self._step_now
        sm, self._initial_sm = self._initial_sm, None
        assert sm is not None, "a runtime starts from a state machine"
        transport = self.transport
        self._writer = StorageWriter(
            write=self.storage.append,
            send=transport.send,
            send_now=transport.send_now,
            on_persisted=self._on_persisted,
            observe_fsync=self.metrics.fsync_seconds.observe,
            in_thread=self.write_in_thread,
            inline_bytes=self.write_inline_bytes,
            # An LMDB log store's append that refuses to wait for another writer (a staged
            # snapshot's piece) or a map growth: small writes run it on the loop. A storage
            # without one writes on the thread only.
            write_nowait=getattr(self.storage, "append_nowait", None),
            install=self.storage.save_snapshot,
        )
        self._applier = Applier(
            sm=sm,
            view=self.view,
            events=self.inbox.sender,
            metrics=self.metrics,
            after_apply=self._after_apply,
            on_restored=self._on_restored,
            watch_hub=self.watch_hub,
            adopt=self.state_backend.adopt,
            max_payload_version=self.max_payload_version,
            applied_later=self._applied_later,
        )
        self._snapshots = Snapshotter(
            storage=self.storage,
            writer=self._writer,
            applier=self._applier,
            call=self.call,
            threshold=self.snapshot_threshold,
            keep=self.snapshot_keep,
            last_index=self._restored_index,
            durable=self.state_backend.durable,
            scrub=self.snapshot_scrub,
        )

    # ------------------------------------------------------------------ public surface

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self.core.id

    @property
    def pending_proposals(self) -> int:
        """Proposals appended to the log here and not yet settled (applied or failed)."""
        return len(self._applier.pending)

    @property
    def sm(self) -> ClusterStateMachine:
        """The state machine as applied here so far (read it, never change it)."""
        return self._applier.sm

    @property
    def applied_index(self) -> int:
        """The index of the last entry (or snapshot) applied here."""
        return self._applier.applied_index

    @property
    def last_snapshot_index(self) -> int:
        """The index of the newest snapshot stored here (0: none)."""
        return self._snapshots.last_index

    @property
    def storage_writes(self) -> int:
        """Synced storage transactions so far (one per group commit)."""
        return self._writer.writes

    def statistics(self) -> RuntimeStatistics:
        """Counters since this runtime started."""
        return RuntimeStatistics(
            storage_writes=self._writer.writes,
            proposals=self._batches.proposals,
            proposal_batches=self._batches.batches,
        )

    def status(self) -> Status:
        """The core's status as of the last driver step (safe from any task; built at most
        once per step)."""
        return self.view.status()

    async def wait_changed(self) -> None:
        """Wait until the role, leader, term or membership (the newest or the applied one)
        next changes; commit and apply progress do not wake it (``wait_applied`` does)."""
        await self.view.wait_changed()

    async def wait_applied(self, index: int) -> None:
        """Wait until ``index`` is applied here (``applied_index >= index``); woken only by
        the apply that reaches it. Callers bound it with a deadline."""
        await self.view.wait_applied(index)

    def applied_config_term(self, index: int) -> int | None:
        """The term of the configuration entry applied at ``index`` here, if it was applied
        lately (None: not applied, long ago, or covered by a snapshot)."""
        return self._applier.config_term(index)

    def at_apply_end(self, fn: Callable[[], None]) -> bool:
        """Call ``fn`` right after the entries being applied on the driver's step now are
        applied, in that same step; False when none are (``Applier.at_end``).
        For a proposer's waiter callback (a fast-protocol connection answering its writes
        without waking its writer: univrs/api/fast.py). ``fn`` must not raise."""
        return self._applier.at_end(fn)

    def last_contact(self, peer: str) -> float | None:
        """Trio time this node last received a message from ``peer`` (None: never)."""
        return self._last_contact.get(peer)

    async def propose(self, envelope: Envelope) -> Response:
        """Propose a command on this node (it must lead); wait until it is applied here.

        Concurrent proposals are batched by the runtime (see the module docstring). Raises
        NotLeader (with a hint) on a follower, ProposalDropped when the command was refused
        before it was appended or its entry was replaced by another leader's (either way it
        did not apply; retrying is safe), and OutcomeUnknown when a snapshot covered its
        entry (it may have applied: retry only with an idempotency key). Callers put a
        deadline around it: an entry may also stay uncommitted without a quorum, or after this
        node lost its leadership (the outcome is then unknown too).
        """
        status = self.view.last_status()
        if status.role is not Role.LEADER:
            raise NotLeader(status.leader)
        waiter: Waiter[Response] = Waiter()
        now = trio.current_time()
        payload, doc = encode_payload_doc(envelope, self.log_clock().read(now))
        await self.inbox.sender.send(Propose(payload, waiter, now, doc))
        try:
            return await waiter.wait()
        finally:
            # Abandoned (deadline or cancellation): a proposal not yet handed to the core is
            # skipped; one already in the log may still commit, and nobody waits for it.
            if not waiter.done:  # (an exception costs about 3 µs to build: not for nothing)
                waiter.fail(OutcomeUnknown("abandoned by its caller"))

    async def propose_together(self, envelopes: Sequence[Envelope]) -> list[Waiter[Response]]:
        """Hand several commands to the driver at once (one inbox event, one wake-up: a client
        frame's writes, univrs/api/store.py ``submit_many``); one waiter per command, in order,
        each ending exactly as ``propose``'s wait does. The caller must ``fail`` every waiter
        it stops waiting for (deadline, cancellation), as ``propose`` does for its own, so a
        proposal not yet handed to the core is skipped. Raises NotLeader on a follower.

        No scheduling round when the inbox has room (``send_nowait``; a full inbox is waited
        for): the caller's wait for the waiters comes next, a checkpoint where the driver runs,
        so a round here would only switch tasks once more per client frame."""
        waiters, unsent = self.propose_together_nowait(envelopes)
        if unsent is not None:
            await self.inbox.sender.send(unsent)
        return waiters

    def propose_together_nowait(
        self, envelopes: Sequence[Envelope]
    ) -> tuple[list[Waiter[Response]], ProposeMany | None]:
        """``propose_together`` without awaiting: (the waiters, None), or with a full inbox
        (the waiters, the event still to ``inbox.sender.send``: the caller sends it, or fails
        the waiters). Raises NotLeader on a follower."""
        status = self.view.last_status()
        if status.role is not Role.LEADER:
            raise NotLeader(status.leader)
        now = trio.current_time()
        now_ms = self.log_clock().read(now)
        waiters: list[Waiter[Response]] = []
        batch: list[Propose] = []
        for envelope in envelopes:
            waiter: Waiter[Response] = Waiter()
            payload, doc = encode_payload_doc(envelope, now_ms)
            batch.append(Propose(payload, waiter, now, doc))
            waiters.append(waiter)
        event = ProposeMany(batch)
        held = self._held
        if held is not None:  # a client frame's, stepped when it is served (inline_steps.py)
            held.append(event)
            return waiters, None
        try:
            self.inbox.sender.send_nowait(event)
        except trio.WouldBlock:
            return waiters, event
        return waiters, None

    async def read_index(self, *, lease: bool = False) -> int:
        """Confirm a linearizable read point (ReadIndex; ``lease``: the leader's read lease
        when it holds one, only with ``[raft] read_lease``); returns once applied >= it here."""
        waiter: Waiter[int] = Waiter()
        await self.inbox.sender.send(Read(waiter, lease))
        return await waiter.wait()

    def read_index_nowait(self, waiter: Waiter[int], *, lease: bool = False) -> bool:
        """``read_index`` without waiting: hand the read to the driver now; the driver fills
        ``waiter`` (from its step) as ``read_index`` would answer. False, and nothing handed
        over, when the inbox is full or closed (the caller then uses ``read_index``)."""
        try:
            self.inbox.sender.send_nowait(Read(waiter, lease))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def call(self, fn: Callable[[RaftNode], Any]) -> Any:
        """Run ``fn(core)`` on the driver task (for campaign, transfer_leader, membership)."""
        waiter: Waiter[Any] = Waiter()
        await self.inbox.sender.send(Call(fn, waiter))
        return await waiter.wait()

    async def take_snapshot(self) -> SnapshotMeta | None:
        """Snapshot the state machine now, store it and compact the log (snapshotter.py);
        the newest stored snapshot's meta (None: nothing applied yet)."""
        return await self._snapshots.take()

    # ------------------------------------------------------------------ tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the driver, the storage writer, the apply loop and the snapshotter until
        cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer.run)
            nursery.start_soon(self._applier.run)
            nursery.start_soon(self._snapshots.run)
            nursery.start_soon(self._drive)
            nursery.start_soon(
                run_ticker, self.inbox.sender, self.tick_seconds, self.metrics.loop_lag_seconds
            )
            task_status.started()
