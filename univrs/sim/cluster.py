"""A deterministic simulation of a Raft cluster in one process, driven by one seed.

Theory of operation. Simulated time is an integer count of *units*, ``TICK`` units per tick.
One heap of events keyed by (time, seq) drives everything: each node's ticks (every node has its
own phase, and a slow-clock fault stretches its period), message deliveries, disk-write
completions, client steps (once per tick) and faults. Nothing reads a wall clock and every
random choice comes from ``random.Random(seed)`` (nodes get their own RNG derived from the seed
and their incarnation), so a seed replays exactly.

After every input to a node (tick, message, persisted, applied, proposal, read) the simulator
drains the node's Ready batches and obeys the contract of univrs/raft/ready.py:

1. the persist part becomes a ``Write`` on the node's simulated disk, durable after a random
   delay; the Ready's ``messages_after_persist`` ride on that write (even when it persists
   nothing, so they wait for every earlier write too);
2. ``messages`` are sent at once through the simulated network;
3. when the write completes: the durable image changes, ``messages_after_persist`` are sent and
   ``persisted(index, term)`` is reported for its last entry;
4. ``committed`` entries are applied to the node's KvStore, then ``applied(index)``;
5. ``reads`` are served from the KvStore, ``dropped_reads`` make the client retry.
A ``snapshot`` (step 0) restores the KvStore first and rides on the Ready's write. Nodes also
snapshot their own KvStore now and then (a disk write; once durable, ``snapshot_taken`` and
compaction of the stored log up to what the core returns).

A crash drops the node object, its pending writes and its input backlog; a restart builds a new
node from the durable image (hard state and log, ``applied=0``, or the newest stored snapshot
and the log after it): the state machine is rebuilt by re-applying the committed entries the
new node hands back.

The Checker (checker.py) sees every change and raises InvariantViolation at once; after the
fault phase every fault heals and the run must reach liveness within ``quiet_ticks``.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from univrs.raft import InitialState, RaftConfig, RaftNode, bootstrap_state
from univrs.raft.messages import Entry, Membership, Message, NodeId, SnapshotMeta
from univrs.raft.ready import Ready, Role
from univrs.sim.checker import CORE_EXCEPTION, LIVENESS, READY_CONTRACT, Checker, InvariantViolation
from univrs.sim.clients import Workload
from univrs.sim.disk import SimDisk, Write
from univrs.sim.faults import TICK, Schedule, draw_schedule
from univrs.sim.injector import FaultInjector
from univrs.sim.kv import KvStore, WriteDecoder
from univrs.sim.network import SimNetwork

# The Raft tuning the simulation runs with (ticks); message latency is 0.1 to 3 ticks.
SIM_RAFT_CONFIG = RaftConfig(heartbeat_ticks=3, election_ticks_min=10, election_ticks_max=20)

NodeFactory = Callable[..., RaftNode]


@attrs.define(eq=False)
class SimNode:
    """One simulated server: the core object (None while crashed), its disk and state machine."""

    id: NodeId
    disk: SimDisk
    raft: RaftNode | None = None
    kv: KvStore = attrs.field(factory=KvStore)
    incarnation: int = 0
    paused: bool = False
    backlog: list[tuple[Callable[[Any], None], Any]] = attrs.field(factory=list)
    period: int = TICK  # units between ticks (stretched by slow-clock faults)
    role: Role | None = None
    term: int = 0
    leader: NodeId | None = None
    # Write attempts waiting for this node to apply the index propose returned.
    acks: dict[int, list[Any]] = attrs.field(factory=dict)
    # Fault rules active on this node, by fault id.
    slow_disk: dict[int, int] = attrs.field(factory=dict)
    slow_clock: dict[int, int] = attrs.field(factory=dict)
    snap_at: int = 0  # applied index of this node's newest snapshot (taken or installed)
    installs: int = 0  # snapshots installed from a leader (makes older own snapshots moot)
    down_fault: int = 0  # the crash fault this node waits to restart from (0: up)
    pause_fault: int = 0


@attrs.frozen(kw_only=True)
class SimStats:
    """What one run did, for -v output and tests."""

    seed: int
    ticks: int
    elections: int
    max_term: int
    committed: int
    writes_acked: int
    reads_served: int
    reads_dropped: int
    crashes: int
    faults: int
    messages: int
    dropped: int
    snapshots: int  # snapshots taken
    installs: int  # snapshots installed from a leader


@attrs.define(eq=False)
class Simulation:
    """One seeded run; ``run()`` returns SimStats or raises InvariantViolation."""

    seed: int
    n_nodes: int = 5
    ticks: int = 2000
    quiet_ticks: int = 400
    node_factory: NodeFactory = RaftNode
    config: RaftConfig | None = None  # None: SIM_RAFT_CONFIG with this seed's snapshot knobs
    trace_len: int = 40

    rng: random.Random = attrs.field(init=False)
    node_ids: list[NodeId] = attrs.field(init=False)
    nodes: dict[NodeId, SimNode] = attrs.field(init=False)
    membership: Membership = attrs.field(init=False)
    checker: Checker = attrs.field(init=False)
    net: SimNetwork = attrs.field(init=False)
    workload: Workload = attrs.field(init=False)
    injector: FaultInjector = attrs.field(init=False)
    schedule: Schedule = attrs.field(init=False)
    decoder: WriteDecoder = attrs.field(init=False, factory=WriteDecoder)
    trace: deque[tuple[int, str, Any]] = attrs.field(init=False)
    now: int = 0
    tick_units: int = TICK
    crashes: int = 0
    snapshots: int = 0
    done: bool = False
    quiet: bool = False  # the fault phase is over
    _heap: list[tuple[int, int, Callable[[Any], None], Any]] = attrs.field(init=False, factory=list)
    _seq: int = 0

    def __attrs_post_init__(self) -> None:
        if not 3 <= self.n_nodes <= 7:
            raise ValueError(f"the simulator runs 3 to 7 nodes, not {self.n_nodes}")
        self.rng = random.Random(self.seed)
        self.trace = deque(maxlen=self.trace_len)
        self.node_ids = [f"n{i + 1}" for i in range(self.n_nodes)]
        self.membership = Membership(voters=frozenset(self.node_ids))
        self.checker = Checker(voters=self.node_ids)
        self.schedule = draw_schedule(self.rng, self.ticks, self.n_nodes)
        p = self.schedule.profile
        self.net = SimNetwork(
            rng=self.rng,
            drop=p.drop,
            dup=p.dup,
            lat_min=p.lat_min,
            lat_max=p.lat_max,
            spike=p.spike,
        )
        if self.config is None:
            self.config = attrs.evolve(
                SIM_RAFT_CONFIG,
                snapshot_chunk_bytes=p.snap_chunk,
                snapshot_window=p.snap_window,
                pre_vote=p.pre_vote,
                check_quorum=p.check_quorum,
                election_ticks_max=p.election_max,
            )
        self.workload = Workload(sim=self, rng=self.rng)
        self.injector = FaultInjector(sim=self)
        boot = bootstrap_state(self.membership)
        self.nodes = {}
        for nid, speed in zip(self.node_ids, p.disk_speed, strict=True):
            disk = SimDisk(hard_state=boot.hard_state, entries=list(boot.entries), speed=speed)
            self.nodes[nid] = SimNode(id=nid, disk=disk)
            self.checker.load(nid, boot.entries)

    # ----------------------------------------------------------------- event queue

    def at(self, time: int, fn: Callable[[Any], None], arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, fn, arg))

    def run(self) -> SimStats:
        """Run the fault phase, then the quiet phase until liveness holds (or fails)."""
        end_faults = self.ticks * TICK
        deadline = end_faults + self.quiet_ticks * TICK
        for sn in self.nodes.values():
            self.start(sn)
            self.at(self.rng.randrange(TICK), self._tick, sn)
        for f in self.schedule.faults:
            self.at(f.at * TICK, self.injector.fire, f)
        self.at(end_faults, self.injector.heal_all, None)
        self.at(0, self._client_step, None)
        heap = self._heap
        pop = heapq.heappop
        try:
            while heap and not self.done:
                t, _, fn, arg = pop(heap)
                if t > deadline:
                    self._liveness_failed()
                self.now = t
                fn(arg)
        except InvariantViolation:
            raise
        except Exception as e:  # a core assertion or bug: report it like a violation
            raise InvariantViolation(CORE_EXCEPTION, f"{type(e).__name__}: {e}") from e
        if not self.done:
            self._liveness_failed()
        w = self.workload
        return SimStats(
            seed=self.seed,
            ticks=self.now // TICK,
            elections=len(self.checker.leaders),
            max_term=max(self.checker.leaders, default=0),
            committed=self.checker.commit_index(),
            writes_acked=w.writes_acked,
            reads_served=w.reads_served,
            reads_dropped=w.reads_dropped,
            crashes=self.crashes,
            faults=self.injector.fired,
            messages=self.net.sent,
            dropped=self.net.dropped,
            snapshots=self.snapshots,
            installs=sum(sn.installs for sn in self.nodes.values()),
        )

    # ----------------------------------------------------------------- node I/O

    def start(self, sn: SimNode) -> None:
        """Build ``sn``'s core from its durable image (snapshot, hard state, log after it)."""
        disk = sn.disk
        initial: InitialState = disk.initial_state(self.membership)
        rng = random.Random(f"{self.seed}/{sn.id}/{sn.incarnation}")
        sn.raft = raft = self.node_factory(sn.id, config=self.config, rng=rng, initial=initial)
        sn.kv = KvStore()
        if disk.snapshot is not None:
            meta, data = disk.snapshot
            sn.kv.restore(data, meta.index, meta.term)
            sn.snap_at = meta.index
            raft.snapshot_taken(meta, data)
        else:
            sn.snap_at = 0
        sn.role, sn.term, sn.leader = Role.FOLLOWER, initial.hard_state.term, None
        hs = initial.hard_state
        self.checker.observe_restart(sn.id, hs.term, hs.commit)
        self.drain(sn)

    def drain(self, sn: SimNode) -> None:
        """Hand every pending Ready of ``sn`` to the simulated runtime."""
        raft = sn.raft
        if raft is None:
            return
        # Handling a Ready feeds the node new input only through applied(); without committed
        # entries nothing new can be pending, so one has_ready() per batch is enough.
        while raft.has_ready():
            rd = raft.ready()
            self._handle_ready(sn, rd)
            if not rd.committed and rd.snapshot is None:
                return

    def _handle_ready(self, sn: SimNode, rd: Ready) -> None:
        nid = sn.id
        chk = self.checker
        hs = rd.hard_state
        install = rd.snapshot
        if install is not None:
            # Step 0 of the contract: the snapshot replaces the log prefix and the state machine
            # before anything else in this Ready; its storage rides on this Ready's write.
            meta = install.meta
            chk.observe_snapshot(nid, meta.index, meta.term, durable=False)
            sn.kv.restore(install.data, meta.index, meta.term)
            chk.check_snapshot_state(nid, meta.index, sn.kv.data)
            sn.installs += 1
            sn.snap_at = max(sn.snap_at, meta.index)
        if hs is not None:
            chk.observe_term(nid, hs.term)
        if rd.truncate_from is not None or rd.entries:
            chk.observe_issued(nid, rd.truncate_from, rd.entries, rd.soft_state is None)
        ss = rd.soft_state
        if hs is not None:
            chk.observe_commit(nid, hs.commit, leading=ss is None and sn.role is Role.LEADER)
        if ss is not None:
            sn.role, sn.term, sn.leader = ss.role, ss.term, ss.leader
            chk.observe_role(nid, ss.role, ss.term)
            self.trace.append((self.now, nid, ss))
        writes = (
            hs is not None
            or rd.truncate_from is not None
            or bool(rd.entries)
            or install is not None
        )
        if writes or rd.messages_after_persist:
            after = rd.messages_after_persist
            disk = sn.disk
            delay = 0
            if writes:
                p = self.schedule.profile
                delay = p.disk_min + int(self.rng.random() * (p.disk_max - p.disk_min + 1))
                delay *= disk.speed * disk.slow_factor
                if p.disk_stall and not self.quiet and self.rng.random() < p.disk_stall:
                    delay += int(self.rng.random() * p.disk_tail)
            w = disk.submit(
                Write(
                    rd.truncate_from,
                    rd.entries,
                    hs,
                    after,
                    self.now + delay,
                    install=(install.meta, install.data) if install is not None else None,
                )
            )
            self.at(w.done_at, self._disk_done, (sn, sn.incarnation))
        for m in rd.messages:
            self._send(m)
        if install is not None:
            assert sn.raft is not None
            sn.raft.applied(install.meta.index)
        if rd.committed:
            self._apply(sn, rd.committed)
        for rs in rd.reads:
            self.workload.on_read(sn, rs.ctx, rs.index)
        for ctx in rd.dropped_reads:
            self.workload.on_read_dropped(sn, ctx)

    def _apply(self, sn: SimNode, committed: tuple[Entry, ...]) -> None:
        kv = sn.kv
        chk = self.checker
        acks = sn.acks
        write_of = self.decoder.write_of
        for e in committed:
            if e.index != kv.applied + 1:
                raise InvariantViolation(
                    READY_CONTRACT,
                    f"{sn.id} was handed entry {e.index} to apply after applying {kv.applied}",
                )
            w = write_of(e)
            if w is None:
                chk.observe_apply(sn.id, e, None, None)
            else:
                chk.observe_apply(sn.id, e, w.key, w.value)
            kv.apply(e, w)
            waiting = acks.pop(e.index, None)
            if waiting:
                self.workload.on_applied(sn, e, waiting)
        assert sn.raft is not None
        sn.raft.applied(kv.applied)
        every = self.schedule.profile.snap_every
        if every and kv.applied - sn.snap_at >= every:
            self._take_snapshot(sn)

    def _take_snapshot(self, sn: SimNode) -> None:
        """Snapshot the state machine now; the core hears of it once the write is durable."""
        kv = sn.kv
        sn.snap_at = kv.applied
        self.snapshots += 1
        meta = SnapshotMeta(index=kv.applied, term=kv.applied_term, membership=self.membership)
        p = self.schedule.profile
        delay = (p.disk_min + int(self.rng.random() * (p.disk_max - p.disk_min + 1))) * (
            sn.disk.speed * sn.disk.slow_factor
        )
        w = sn.disk.submit(
            Write(
                None,
                (),
                None,
                (),
                self.now + delay,
                taken=(meta, kv.snapshot()),
                epoch=sn.installs,
            )
        )
        self.at(w.done_at, self._disk_done, (sn, sn.incarnation))

    def _send(self, m: Message) -> None:
        for d in self.net.delays(m.src, m.dst):
            self._seq += 1
            heapq.heappush(self._heap, (self.now + d, self._seq, self._deliver, m))

    def _deliver(self, m: Message) -> None:
        sn = self.nodes[m.dst]
        raft = sn.raft
        if raft is None or self.net.is_blocked(m.src, m.dst):
            return
        if sn.paused:
            sn.backlog.append((self._deliver, m))
            return
        self.trace.append((self.now, "recv", m))
        raft.step(m)
        self.drain(sn)

    def _disk_done(self, arg: tuple[SimNode, int]) -> None:
        sn, incarnation = arg
        if sn.incarnation != incarnation:
            return  # the write was lost in a crash
        if sn.paused:
            sn.backlog.append((self._disk_done, arg))
            return
        w = sn.disk.complete_next()
        raft = sn.raft
        assert raft is not None
        if w.install is not None:
            meta = w.install[0]
            self.checker.observe_snapshot(sn.id, meta.index, meta.term, durable=True)
        if w.truncate_from is not None or w.entries:
            self.checker.observe_durable(sn.id, w.truncate_from, w.entries)
        for m in w.after_persist:
            self._send(m)
        if w.install is not None:
            meta = w.install[0]
            raft.persisted(meta.index, meta.term)
        if w.entries:
            last = w.entries[-1]
            raft.persisted(last.index, last.term)
        if w.taken is not None and w.epoch == sn.installs:
            # Our own snapshot is durable: hand it to the core, compact what it lets go.
            meta, data = w.taken
            upto = raft.snapshot_taken(meta, data, keep=self.schedule.profile.snap_keep)
            sn.disk.compact(upto)
        self.drain(sn)

    def _tick(self, sn: SimNode) -> None:
        self.at(self.now + sn.period, self._tick, sn)
        raft = sn.raft
        if raft is None or sn.paused:
            return
        raft.tick()
        self.drain(sn)

    def _client_step(self, _: None) -> None:
        self.at(self.now + TICK, self._client_step, None)
        w = self.workload
        w.step(self.now)
        if w.final_acked_at is not None:
            target = w.final_acked_at
            if all(sn.kv.applied >= target for sn in self.nodes.values() if sn.raft is not None):
                self.done = True

    # ----------------------------------------------------------------- node life (faults)

    def current_leader(self) -> SimNode | None:
        """The live node that most recently announced leadership of the highest term."""
        best: SimNode | None = None
        for sn in self.nodes.values():
            live_leader = sn.raft is not None and sn.role is Role.LEADER
            if live_leader and (best is None or sn.term > best.term):
                best = sn
        return best

    def crash(self, sn: SimNode) -> None:
        """Kill ``sn``: its core, pending writes, input backlog and client attempts are lost."""
        self.crashes += 1
        sn.raft = None
        sn.paused = False
        sn.pause_fault = 0
        sn.backlog.clear()
        sn.incarnation += 1
        sn.disk.crash()
        sn.acks.clear()
        sn.role, sn.leader = None, None
        self.checker.observe_crash(sn.id)
        self.workload.on_crash(sn)

    def restart(self, arg: tuple[SimNode, int]) -> None:
        """Restart ``sn`` from its durable image, if it is still down from crash fault ``fid``."""
        sn, fid = arg
        if sn.down_fault != fid or sn.raft is not None:
            return
        sn.down_fault = 0
        self.trace.append((self.now, "restart", sn.id))
        self.start(sn)

    def resume(self, arg: tuple[SimNode, int]) -> None:
        """End pause fault ``fid`` of ``sn``: it handles its queued input in arrival order."""
        sn, fid = arg
        if sn.pause_fault != fid or not sn.paused:
            return
        sn.paused = False
        sn.pause_fault = 0
        backlog, sn.backlog = sn.backlog, []
        for fn, a in backlog:
            fn(a)

    def _liveness_failed(self) -> None:
        w = self.workload
        parts = []
        for sn in self.nodes.values():
            if sn.raft is None:
                parts.append(f"{sn.id}: down")
                continue
            st = sn.raft.status()
            parts.append(
                f"{sn.id}: {st.role.value} term {st.term} commit {st.commit} applied "
                f"{sn.kv.applied} last {st.last_index}"
            )
        what = (
            "the final write was not acknowledged"
            if w.final_acked_at is None
            else f"not every node applied index {w.final_acked_at}"
        )
        raise InvariantViolation(
            LIVENESS,
            f"{self.quiet_ticks} ticks after all faults healed, {what}; " + "; ".join(parts),
        )

    # ----------------------------------------------------------------- reporting

    def format_trace(self) -> list[str]:
        """The last events before the end of the run, oldest first."""
        lines = []
        for t, who, what in self.trace:
            lines.append(f"  t={t / TICK:8.1f} {who:>8} {what}")
        return lines
