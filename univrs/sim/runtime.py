"""The simulated runtime of each node: Ready handling, disk writes, applying and snapshots.

After every input to a node (tick, message, persisted, applied, proposal, read) the simulator
drains the node's Ready batches and obeys the contract of univrs/raft/ready.py:

1. the persist part becomes a ``Write`` on the node's simulated disk, durable after a random
   delay; the Ready's ``messages_after_persist`` ride on that write (even when it persists
   nothing, so they wait for every earlier write too);
2. ``messages`` are sent at once through the simulated network;
3. when the write completes: the durable image changes, ``messages_after_persist`` are sent and
   ``persisted(index, term)`` is reported for its last entry;
4. ``committed`` entries are applied to the node's KvStore, then ``applied(index)`` is reported:
   at once, or (``Profile.apply_lag``) a little later, as a runtime whose apply loop runs
   apart from the core would;
5. ``reads`` are served from the KvStore, ``dropped_reads`` make the client retry.
A ``snapshot`` (step 0) restores the KvStore first and rides on the Ready's write. Nodes also
snapshot their own KvStore now and then, right after applying (a disk write; once durable,
``snapshot_taken`` and compaction of the stored log up to what the core returns). With a lagging
``applied()`` the snapshot can be ahead of what the core knows is applied: the core must not
compact past that (compaction-bound, checked after every compaction and install).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

import attrs

from univrs.raft import InitialState, RaftConfig, RaftNode
from univrs.raft.messages import Entry, Message, NodeId, SnapshotMeta
from univrs.raft.ready import Ready, Role
from univrs.sim.checker import Checker
from univrs.sim.clients import Workload
from univrs.sim.disk import SimDisk, Write
from univrs.sim.faults import TICK, Schedule
from univrs.sim.invariants import COMPACTION_BOUND, READY_CONTRACT, InvariantViolation
from univrs.sim.kv import KvStore, WriteDecoder
from univrs.sim.network import SimNetwork

NodeFactory = Callable[..., RaftNode]

# After the fault phase no write takes longer than this (units). Raft elects a leader only if
# a round of votes (two fsyncs and two message delays) is well within the election timeout
# (paper 5.6: broadcastTime << electionTimeout); a seed whose slowest disks take longer than
# the timeout can duel elections for ever, which says nothing about the core.
QUIET_DISK_MAX = 2 * TICK


@attrs.define(eq=False)
class SimNode:
    """One simulated server: the core object (None while down), its disk and state machine."""

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
    retired: bool = False  # removed from the cluster and stopped; back only with a new disk


class ReadyRuntime:
    """The Ready-handling half of Simulation (cluster.py), which provides these attributes."""

    seed: int
    config: RaftConfig | None
    node_factory: NodeFactory
    rng: random.Random
    checker: Checker
    net: SimNetwork
    workload: Workload
    schedule: Schedule
    decoder: WriteDecoder
    trace: Any
    now: int
    snapshots: int
    quiet: bool
    _heap: list[tuple[int, int, Callable[[Any], None], Any]]
    _seq: int

    def at(self, time: int, fn: Callable[[Any], None], arg: Any) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- start

    def start(self, sn: SimNode) -> None:
        """Build ``sn``'s core from its durable image (snapshot, hard state, log after it)."""
        disk = sn.disk
        initial: InitialState = disk.initial_state()
        rng = random.Random(f"{self.seed}/{sn.id}/{sn.incarnation}")
        sn.raft = raft = self.node_factory(sn.id, config=self.config, rng=rng, initial=initial)
        sn.kv = KvStore()
        if disk.snapshot is not None:
            meta, data = disk.snapshot
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

    # ----------------------------------------------------------------- Ready handling

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
            chk.observe_snapshot(
                nid, meta.index, meta.term, durable=False, membership=meta.membership
            )
            sn.kv.restore(install.data, meta.index, meta.term, meta.membership)
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
                if self.quiet:
                    delay = min(delay, QUIET_DISK_MAX)
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
            self._check_compaction(sn)
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
        config_of = self.decoder.config_of
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
            kv.apply(e, w, config_of(e))
            waiting = acks.pop(e.index, None)
            if waiting:
                self.workload.on_applied(sn, e, waiting)
        p = self.schedule.profile
        every = p.snap_every
        if every and kv.applied - sn.snap_at >= every:
            self._take_snapshot(sn)
        if p.apply_lag:
            lag = int(self.rng.random() * p.apply_lag)
            self.at(self.now + lag, self._report_applied, (sn, sn.incarnation, kv.applied))
        else:
            assert sn.raft is not None
            sn.raft.applied(kv.applied)

    def _report_applied(self, arg: tuple[SimNode, int, int]) -> None:
        """The apply loop tells the core how far it got (``Profile.apply_lag``)."""
        sn, incarnation, index = arg
        if sn.incarnation != incarnation or sn.raft is None:
            return
        if sn.paused:
            sn.backlog.append((self._report_applied, arg))
            return
        sn.raft.applied(index)
        self.drain(sn)

    def _take_snapshot(self, sn: SimNode) -> None:
        """Snapshot the state machine now; the core hears of it once the write is durable."""
        kv = sn.kv
        sn.snap_at = kv.applied
        self.snapshots += 1
        meta = SnapshotMeta(index=kv.applied, term=kv.applied_term, membership=kv.config)
        p = self.schedule.profile
        delay = (p.disk_min + int(self.rng.random() * (p.disk_max - p.disk_min + 1))) * (
            sn.disk.speed * sn.disk.slow_factor
        )
        if self.quiet:
            delay = min(delay, QUIET_DISK_MAX)
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

    def _check_compaction(self, sn: SimNode) -> None:
        """The core never drops log entries it has not applied and committed (dissertation
        5.1): ``first_index - 1 <= min(applied, commit)``. The log's start moves only when the
        core compacts (``snapshot_taken``) or installs a snapshot, so it is checked then."""
        assert sn.raft is not None
        st = sn.raft.status()
        if st.first_index - 1 > min(st.applied, st.commit):
            raise InvariantViolation(
                COMPACTION_BOUND,
                f"{sn.id} compacted its log up to {st.first_index - 1}, past what it applied "
                f"({st.applied}) or committed ({st.commit})",
            )

    # ----------------------------------------------------------------- network, disk, clock

    def _send(self, m: Message) -> None:
        for d in self.net.delays(m.src, m.dst):
            self._seq += 1
            heapq.heappush(self._heap, (self.now + d, self._seq, self._deliver, m))

    def _deliver(self, m: Message) -> None:
        sn = self._node(m.dst)
        raft = sn.raft
        if raft is None or self.net.is_blocked(m.src, m.dst):
            return
        if sn.paused:
            sn.backlog.append((self._deliver, m))
            return
        self.trace.append((self.now, "recv", m))
        raft.step(m)
        self.drain(sn)

    def _node(self, nid: NodeId) -> SimNode:
        raise NotImplementedError

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
        if w.hard_state is not None:
            raft.persisted_hard_state(w.hard_state)
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
            self._check_compaction(sn)
            sn.disk.compact(upto)
        self.drain(sn)

    def _tick(self, sn: SimNode) -> None:
        self.at(self.now + sn.period, self._tick, sn)
        raft = sn.raft
        if raft is None or sn.paused:
            return
        raft.tick()
        self.drain(sn)
