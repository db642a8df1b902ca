"""An in-memory cluster of real ``RaftRuntime`` drivers for runtime and API tests.

Messages go through ``MemCluster.send``, which can drop a node's links both ways (``cut``),
drop only what is sent *to* a node (``deaf``: its own messages still go out, as for a leader
whose inbound links are down), hold messages back (``hold``) and show every message to
watchers. Storage is ``MemoryStore``: the log, the hard state and one snapshot, enough for the
driver's snapshot install and its own snapshots (``take_snapshot``). Runtimes run in their own
cancel scopes, so a test can stop one and start a new process of the same node on its store.
Meant for trio's autojump clock; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import attrs
import trio

from univrs.raft import Membership, RaftNode, bootstrap_state
from univrs.raft.messages import Entry, HardState, Message, SnapshotMeta
from univrs.raft.ready import InitialState, RaftConfig, Role
from univrs.runtime.batching import DEFAULT_MAX_GATHER
from univrs.runtime.driver import RaftRuntime
from univrs.runtime.metrics import NodeMetrics
from univrs.runtime.packing import Packing
from univrs.runtime.payload import MAX_PAYLOAD_VERSION, UnsupportedPayloadVersion
from univrs.runtime.snapshots import SnapshotChecker
from univrs.sm.commands import CreateWorkload, Envelope, MintCredits
from univrs.sm.model import WorkloadSpec
from univrs.sm.sessions import SessionPolicy
from univrs.sm.state import ClusterStateMachine

TICK = 0.05
CONFIG = RaftConfig(
    heartbeat_ticks=3, election_ticks_min=6, election_ticks_max=10, lazy_commit_notice_bytes=1024
)  # the commit notices nodes run (NodeConfig.raft_config)
T = TypeVar("T")

WAIT = 60.0  # simulated seconds (autojump): generous, costs nothing


@attrs.define(eq=False)
class MemoryStore:
    """Storage stand-in (a ``univrs.runtime.ports.LogStorage``): log, hard state and the
    newest snapshot (data included), and how many synced writes it took."""

    hard_state: HardState = HardState()
    entries: list[Entry] = attrs.field(factory=list)
    snapshot: tuple[SnapshotMeta, bytes] | None = None
    writes: int = 0

    def append(
        self, *, hard_state: HardState | None, truncate_from: int | None, entries: Sequence[Entry]
    ) -> None:
        self.writes += 1
        if hard_state is not None:
            self.hard_state = hard_state
        if truncate_from is not None:
            self.entries = [e for e in self.entries if e.index < truncate_from]
        self.entries.extend(entries)

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        self.snapshot = (meta, data)
        if not any(e.index == meta.index and e.term == meta.term for e in self.entries):
            self.entries = []  # the log conflicts with the snapshot or is older (Figure 13)

    def snapshot_meta(self) -> SnapshotMeta | None:
        return None if self.snapshot is None else self.snapshot[0]

    def compact(self, up_to: int) -> None:
        self.entries = [e for e in self.entries if e.index > up_to]

    def initial(self, membership: Membership) -> InitialState:
        """What a restarted process reads back (no snapshot support needed by the tests)."""
        assert self.snapshot is None, "restarting from a snapshot is not modelled here"
        return InitialState(
            hard_state=self.hard_state, entries=tuple(self.entries), membership=membership
        )


@attrs.define(eq=False)
class MemCluster:
    """See the module docstring. Create it with ``MemCluster.build`` and ``start`` nodes
    (``start_all``), or with ``start_cluster``, which also waits for a leader."""

    nursery: trio.Nursery
    membership: Membership
    seed: int = 1
    ids: tuple[str, ...] = ()  # the members in the order ``build`` was given them
    proposal_depth: int = 1  # the runtimes' (univrs/runtime/step.py, "Proposal batching")
    # Seconds the open batch gathers returning proposers at most (univrs/runtime/batching.py).
    proposal_gather: float = DEFAULT_MAX_GATHER
    packing: Packing = attrs.field(factory=Packing)  # the runtimes' (batch entries or not)
    # Give each core the node's snapshot check (univrs.runtime.snapshots.SnapshotChecker).
    check_snapshots: bool = False
    stores: dict[str, MemoryStore] = attrs.field(factory=dict)
    runtimes: dict[str, RaftRuntime] = attrs.field(factory=dict)
    cut: set[str] = attrs.field(factory=set)  # both directions dropped
    deaf: set[str] = attrs.field(factory=set)  # messages *to* these nodes dropped
    hold: Callable[[Message], bool] | None = None  # True: keep the message in ``held``
    held: list[Message] = attrs.field(factory=list)
    watchers: list[Callable[[Message], None]] = attrs.field(factory=list)
    _scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    _stopped: dict[str, trio.Event] = attrs.field(factory=dict)
    _incarnation: int = 0
    # Each process's NodeMetrics (a registry of its own), by node id: the latest start's.
    metrics: dict[str, NodeMetrics] = attrs.field(factory=dict)
    # The newest entry payload version a node's processes apply (default: this code's), and
    # what each node announced when it last started (its hellos: every runtime hears them).
    max_payload_versions: dict[str, int] = attrs.field(factory=dict)
    announced: dict[str, int] = attrs.field(factory=dict)
    # Processes that stopped on an entry they cannot apply (``UnsupportedPayloadVersion``).
    failures: dict[str, UnsupportedPayloadVersion] = attrs.field(factory=dict)
    # The state machines' session policy (the same on every node: replicated state).
    sm_policy: SessionPolicy = attrs.field(factory=SessionPolicy)

    @classmethod
    def build(cls, nursery: trio.Nursery, ids: Sequence[str], seed: int = 1) -> MemCluster:
        # Every member's "address" is its id: the API tests' forwarder routes on it.
        membership = Membership(voters=frozenset(ids), addresses=tuple(sorted((i, i) for i in ids)))
        return cls(nursery=nursery, membership=membership, seed=seed, ids=tuple(ids))

    async def start_all(self) -> None:
        """Start a process of every member, in the order ``build`` was given them."""
        for node_id in self.ids:
            await self.start(node_id)

    def send_now(self, msgs: Sequence[Message]) -> None:
        for msg in msgs:
            self.send(msg)

    def send(self, msg: Message) -> None:
        for watch in self.watchers:
            watch(msg)
        if msg.src in self.cut or msg.dst in self.cut or msg.dst in self.deaf:
            return
        if self.hold is not None and self.hold(msg):
            self.held.append(msg)
            return
        self.deliver(msg)

    def deliver(self, msg: Message) -> None:
        target = self.runtimes.get(msg.dst)
        if target is not None:
            if target.inbox.leave(msg):
                return  # left for its driver's next step, as the transport's reader does
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                target.inbox.sender.send_nowait(msg)  # a full inbox drops, as networks may

    async def start(self, node_id: str) -> RaftRuntime:
        """Start (or restart, on its store) a process of ``node_id``."""
        store = self.stores.get(node_id)
        if store is None:  # a new data dir: the bootstrap state is written first
            initial = bootstrap_state(self.membership)
            store = self.stores[node_id] = MemoryStore(
                hard_state=initial.hard_state, entries=list(initial.entries)
            )
        else:
            initial = store.initial(self.membership)
        self._incarnation += 1
        core = RaftNode(
            node_id,
            rng=random.Random(f"{self.seed}/{node_id}/{self._incarnation}"),
            config=CONFIG,
            initial=initial,
            snapshot_check=SnapshotChecker() if self.check_snapshots else None,
        )
        metrics = self.metrics[node_id] = NodeMetrics(lambda: runtime.status())
        max_version = self.max_payload_versions.get(node_id, MAX_PAYLOAD_VERSION)
        self.announced[node_id] = max_version
        runtime = RaftRuntime(
            core=core,
            sm=ClusterStateMachine(self.sm_policy),
            storage=store,
            transport=self,
            tick_seconds=TICK,
            write_in_thread=False,
            proposal_depth=self.proposal_depth,
            proposal_gather=self.proposal_gather,
            packing=self.packing,
            metrics=metrics,
            payload_versions=lambda: {n: (None, v) for n, v in self.announced.items()},
            max_payload_version=max_version,
        )
        self.runtimes[node_id] = runtime
        await self.nursery.start(self._run, node_id, runtime)
        return runtime

    async def _run(
        self, node_id: str, runtime: RaftRuntime, *, task_status: trio.TaskStatus[None]
    ) -> None:
        done = self._stopped[node_id] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scopes[node_id] = scope
                try:
                    await runtime.run(task_status=task_status)
                except UnsupportedPayloadVersion as exc:
                    self.failures[node_id] = exc
                except BaseExceptionGroup as group:  # raised inside the runtime's nursery
                    match, rest = group.split(UnsupportedPayloadVersion)
                    if match is None:
                        raise
                    leaf: BaseException = match
                    while isinstance(leaf, BaseExceptionGroup):
                        leaf = leaf.exceptions[0]
                    assert isinstance(leaf, UnsupportedPayloadVersion)
                    self.failures[node_id] = leaf
                    if rest is not None:
                        raise rest from None
        finally:
            done.set()

    async def stop(self, node_id: str) -> None:
        """End the process of ``node_id`` (what its store holds survives)."""
        self._scopes[node_id].cancel()
        await self._stopped[node_id].wait()
        del self.runtimes[node_id]

    def leader(self, among: Sequence[str] | None = None) -> RaftRuntime | None:
        """The one runtime among ``among`` (default: all) that leads, if exactly one does."""
        ids = self.runtimes if among is None else among
        leaders = [
            self.runtimes[i]
            for i in ids
            if i in self.runtimes and self.runtimes[i].status().role is Role.LEADER
        ]
        return leaders[0] if len(leaders) == 1 else None


async def wait_until(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` every tick of (simulated) time; fail with ``what`` after ``timeout``."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(TICK)
        return
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


async def in_background(
    nursery: trio.Nursery, call: Callable[[], Awaitable[T]]
) -> list[T | Exception]:
    """Start ``call()`` in ``nursery``; the list gets its result or the exception it raised
    (once it ends). Returns once the task had a chance to start (it reached its first wait)."""
    outcome: list[T | Exception] = []

    async def run() -> None:
        try:
            outcome.append(await call())
        except Exception as exc:
            outcome.append(exc)

    nursery.start_soon(run)
    await trio.sleep(0)
    return outcome


async def wait_leader(cluster: MemCluster, among: Sequence[str] | None = None) -> RaftRuntime:
    await wait_until(lambda: cluster.leader(among) is not None, "a leader")
    leader = cluster.leader(among)
    assert leader is not None
    return leader


async def start_cluster(
    nursery: trio.Nursery,
    ids: Sequence[str],
    *,
    packing: Packing | None = None,
    check_snapshots: bool = False,
    proposal_gather: float | None = None,
) -> tuple[MemCluster, RaftRuntime]:
    """A cluster of ``ids`` (with ``packing``, ``check_snapshots`` and ``proposal_gather`` if
    given), every node started, and its leader once there is one."""
    cluster = MemCluster.build(nursery, ids)
    if packing is not None:
        cluster.packing = packing
    if proposal_gather is not None:
        cluster.proposal_gather = proposal_gather
    cluster.check_snapshots = check_snapshots
    await cluster.start_all()
    return cluster, await wait_leader(cluster)


def create(name: str) -> Envelope:
    return Envelope(command=CreateWorkload(id=name, spec=WorkloadSpec(name=name, image="img")))


def mint(peer: str, amount: int) -> Envelope:
    return Envelope(command=MintCredits(to_peer=peer, amount=amount, reason="test"))
