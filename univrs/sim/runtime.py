"""The simulated runtime of each node: Ready handling, storage, applying and snapshots.

After every input to a node (tick, message, persisted, applied, proposal, read) the simulator
drains the node's Ready batches through the one interpreter of the Ready contract
(univrs/raft/interpreter.py ``execute``, the same the Trio driver runs), whose effects here
(``NodeEffects``) are:

1. a persist job goes on the process's ``WriteQueue`` (storage.py): written one item at a
   time, durable after a random delay, merged with the next Ready writes (group commit);
2. ``messages`` are sent at once through the simulated network (delivery.py);
3. when a write completes: the durable image changes, its ``messages_after_persist`` are sent
   and what it made durable is reported (``report_persisted``, storage.py);
4. ``committed`` entries are applied to the node's KvStore, then ``applied(index)`` is reported,
   at once or a little later (apply.py);
5. ``reads`` are served from the KvStore, ``dropped_reads`` make the client retry.
A ``snapshot`` (step 0) restores the KvStore first and queues its storage ahead of the Ready's
write. Nodes also snapshot their own KvStore now and then, right after applying (apply.py,
storage.py).

The runtime is one object split by topic into a single chain of layers, each extending the one
below it (like RaftNode's, univrs/raft/base.py)::

    RuntimeBase     base.py      the event queue's ``at``, draining Ready batches into the
                                 node's effects, the listing refresh, the compaction check
    DeliveryLayer   delivery.py  sending and delivering messages (the transport's incarnation
                                 checks), forged messages (forger.py)
    StorageLayer    storage.py   the write queue on the simulated disk, completed writes,
                                 the node's own snapshots
    ApplyLayer      apply.py     committed entries into the KvStore, ``applied`` reports
    ReadyRuntime    runtime.py   starting a process from its durable image (and its state
                                 env), ticks and the lease clock; ``NodeEffects``
    Simulation      cluster.py   the event loop, node life (crash, restart, wipe), liveness

A layer calls only methods of its own layer or of the layers below it (an event handler it
schedules included), so every ``self._x()`` resolves to the one definition found by going down
the chain; there are no placeholder methods (tests/test_imports.py). A Ready reaches the layers
above ``drain`` through the node's effects object, which ``start`` builds over the whole
runtime: the interpreter's ``ReadyEffects`` protocol, as in the Trio driver. Each layer
declares the fields it uses; Simulation sets them. A server's record is ``SimNode`` (node.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

from univrs.raft import InitialState, RaftConfig
from univrs.raft.interpreter import InstallJob, PersistJob, WriteQueue
from univrs.raft.messages import Entry, Message
from univrs.raft.ready import Role, SnapshotInstall, SoftState
from univrs.raft.starts import Start
from univrs.runtime.capabilities import lease_gate, lease_hold_ms
from univrs.runtime.proposals import PendingProposals
from univrs.sim.apply import ApplyLayer
from univrs.sim.clients import Workload
from univrs.sim.faults import TICK
from univrs.sim.invariants import LINEARIZABLE_READ, STATE_DURABLE, InvariantViolation
from univrs.sim.kv import KvStore
from univrs.sim.node import NodeFactory, SimNode
from univrs.sim.statestore import SimStateDirs


class ReadyRuntime(ApplyLayer):
    """The top layer of the simulated runtime, under Simulation (cluster.py): starting a
    node's process, its ticks and its clock."""

    seed: int
    config: RaftConfig | None
    node_factory: NodeFactory
    core_incarnation: bool  # the cores know their own incarnation
    workload: Workload
    operator: Any  # membership.Operator (the operator), or None
    proposals_factory: Callable[[], PendingProposals[Any]]
    kv_factory: Callable[[], KvStore]
    # "memory", or "lmdb": each data dir's state machine persisted in LMDB (statestore.py).
    state_backend: str
    state_dirs: SimStateDirs | None
    state_rng: random.Random
    state_resumes: int  # starts that resumed from the state env past the stored snapshot
    lease: str  # "off", or read leases on with clocks drifting "within" or "beyond" the bound
    # ("mixed": as "within", with one node, ``lease_off``, running leases off)
    lease_off: str | None  # "mixed": the node whose core runs read_lease off
    lease_gate: bool  # "mixed": the leader's lease gate (univrs/runtime/capabilities.py)
    lease_gated: int  # lease reads the gate made ReadIndex reads

    # ----------------------------------------------------------------- start

    def start(self, sn: SimNode) -> None:
        """Build ``sn``'s core from its durable image (snapshot, hard state, log after it)."""
        disk = sn.disk
        initial: InitialState = disk.initial_state()
        kv = None
        if self.state_dirs is not None:
            kv = self._open_state(sn)
            initial = attrs.evolve(initial, applied=max(initial.applied, kv.applied))
        rng = random.Random(f"{self.seed}/{sn.id}/{sn.life}")
        sn.later = None
        sn.raft = raft = self.node_factory(
            sn.id,
            config=self.config_of(sn.id),
            rng=rng,
            initial=initial,
            incarnation=sn.disk.incarnation if self.core_incarnation else None,
            snapshot_check=KvStore.check_snapshot,
        )
        sn.kv = kv if kv is not None else self.kv_factory()
        sn.state_stale = False
        sn.installing = 0
        sn.writes = WriteQueue()
        sn.writing = None
        sn.fx = NodeEffects(self, sn)
        sn.serving = {}
        sn.batch = []
        sn.proposals = self.proposals_factory()
        sn.reads = {}
        sn.next_ctx = 1
        sn.clock_origin = self.now
        # A new start of the data dir, durable before anything is sent (rollback.py).
        boot = random.Random(f"{self.seed}/{sn.id}/{sn.life}/{sn.wipes}/boot").getrandbits(64)
        disk.start = (
            Start(1, (f"{boot:016x}",))
            if disk.start is None
            else (disk.start.following(f"{boot:016x}"))
        )
        sn.fenced = False
        sn.ticks_fed = 0
        self._refresh_listing(sn)
        if disk.snapshot is not None:
            meta, data = disk.snapshot
            if kv is None:
                sn.kv.restore(data, meta.index, meta.term, meta.membership)
            sn.snap_at = meta.index
            raft.snapshot_taken(meta, data)
            self._check_compaction(sn)
        else:
            sn.snap_at = 0
        sn.role, sn.term, sn.leader = Role.FOLLOWER, initial.hard_state.term, None
        hs = initial.hard_state
        self.checker.observe_restart(sn.id, hs.term, hs.commit)
        self.drain(sn)

    def _open_state(self, sn: SimNode) -> KvStore:
        """The node's rules for its persistent state at start-up (statestore.py): resume at
        the env's applied index ``A`` if it is at or past the stored snapshot, replace it from
        the snapshot if behind; an env ahead of the durable log (or of another term at ``A``)
        is a violated invariant: the node would refuse to start."""
        disk = sn.disk
        assert self.state_dirs is not None
        if disk.state is None:
            disk.state = self.state_dirs.new(disk.incarnation)
        env = disk.state
        applied, term = env.applied()
        snap = disk.snapshot
        snap_index = snap[0].index if snap is not None else 0
        if applied > max(disk.last_index, snap_index):
            raise InvariantViolation(
                STATE_DURABLE,
                f"{sn.id}'s state env is at applied index {applied}, ahead of its durable log "
                f"(last index {disk.last_index}, snapshot {snap_index}): the node refuses to start",
            )
        if applied >= snap_index and applied > 0:
            if disk.term_at(applied) != term:
                raise InvariantViolation(
                    STATE_DURABLE,
                    f"{sn.id}'s state env is at ({applied}, term {term}) but its durable log "
                    f"has term {disk.term_at(applied)} there: the node refuses to start",
                )
            kv = env.load(self.kv_factory)
            self.checker.check_snapshot_state(sn.id, applied, kv.data)
            if applied > snap_index:
                self.state_resumes += 1
            return kv
        kv = self.kv_factory()
        if snap is not None:
            meta, data = snap
            kv.restore(data, meta.index, meta.term, meta.membership)
            env.replace(kv)
        return kv

    def config_of(self, nid: str) -> RaftConfig:
        """The core's config of node ``nid``: the seed's, but leases off on ``lease_off``."""
        assert self.config is not None
        if nid == self.lease_off:
            return attrs.evolve(self.config, read_lease=False)
        return self.config

    def lease_gate_open(self, sn: SimNode) -> bool:
        """May ``sn``'s lease confirm a lease read? As the Trio driver asks before one
        (univrs/runtime/capabilities.py ``lease_gate``): only if every member of its newest
        configuration and of the one its state machine applied announced a vote hold at least
        its own. The simulator's hellos are its nodes' configs (each process of a node runs
        the same one), from each node's current disk. True outside "mixed" mode or with the
        gate off (``lease_gate``: the runtime before s14-audit)."""
        raft = sn.raft
        if self.lease != "mixed" or not self.lease_gate or raft is None:
            return True
        if raft.role() is not Role.LEADER:
            return True
        holds = {
            nid: (node.disk.incarnation, lease_hold_ms(self.config_of(nid), TICK))
            for nid, node in self.nodes.items()
        }
        configurations = (raft.status().membership, sn.kv.config)
        need = lease_hold_ms(self.config_of(sn.id), TICK)
        if lease_gate(sn.id, configurations, holds, need) is None:
            return True
        self.lease_gated += 1
        return False

    # ----------------------------------------------------------------- clock

    def _tick(self, sn: SimNode) -> None:
        if self.lease == "off":
            self.at(self.now + sn.period, self._tick, sn)
        else:  # the node's own clock rate, stretched by slow-clock faults
            self.at(self.now + sn.period * sn.clock_period // TICK, self._tick, sn)
        raft = sn.raft
        if raft is None or sn.paused:
            return
        self.settle(sn)
        if self.lease in ("within", "mixed"):
            self.sync_clock(sn)
        else:  # "beyond": a tick per event, so a pause or a slow-clock fault loses ticks
            raft.tick()
            self.drain(sn)
        if self.forger is not None:
            self._hand_forgery(sn, self.forger.maybe_forge_answer(raft, sn.disk.pins_ever))
            self._hand_forgery(sn, self.forger.maybe_forge_term(raft))

    def sync_clock(self, sn: SimNode) -> None:
        """Lease mode: feed ``sn``'s core every tick its clock says is due by now (the driver
        does this at every tick and before a lease read)."""
        raft = sn.raft
        if raft is None or self.lease not in ("within", "mixed"):
            return
        self.settle(sn)
        due = (self.now - sn.clock_origin) // sn.clock_period
        while sn.ticks_fed < due:
            sn.ticks_fed += 1
            raft.tick()
            self.drain(sn)


@attrs.define(eq=False, slots=True)
class NodeEffects:
    """The simulated runtime's side of the interpreter for one process of one node."""

    rt: ReadyRuntime
    sn: SimNode

    def soft_state_changed(self, soft: SoftState) -> None:
        sn = self.sn
        rt = self.rt
        was_leader = sn.role is Role.LEADER
        sn.role, sn.term, sn.leader = soft.role, soft.term, soft.leader
        if was_leader and soft.role is not Role.LEADER:
            rt.api.on_leadership_lost(sn)
        elif soft.role is Role.LEADER and not was_leader:
            rt.injector.on_leader(sn)
            if rt.operator is not None:
                rt.operator.on_leader(sn)
        rt.checker.observe_role(sn.id, soft.role, soft.term)
        rt.trace.append((rt.now, sn.id, soft))

    def restore_snapshot(self, install: SnapshotInstall, job: InstallJob) -> None:
        # Step 0 of the contract: the snapshot replaces the state machine before anything else
        # in this Ready; its storage goes ahead of this Ready's write.
        sn = self.sn
        rt = self.rt
        meta = install.meta
        rt._submit(sn, job)
        sn.kv.restore(install.data, meta.index, meta.term, meta.membership)
        rt.checker.check_snapshot_state(sn.id, meta.index, sn.kv.data)
        sn.state_stale = sn.disk.state is not None
        sn.installing = max(sn.installing, meta.index)
        sn.installs += 1
        sn.snap_at = max(sn.snap_at, meta.index)
        rt.api.on_install(sn, meta.index)
        assert sn.raft is not None
        sn.raft.applied(meta.index)
        rt._check_compaction(sn)

    def send(self, msg: Message) -> None:
        self.rt._send(msg)

    def submit_write(self, job: PersistJob) -> None:
        self.rt._submit(self.sn, job)

    def apply_committed(self, entries: tuple[Entry, ...]) -> None:
        self.rt._apply(self.sn, entries)

    def read_ready(self, ctx: int, index: int) -> None:
        if self.sn.foreign_answer:
            raise InvariantViolation(
                LINEARIZABLE_READ,
                f"{self.sn.id} released read {ctx} (at index {index}) on an answer to a "
                "ReadIndex request of an earlier process of it: answers must match exactly "
                "(read ids unique across restarts)",
            )
        self.rt.workload.on_read(self.sn, ctx, index)

    def read_dropped(self, ctx: int) -> None:
        self.rt.workload.on_read_dropped(self.sn, ctx)
