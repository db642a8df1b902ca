"""One simulated server's record (``SimNode``) and the incarnation ids of its data dirs.

A ``SimNode`` is the simulation's state for one node id across its processes: the core (None
while down), the disk, the state machine, the API's and the storage's per-process work, and the
fault rules active on it. The runtime layers (runtime.py) and the simulator's parts (through
world.py's ``Node``) read and write its fields freely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from univrs.raft import RaftNode
from univrs.raft.interpreter import InstallJob, MergedWrite, ReadyEffects, WriteQueue
from univrs.raft.messages import Message, NodeId
from univrs.raft.ready import Role
from univrs.runtime.proposals import PendingProposals
from univrs.sim.api import Request
from univrs.sim.clients import ReadRecord
from univrs.sim.disk import SimDisk, Taken
from univrs.sim.faults import TICK
from univrs.sim.kv import KvStore

NodeFactory = Callable[..., RaftNode]


@attrs.define(eq=False)
class SimNode:
    """One simulated server: the core object (None while down), its disk and state machine."""

    id: NodeId
    disk: SimDisk
    raft: RaftNode | None = None
    kv: KvStore = attrs.field(factory=KvStore)
    life: int = 0  # the process: +1 at every crash (events of an earlier process are void)
    paused: bool = False
    backlog: list[tuple[Callable[[Any], None], Any]] = attrs.field(factory=list)
    period: int = TICK  # units between ticks (stretched by slow-clock faults)
    # Lease mode (cluster.py ``lease``): the node's clock runs one tick per ``clock_period``
    # units (TICK +- its drift) from ``clock_origin`` (its process's start). "within": every
    # tick event feeds the core the ticks that clock says are due (``ticks_fed`` so far), as
    # the driver does with leases on: a paused or starved node catches its ticks up, never
    # skips them. "beyond": one tick per event, so pauses and slow-clock faults lose ticks.
    clock_period: int = TICK
    clock_origin: int = 0
    ticks_fed: int = 0
    role: Role | None = None
    term: int = 0
    leader: NodeId | None = None
    # The process's API: write requests it serves, its proposal batch, its appended proposals
    # (api.py), and its ReadIndex requests by ctx (a counter from 1 in every process).
    serving: dict[int, Request] = attrs.field(factory=dict)
    batch: list[Request] = attrs.field(factory=list)
    # A batch entry's requests wait as one ``SimBatch``.
    proposals: PendingProposals[Any] = attrs.field(factory=PendingProposals)
    reads: dict[int, ReadRecord] = attrs.field(factory=dict)
    next_ctx: int = 1
    # The process's storage work (the interpreter's queue) and the item being written.
    writes: WriteQueue[Taken] = attrs.field(factory=WriteQueue)
    writing: MergedWrite | InstallJob | Taken | None = None
    # The interpreter's effects for this process (runtime.py ``NodeEffects``, built at start).
    fx: ReadyEffects | None = None
    # The incarnation the node's current configuration binds each peer to (its transport
    # refuses a peer of another incarnation), that configuration's index, and that index again
    # if it binds this node to its own incarnation (else 0): refreshed, like the driver's
    # status, when a Ready carries a CONFIG entry, a truncation or a snapshot.
    listed: dict[NodeId, str] = attrs.field(factory=dict)
    # Every id of its current configuration (bound or not): the transport's ``_configured``.
    configured: frozenset[NodeId] = frozenset()
    foreign_answer: bool = False  # the message being handled answers an earlier process
    cfg_index: int = 0
    bound_at: int = 0
    # Fault rules active on this node, by fault id.
    slow_disk: dict[int, int] = attrs.field(factory=dict)
    slow_clock: dict[int, int] = attrs.field(factory=dict)
    snap_at: int = 0  # applied index of this node's newest snapshot (taken or installed)
    installs: int = 0  # snapshots installed from a leader (makes older own snapshots moot)
    # An acknowledgement left for this process's next input (delivery.py ``_deliver``, as the
    # driver's inbox ``leave`` does; stepped by base.py ``settle``), or None.
    later: Message | None = None
    down_fault: int = 0  # the crash fault this node waits to restart from (0: up)
    pause_fault: int = 0
    retired: bool = False  # removed from the cluster and stopped; back only with a new disk
    wipes: int = 0  # data dirs lost so far (the disk's incarnation counts them)
    # LMDB state backend: an installed snapshot is not in the state env yet (it replaces the
    # env once durable on the disk; commits wait until then, as the node's apply loop does).
    state_stale: bool = False
    # The newest snapshot from a leader the state machine took (contract step 0) whose install
    # is not durable yet (0: none): the state may be ahead of the disk's log up to it
    # (storage.py ``_check_applied_on_disk``).
    installing: int = 0
    # A peer refused this process as an older copy of its data dir (rollback.py): it sends
    # nothing and refuses every message until it is replaced (a restart fences it again).
    fenced: bool = False


def incarnation_id(node: NodeId, wipes: int) -> str:
    """The incarnation id of ``node``'s data dir after ``wipes`` wipes (deterministic, so a
    seed replays; the real one is random)."""
    return f"{node}.{wipes}"
