"""The simulated runtime of each node: Ready handling, storage, applying and snapshots.

After every input to a node (tick, message, persisted, applied, proposal, read) the simulator
drains the node's Ready batches through the one interpreter of the Ready contract
(univrs/raft/interpreter.py ``execute``, the same the Trio driver runs), whose effects here are:

1. a persist job goes on the process's ``WriteQueue`` (the driver's writer uses the same one):
   one item at a time is written, durable after a random delay; consecutive Ready writes are
   merged (group commit) and a commit-only hard state waits for the next write that syncs, as
   in the real writer. A job that persists nothing still waits for every earlier write;
2. ``messages`` are sent at once through the simulated network;
3. when a write completes: the durable image changes, its ``messages_after_persist`` are sent
   and what it made durable is reported (``report_persisted``);
4. ``committed`` entries are applied to the node's KvStore, then ``applied(index)`` is reported:
   at once, or (``Profile.apply_lag``) a little later, as a runtime whose apply loop runs
   apart from the core would;
5. ``reads`` are served from the KvStore, ``dropped_reads`` make the client retry.
A ``snapshot`` (step 0) restores the KvStore first and queues its storage ahead of the Ready's
write. Nodes also snapshot their own KvStore now and then, right after applying (a queue item
in FIFO order with the writes; once durable, ``snapshot_taken`` and compaction of the stored
log up to what the core returns). With a lagging ``applied()`` the snapshot can be ahead of what
the core knows is applied: the core must not compact past that (compaction-bound, checked after
every compaction and install).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from univrs.raft import InitialState, RaftConfig, RaftNode
from univrs.raft.interpreter import (
    InstallJob,
    MergedWrite,
    PersistJob,
    WriteQueue,
    execute,
    installed,
    report_persisted,
)
from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotMeta,
)
from univrs.raft.ready import Ready, Role, SnapshotInstall, SoftState
from univrs.runtime.proposals import PendingProposals
from univrs.sim.api import Request, SimApi
from univrs.sim.checker import Checker
from univrs.sim.clients import ReadRecord, Workload
from univrs.sim.disk import SimDisk, Taken
from univrs.sim.faults import TICK, Schedule
from univrs.sim.forger import Forger
from univrs.sim.invariants import (
    COMPACTION_BOUND,
    CORE_INVARIANT,
    FORGERY_REFUSED,
    LINEARIZABLE_READ,
    READY_CONTRACT,
    STATE_DURABLE,
    InvariantViolation,
)
from univrs.sim.kv import KvStore, WriteDecoder
from univrs.sim.network import SimNetwork
from univrs.sim.statestore import SimStateDirs

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
    fx: NodeEffects | None = None  # the interpreter's effects for this process
    # The incarnation the node's current configuration binds each peer to (its transport
    # refuses a peer of another incarnation), that configuration's index, and that index again
    # if it binds this node to its own incarnation (else 0): refreshed, like the driver's
    # status, when a Ready carries a CONFIG entry, a truncation or a snapshot.
    listed: dict[NodeId, str] = attrs.field(factory=dict)
    foreign_answer: bool = False  # the message being handled answers an earlier process
    cfg_index: int = 0
    bound_at: int = 0
    # Fault rules active on this node, by fault id.
    slow_disk: dict[int, int] = attrs.field(factory=dict)
    slow_clock: dict[int, int] = attrs.field(factory=dict)
    snap_at: int = 0  # applied index of this node's newest snapshot (taken or installed)
    installs: int = 0  # snapshots installed from a leader (makes older own snapshots moot)
    down_fault: int = 0  # the crash fault this node waits to restart from (0: up)
    pause_fault: int = 0
    retired: bool = False  # removed from the cluster and stopped; back only with a new disk
    wipes: int = 0  # data dirs lost so far (the disk's incarnation counts them)
    # LMDB state backend: an installed snapshot is not in the state env yet (it replaces the
    # env once durable on the disk; commits wait until then, as the node's apply loop does).
    state_stale: bool = False


def incarnation_id(node: NodeId, wipes: int) -> str:
    """The incarnation id of ``node``'s data dir after ``wipes`` wipes (deterministic, so a
    seed replays; the real one is random)."""
    return f"{node}.{wipes}"


class ReadyRuntime:
    """The Ready-handling half of Simulation (cluster.py), which provides these attributes
    (and runs the event queue that ``at`` fills)."""

    seed: int
    config: RaftConfig | None
    node_factory: NodeFactory
    core_incarnation: bool  # the cores know their own incarnation
    rng: random.Random
    checker: Checker
    net: SimNetwork
    workload: Workload
    api: SimApi
    operator: Any  # membership.Operator (the operator), or None
    injector: Any  # injector.FaultInjector
    forger: Forger | None  # forges messages the cores must refuse (forger.py)
    strict_incarnations: bool
    proposals_factory: Callable[[], PendingProposals[Any]]
    kv_factory: Callable[[], KvStore]
    # "memory", or "lmdb": each data dir's state machine persisted in LMDB (statestore.py).
    state_backend: str
    state_dirs: SimStateDirs | None
    state_rng: random.Random
    state_resumes: int  # starts that resumed from the state env past the stored snapshot
    schedule: Schedule
    decoder: WriteDecoder
    trace: Any
    now: int
    snapshots: int
    quiet: bool
    nodes: dict[NodeId, SimNode]
    lease: str  # "off", or read leases on with clocks drifting "within" or "beyond" the bound
    _heap: list[tuple[int, int, Callable[[Any], None], Any]]
    _seq: int
    # ReadIndex requests a leader (id, process) received, by (reader, wire id, term): the
    # processes of the reader that sent them, oldest first.
    _read_origins: dict[tuple[NodeId, int, NodeId, int, int], deque[int]]

    def at(self, time: int, fn: Callable[[Any], None], arg: Any) -> None:
        """Call ``fn(arg)`` at simulated ``time`` (after every event already due then)."""
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, fn, arg))

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
        sn.raft = raft = self.node_factory(
            sn.id,
            config=self.config,
            rng=rng,
            initial=initial,
            incarnation=sn.disk.incarnation if self.core_incarnation else None,
            snapshot_check=KvStore.check_snapshot,
        )
        sn.kv = kv if kv is not None else self.kv_factory()
        sn.state_stale = False
        sn.writes = WriteQueue()
        sn.writing = None
        sn.fx = NodeEffects(self, sn)
        sn.serving = {}
        sn.batch = []
        sn.proposals = self.proposals_factory()
        sn.reads = {}
        sn.next_ctx = 1
        sn.clock_origin = self.now
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

    # ----------------------------------------------------------------- Ready handling

    def drain(self, sn: SimNode) -> None:
        """Hand every pending Ready of ``sn`` to the simulated runtime, then check the core's
        own invariants (``RaftNode.problems``; called after every input to a node)."""
        raft = sn.raft
        if raft is None:
            return
        # Handling a Ready feeds the node new input only through applied(); without committed
        # entries nothing new can be pending, so one has_ready() per batch is enough.
        while raft.has_ready():
            rd = raft.ready()
            self._handle_ready(sn, rd)
            if not rd.committed and rd.snapshot is None:
                break
        problems = raft.problems()
        if problems:  # an explicit raise: the check survives python -O
            raise InvariantViolation(CORE_INVARIANT, "; ".join(problems))

    def _handle_ready(self, sn: SimNode, rd: Ready) -> None:
        # What the checker mirrors comes first, in the Ready's own order (a snapshot resets the
        # log before its entries; the commit is judged by the role held before this Ready).
        nid = sn.id
        chk = self.checker
        hs = rd.hard_state
        install = rd.snapshot
        if install is not None:
            meta = install.meta
            chk.observe_snapshot(
                nid, meta.index, meta.term, durable=False, membership=meta.membership
            )
        if hs is not None:
            chk.observe_term(nid, hs.term)
        if rd.truncate_from is not None or rd.entries:
            chk.observe_issued(nid, rd.truncate_from, rd.entries, rd.soft_state is None)
        if hs is not None:
            chk.observe_commit(
                nid, hs.commit, leading=rd.soft_state is None and sn.role is Role.LEADER
            )
        config = _has_config(rd.entries)
        if config and sn.role is Role.LEADER and rd.soft_state is None:
            chk.observe_leader_config(nid)
        assert sn.fx is not None
        execute(rd, sn.fx)
        if install is not None or rd.truncate_from is not None or config:
            self._refresh_listing(sn)

    def _refresh_listing(self, sn: SimNode) -> None:
        m, index = self.checker.current_config(sn.id)
        sn.listed = dict(m.incarnations)
        sn.cfg_index = index
        sn.bound_at = index if sn.listed.get(sn.id) == sn.disk.incarnation else 0

    def _submit(self, sn: SimNode, item: PersistJob | InstallJob | Taken) -> None:
        """Queue storage work; the disk works through the queue one item at a time."""
        sn.writes.submit(item)
        if sn.writing is None:
            self._next_write(sn)

    def _next_write(self, sn: SimNode) -> None:
        item = sn.writing = sn.writes.take()
        delay = 0
        if not isinstance(item, MergedWrite) or item.stores:
            disk = sn.disk
            p = self.schedule.profile
            delay = p.disk_min + int(self.rng.random() * (p.disk_max - p.disk_min + 1))
            delay *= disk.speed * disk.slow_factor
            if p.disk_stall and not self.quiet and self.rng.random() < p.disk_stall:
                delay += int(self.rng.random() * p.disk_tail)
            if self.quiet:
                delay = min(delay, QUIET_DISK_MAX)
        self.at(self.now + delay, self._disk_done, (sn, sn.life))

    def _apply(self, sn: SimNode, committed: tuple[Entry, ...]) -> None:
        kv = sn.kv
        chk = self.checker
        writes_of = self.decoder.writes_of
        config_of = self.decoder.config_of
        on_applied = self.api.on_applied
        state = None if sn.state_stale else sn.disk.state
        keys: set[str] = set()
        clients: set[int] = set()
        for e in committed:
            if e.index != kv.applied + 1:
                raise InvariantViolation(
                    READY_CONTRACT,
                    f"{sn.id} was handed entry {e.index} to apply after applying {kv.applied}",
                )
            ws = writes_of(e)
            outcomes = kv.apply(e, ws, config_of(e))
            chk.observe_apply(sn.id, e, ws, [effect for _, effect in outcomes] if ws else ())
            on_applied(sn, e.index, e.term, [result for result, _ in outcomes])
            if state is not None:
                for w in ws:
                    if w.key in kv.data:
                        keys.add(w.key)
                    if w.keyed:
                        clients.add(w.client)
        if state is not None and committed:
            state.commit(kv, keys, clients)  # one transaction per chunk, with its applied index
        p = self.schedule.profile
        every = p.snap_every
        if every and kv.applied - sn.snap_at >= every:
            self._take_snapshot(sn)
        if p.apply_lag:
            lag = int(self.rng.random() * p.apply_lag)
            self.at(self.now + lag, self._report_applied, (sn, sn.life, kv.applied))
        else:
            assert sn.raft is not None
            sn.raft.applied(kv.applied)

    def _report_applied(self, arg: tuple[SimNode, int, int]) -> None:
        """The apply loop tells the core how far it got (``Profile.apply_lag``)."""
        sn, life, index = arg
        if sn.life != life or sn.raft is None:
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
        self._submit(sn, Taken(meta=meta, data=kv.snapshot(), epoch=sn.installs))

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
        # A message carries its sender's incarnation and binding (the real hello does).
        if m.dst not in self.nodes:
            return  # an answer to the forger's made-up peer: nobody is there
        src = self.nodes[m.src]
        if self.injector.kill_on_read and isinstance(m, ReadIndexRequest):
            self.injector.on_forward_read(src)
        if src.listed:
            expect = src.listed.get(m.dst)
            if expect is not None:
                dst = self.nodes[m.dst]
                if expect != dst.disk.incarnation and not self._newer(dst.bound_at, src):
                    # The receiver refuses a hello that expects another incarnation of it.
                    self.net.refused += 1
                    return
        # Which process of the reader a ReadIndex request or answer belongs to (the checker's
        # own bookkeeping, not the core's): a request carries its sender's, an answer that of
        # the request it answers.
        tag = -1
        if isinstance(m, ReadIndexRequest):
            tag = src.life
        elif isinstance(m, ReadIndexResponse):
            waiting = self._read_origins.get((m.src, src.life, m.dst, m.ctx, m.term))
            if waiting:
                tag = waiting.popleft()
        arg = (m, src.disk.incarnation, src.bound_at, tag)
        for d in self.net.delays(m.src, m.dst):
            self._seq += 1
            heapq.heappush(self._heap, (self.now + d, self._seq, self._deliver, arg))

    def _newer(self, bound_at: int, sn: SimNode) -> bool:
        """Is a peer bound to its incarnation by a configuration newer than ``sn``'s (so
        ``sn``'s listing is stale, not the peer)? The strict rule never asks."""
        return bound_at > sn.cfg_index and not self.strict_incarnations

    def _deliver(self, arg: tuple[Message, str, int, int]) -> None:
        m, incarnation, bound_at, tag = arg
        sn = self.nodes[m.dst]
        raft = sn.raft
        if raft is None or self.net.is_blocked(m.src, m.dst):
            return
        if sn.paused:
            sn.backlog.append((self._deliver, arg))
            return
        listed = sn.listed.get(m.src) if sn.listed else None
        if listed is not None and listed != incarnation and not self._newer(bound_at, sn):
            # The transport refuses a peer whose incarnation is not the one the configuration
            # binds its id to (a wiped or replaced data dir is a stranger until replaced).
            self.net.refused += 1
            return
        self.trace.append((self.now, "recv", m))
        if tag >= 0:
            if isinstance(m, ReadIndexRequest):
                key = (m.dst, sn.life, m.src, m.ctx, m.term)
                self._read_origins.setdefault(key, deque()).append(tag)
            elif tag != sn.life:
                sn.foreign_answer = True  # answers a request of an earlier process of ours
        # The transport attests the sender's incarnation (the hello's), like the real one,
        # also for a sender let in for a newer binding (a claim the core must not trust).
        attested = incarnation
        raft.step(attrs.evolve(m, sender_incarnation=attested))
        self.drain(sn)
        sn.foreign_answer = False
        if self.forger is not None:
            if isinstance(m, AppendEntries | Heartbeat):
                self._forge(sn, m)
            elif isinstance(m, AppendEntriesResponse | HeartbeatResponse) and sn.raft is not None:
                self._hand_forgery(sn, self.forger.maybe_forge_ack(sn.raft, m))

    def _forge(self, sn: SimNode, heard: Message) -> None:
        """Maybe hand ``sn`` a forged message right after it heard ``heard`` (forger.py)."""
        raft = sn.raft
        assert raft is not None and self.forger is not None
        self._hand_forgery(sn, self.forger.maybe_forge(raft, heard))

    def _hand_forgery(self, sn: SimNode, forged: Message | None) -> None:
        """Step ``forged`` on ``sn``: the core must refuse it (count it in ``Status.refused``)
        and change nothing of its term, vote, role, leader, log or commit (forgery-refused)."""
        raft = sn.raft
        if forged is None or raft is None:
            return
        assert self.forger is not None
        self.forger.sent += 1
        self.trace.append((self.now, "forged", forged))
        st = raft.status()
        refused = st.refused_messages
        before = (st.term, st.vote, st.role, st.leader, st.last_index, st.last_term, st.commit)
        raft.step(forged)
        st = raft.status()
        after = (st.term, st.vote, st.role, st.leader, st.last_index, st.last_term, st.commit)
        if st.refused_messages > refused:
            self.forger.refused += 1
        if st.refused_messages == refused or after != before:
            raise InvariantViolation(
                FORGERY_REFUSED,
                f"{sn.id} took a forged {type(forged).__name__} from {forged.src} "
                f"(incarnation {forged.sender_incarnation}): "
                f"{'not refused' if st.refused_messages == refused else 'refused'}, "
                f"(term, vote, role, leader, last index, last term, commit) {before} -> {after}",
            )
        self.drain(sn)

    def _disk_done(self, arg: tuple[SimNode, int]) -> None:
        sn, life = arg
        if sn.life != life:
            return  # the write was lost in a crash
        if sn.paused:
            sn.backlog.append((self._disk_done, arg))
            return
        item = sn.writing
        sn.writing = None
        raft = sn.raft
        assert raft is not None and item is not None
        disk = sn.disk
        if isinstance(item, MergedWrite):
            disk.store(item)
            if item.truncate_from is not None or item.entries:
                self.checker.observe_durable(sn.id, item.truncate_from, item.entries)
            report = sn.writes.written(item)
            for m in item.after_persist:
                self._send(m)
            if report is not None:
                report_persisted(raft, report)
        elif isinstance(item, InstallJob):
            disk.install(item.meta, item.data)
            self.checker.observe_snapshot(sn.id, item.meta.index, item.meta.term, durable=True)
            if disk.state is not None and sn.state_stale:
                # The node's apply loop adopts the installed state once it is durable.
                disk.state.replace(sn.kv)
                sn.state_stale = False
            report_persisted(raft, installed(item))
        else:
            disk.store_taken(item)
            if item.epoch == sn.installs:
                # Our own snapshot is durable: hand it to the core, compact what it lets go.
                upto = raft.snapshot_taken(
                    item.meta, item.data, keep=self.schedule.profile.snap_keep
                )
                self._check_compaction(sn)
                if disk.state is not None:
                    disk.state.sync()  # the state is durable past the snapshot first
                disk.compact(upto)
        if not sn.writes.idle:
            self._next_write(sn)
        self.drain(sn)

    def _tick(self, sn: SimNode) -> None:
        if self.lease == "off":
            self.at(self.now + sn.period, self._tick, sn)
        else:  # the node's own clock rate, stretched by slow-clock faults
            self.at(self.now + sn.period * sn.clock_period // TICK, self._tick, sn)
        raft = sn.raft
        if raft is None or sn.paused:
            return
        if self.lease == "within":
            self.sync_clock(sn)
        else:  # "beyond": a tick per event, so a pause or a slow-clock fault loses ticks
            raft.tick()
            self.drain(sn)
        if self.forger is not None:
            self._hand_forgery(sn, self.forger.maybe_forge_answer(raft, sn.disk.pins_ever))

    def sync_clock(self, sn: SimNode) -> None:
        """Lease mode: feed ``sn``'s core every tick its clock says is due by now (the driver
        does this at every tick and before a lease read)."""
        raft = sn.raft
        if raft is None or self.lease != "within":
            return
        due = (self.now - sn.clock_origin) // sn.clock_period
        while sn.ticks_fed < due:
            sn.ticks_fed += 1
            raft.tick()
            self.drain(sn)


def _has_config(entries: tuple[Entry, ...]) -> bool:
    return any(e.kind is EntryKind.CONFIG for e in entries)


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
