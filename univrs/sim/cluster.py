"""A deterministic simulation of a Raft cluster in one process, driven by one seed.

Theory of operation. Simulated time is an integer count of *units*, ``TICK`` units per tick.
One heap of events keyed by (time, seq) drives everything: each node's ticks (every node has its
own phase, and a slow-clock fault stretches its period), message deliveries, disk-write
completions, client steps (once per tick), operator steps (once per tick, in seeds with
membership changes) and faults. Nothing reads a wall clock and every random choice comes from
``random.Random(seed)`` (nodes get their own RNG derived from the seed and their process number),
so a seed replays exactly.

Each node's Ready batches are handled as univrs/raft/ready.py demands (runtime.py). The cluster
starts with ``n_nodes`` voters bootstrapped from the same CONFIG entry, plus the seed's spare
nodes, which start with empty disks and no configuration, like a node waiting to be joined.
The operator (membership.py) adds, promotes and removes nodes through the leader.

A crash drops the node object, its pending writes and its input backlog; a restart builds a new
node from the durable image (hard state and log, ``applied=0``, or the newest stored snapshot
and the log after it): the state machine is rebuilt by re-applying the committed entries the
new node hands back. A node the operator removed is stopped for good (``retire``); it comes
back only with an empty disk (``wipe``), when the operator adds it again.

The Checker (checker.py) sees every change and raises InvariantViolation at once; after the
fault phase every fault heals and the run must reach liveness within ``quiet_ticks``: a final
write is acknowledged and every member of the committed configuration applies it.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from univrs.raft import RaftConfig, RaftNode, bootstrap_state
from univrs.raft.interpreter import WriteQueue
from univrs.raft.messages import EntryKind, Membership, NodeId
from univrs.raft.ready import Role
from univrs.runtime.proposals import PendingProposals
from univrs.sim.api import SimApi
from univrs.sim.checker import Checker
from univrs.sim.clients import Workload
from univrs.sim.disk import SimDisk
from univrs.sim.faults import TICK, Schedule, draw_schedule
from univrs.sim.forger import Forger
from univrs.sim.injector import FaultInjector
from univrs.sim.invariants import CORE_EXCEPTION, LIVENESS, InvariantViolation
from univrs.sim.kv import BATCH_MARK, KvStore, WriteDecoder
from univrs.sim.membership import Operator, address
from univrs.sim.network import SimNetwork
from univrs.sim.node import NodeFactory, SimNode, incarnation_id
from univrs.sim.rollback import MODES as ROLLBACK_MODES
from univrs.sim.rollback import Rollbacks
from univrs.sim.runtime import ReadyRuntime
from univrs.sim.statestore import LOSE_UNSYNCED, SimStateDirs

__all__ = ["SIM_RAFT_CONFIG", "SimNode", "SimStats", "Simulation"]

# The Raft tuning the simulation runs with (ticks); message latency is 0.1 to 3 ticks.
SIM_RAFT_CONFIG = RaftConfig(heartbeat_ticks=3, election_ticks_min=10, election_ticks_max=20)

# Lease mode: read leases on with a drift bound of 2 ticks (a lease of 10 - 1 - 2 = 7 ticks).
# A lease is safe while lease * P_leader <= (election_ticks_min - 1) * P_follower for the clock
# periods P (univrs/raft/ready.py ``lease_ticks``): 7 * P_l <= 9 * P_f, i.e. P_l / P_f <= 1.28.
# "within": every node's clock period is drawn from 9..11 units (TICK = 10: +-10 %, a ratio of
# at most 1.22), and a paused or starved node catches its ticks up (runtime.py ``sync_clock``);
# "beyond": from 7..13 (a ratio up to 1.86, past the bound), and a pause or a slow-clock
# fault loses ticks (the clock stops while the process does: what leases cannot survive).
LEASE_DRIFT_TICKS = 2
# "mixed" (s14-audit): clocks as "within", and one node (``Simulation.lease_off``) runs read
# leases off: its vote hold is the ordinary rule's, which the leader's lease gate must see.
LEASE_CLOCK_PERIODS = {"within": (9, 11), "beyond": (7, 13), "mixed": (9, 11)}
LEASE_READ_SHARE = 0.7  # of the reads a client sends, in lease mode, this many are lease reads


@attrs.frozen(kw_only=True)
class SimStats:
    """What one run did, for -v output and tests."""

    seed: int
    ticks: int
    elections: int
    max_term: int
    committed: int
    writes_acked: int
    writes_conflict: int
    writes_unknown: int  # keyless writes whose outcome the client never learned
    reads_served: int
    reads_dropped: int
    crashes: int
    faults: int
    messages: int
    dropped: int
    snapshots: int  # snapshots taken
    installs: int  # snapshots installed from a leader
    config_changes: int = 0  # membership changes the operator saw committed
    leader_removals: int = 0  # of which removed the node that led when planned
    rejoins: int = 0  # removed nodes added again (with an empty disk)
    diverged: int = 0  # batches given up for a different one under a new leader
    repairs: int = 0  # wiped members replaced by their new incarnation
    replaced: int = 0  # members replaced by other nodes
    refused: int = 0  # messages refused: the sender was not the incarnation listed
    forwards: int = 0  # writes a follower's API forwarded to the leader
    covered: int = 0  # pending proposals a snapshot install covered (outcome unknown)
    forged: int = 0  # forged messages handed to cores (forger.py)
    forged_refused: int = 0  # of which the core refused (counted in its Status.refused)
    lease_reads: int = 0  # lease reads issued (lease mode; checked like every read)
    lease_gated: int = 0  # "mixed": lease reads the leader's lease gate made ReadIndex reads
    batch_entries: int = 0  # committed entries carrying several writes (api.py ``_pack``)
    batched_writes: int = 0  # the writes they carry
    state_resumes: int = 0  # LMDB state: starts that resumed from the env past the snapshot
    state_rollbacks: int = 0  # LMDB state: crashes that lost the env's unsynced commits
    rollbacks: int = 0  # older copies of data dirs put back (rollback.py)
    fenced_copies: int = 0  # processes fenced as an older copy (a peer refused their start)
    acks_later: int = 0  # acknowledgements left for their leader's next input (base.py)


@attrs.define(eq=False)
class Simulation(ReadyRuntime):
    """One seeded run; ``run()`` returns SimStats or raises InvariantViolation."""

    seed: int
    n_nodes: int = 5  # initial voters (spare nodes come on top)
    ticks: int = 2000
    quiet_ticks: int = 400
    node_factory: NodeFactory = RaftNode
    # Tell every core its own incarnation (``RaftNode(incarnation=...)``). False: the cores do
    # not know it, as before issue 10, and may campaign as an old incarnation of their id.
    core_incarnation: bool = True
    # Refuse a peer whose incarnation differs from the listed one even when the listing is
    # older than the peer's own binding (the transport's first rule, which locked a lagging
    # node out of a replaced leader; the transport now lets the older configuration yield).
    strict_incarnations: bool = False
    # An attacker forges messages from a made-up peer and under a real id with a wrong
    # incarnation (forger.py), with its own RNG: the rest of a seed is the same without it.
    forgeries: bool = True
    # The API's pending proposals (a mutant may break their outcome rules).
    proposals_factory: Callable[[], PendingProposals[Any]] = PendingProposals
    # Leaders pack concurrent writes into batch entries (api.py ``_pack``, with its own RNG:
    # the rest of a seed is the same without it); False: one entry per write.
    batch_entries: bool = True
    # The state machine of each node (a mutant may break its revision rules).
    kv_factory: Callable[[], KvStore] = KvStore
    config: RaftConfig | None = None  # None: SIM_RAFT_CONFIG with this seed's snapshot knobs
    # The cores' ``RaftConfig.lazy_commit_notice_bytes``: 0 (the core's default, with which the
    # pinned seeds were found) sends every commit at once; nodes run 1024 (config/model.py):
    # a small commit rides on the next append or goes at the next tick.
    commit_notice_bytes: int = 0
    # The cores' ``RaftConfig.unlisted_leaders`` (with TLS on, without off): None draws it per
    # seed, half the seeds each way, with its own RNG (the rest of a seed is the same).
    unlisted_leaders: bool | None = None
    trace_len: int = 40
    # Read leases (RaftConfig.read_lease): "off", or on with every node's clock drifting
    # "within" or "beyond" the configured bound (LEASE_CLOCK_PERIODS). Clocks and lease reads
    # draw from their own RNG: with "off" a seed runs exactly as before leases existed.
    lease: str = "off"
    # "mixed": the leader's lease gate (univrs/runtime/capabilities.py ``lease_gate``) on
    # lease reads; False plays the runtime before s14-audit, which let the lease confirm them
    # whatever the members' settings.
    lease_gate: bool = True
    # Where each node's state machine lives: "memory", or "lmdb" (statestore.py: persisted in
    # an LMDB env per data dir, resumed from it at a restart, a crash losing its unsynced
    # commits half the time). Its RNG is its own: with "memory" a seed runs as before.
    state_backend: str = "memory"
    # The bootstrap configuration binds no member to an incarnation, as the product's does
    # until the leader's binding change, which the operator makes as its first batch (in
    # seeds without membership changes they stay unbound for the whole run). False (the
    # default, and every pinned seed): the simulator binds them from the start. The cores
    # hold such a member to the first incarnation they take (gate.py ``_maybe_pin``); wipes
    # spare the bootstrap members, and a removed bootstrap id is never added again
    # (membership.py ``unbound_ids``: a member lagging at the bootstrap entry lists them
    # unbound for good).
    unbound_bootstrap: bool = False
    # With unbound_bootstrap: a wipe may hit a bootstrap member once the operator's
    # configuration binds it (False, the default: never). A member whose log still ends at
    # the bootstrap entry then hears the wiped data dir under an unbound id; its durable pin
    # refuses it if it ever took a message from the old incarnation, nothing does if it never
    # did (docs/security.md), so sweeps keep it off; tests turn it on for pinned seeds.
    wipe_bootstrap_members: bool = False
    # Rollback faults (rollback.py): "off" (the default: a seed runs as before), "checked"
    # (peers refuse an older copy of a data dir by its start counter, the fix) or "unchecked"
    # (the code before it). Their RNG is their own.
    rollback: str = "off"

    rng: random.Random = attrs.field(init=False)
    node_ids: list[NodeId] = attrs.field(init=False)  # every node: initial voters and spares
    nodes: dict[NodeId, SimNode] = attrs.field(init=False)
    lease_off: str | None = attrs.field(default=None, init=False)  # "mixed": leases off here
    lease_gated: int = attrs.field(default=0, init=False)  # lease reads the gate turned away
    membership: Membership = attrs.field(init=False)  # the bootstrap configuration
    checker: Checker = attrs.field(init=False)
    net: SimNetwork = attrs.field(init=False)
    workload: Workload = attrs.field(init=False)
    api: SimApi = attrs.field(init=False)
    injector: FaultInjector = attrs.field(init=False)
    forger: Forger | None = attrs.field(init=False, default=None)
    operator: Operator | None = attrs.field(init=False, default=None)
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
    _read_origins: dict[tuple[NodeId, int, NodeId, int, int], deque[int]] = attrs.field(
        init=False, factory=dict
    )
    _seq: int = 0
    state_dirs: SimStateDirs | None = attrs.field(init=False, default=None)
    state_rng: random.Random = attrs.field(init=False)
    state_resumes: int = attrs.field(init=False, default=0)
    state_rollbacks: int = attrs.field(init=False, default=0)
    rollbacks: Rollbacks | None = attrs.field(init=False, default=None)
    start_records: bool = attrs.field(init=False, default=False)
    start_check: bool = attrs.field(init=False, default=False)
    fenced_copies: int = attrs.field(init=False, default=0)
    acks_later: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if not 3 <= self.n_nodes <= 7:
            raise ValueError(f"the simulator runs 3 to 7 nodes, not {self.n_nodes}")
        if self.state_backend not in ("memory", "lmdb"):
            raise ValueError(f"state_backend must be memory or lmdb, not {self.state_backend!r}")
        self.state_rng = random.Random(f"{self.seed}/state")
        if self.rollback not in ROLLBACK_MODES:
            raise ValueError(f"rollback must be one of {ROLLBACK_MODES}, not {self.rollback!r}")
        if self.rollback != "off":
            if self.state_backend != "memory":
                raise ValueError("rollback faults copy in-memory state only")
            self.start_records, self.start_check = True, self.rollback == "checked"
            rng = random.Random(f"{self.seed}/rollback")
            self.rollbacks = Rollbacks(sim=self, checked=self.start_check, rng=rng)
        self.rng = random.Random(self.seed)
        self.trace = deque(maxlen=self.trace_len)
        self.schedule = draw_schedule(self.rng, self.ticks, self.n_nodes)
        unlisted = self.unlisted_leaders
        if unlisted is None:
            unlisted = random.Random(f"{self.seed}/unlisted").random() < 0.5
        self.schedule = attrs.evolve(
            self.schedule, profile=attrs.evolve(self.schedule.profile, unlisted_leaders=unlisted)
        )
        p = self.schedule.profile
        voters = [f"n{i + 1}" for i in range(self.n_nodes)]
        spares = [f"n{i + 1}" for i in range(self.n_nodes, self.n_nodes + p.spares)]
        self.node_ids = voters + spares
        incarnations = {n: incarnation_id(n, 0) for n in self.node_ids}
        self.membership = Membership(
            voters=frozenset(voters),
            addresses=tuple((n, address(n)) for n in voters),
            incarnations=()
            if self.unbound_bootstrap
            else tuple((n, incarnations[n]) for n in voters),
        )
        self.checker = Checker(
            voters=voters,
            spares=spares,
            boot=self.membership,
            incarnations=incarnations,
            strict=self.strict_incarnations,
            guarded=self.core_incarnation,
        )
        self.net = SimNetwork(
            rng=self.rng,
            drop=p.drop,
            dup=p.dup,
            lat_min=p.lat_min,
            lat_max=p.lat_max,
            spike=p.spike,
        )
        if self.lease not in ("off", *LEASE_CLOCK_PERIODS):
            raise ValueError(f"lease must be off, within, beyond or mixed, not {self.lease!r}")
        if self.config is None:
            self.config = attrs.evolve(
                SIM_RAFT_CONFIG,
                snapshot_chunk_bytes=p.snap_chunk,
                snapshot_window=p.snap_window,
                # Lease mode runs the cores as the runtime does: PreVote and CheckQuorum on
                # (leases need CheckQuorum; without PreVote, drifting clocks let a lagging
                # node's campaigns depose every leader for hundreds of ticks, 5 nodes seed 2).
                # Plaintext mode (unlisted_leaders off) runs PreVote too, as every node does
                # (the runtime never turns it off): the vouch a lagging member needs comes in
                # a rejected pre-vote; a real candidacy outruns the term any vouch can name
                # (3 nodes, seed 9, with PreVote off: a candidate for ever; docs/security.md).
                pre_vote=p.pre_vote or self.lease != "off" or not p.unlisted_leaders,
                check_quorum=p.check_quorum or self.lease != "off",
                election_ticks_max=p.election_max,
                unlisted_leaders=p.unlisted_leaders,
                lazy_commit_notice_bytes=self.commit_notice_bytes,
                # The nodes' setting (NodeConfig.raft_config) runs all three: lazy notices,
                # skipped heartbeats to busy followers and narrow read rounds. The core's
                # defaults (none) keep the schedules the pinned seeds were found with.
                skip_busy_heartbeats=self.commit_notice_bytes > 0,
                narrow_read_rounds=self.commit_notice_bytes > 0,
            )
            if self.lease != "off":
                self.config = attrs.evolve(
                    self.config, read_lease=True, lease_drift_ticks=LEASE_DRIFT_TICKS
                )
        self.api = SimApi(
            sim=self,
            deadline=p.api_deadline,
            leader_wait=30 * TICK,
            pack_rng=random.Random(f"{self.seed}/batch") if self.batch_entries else None,
        )
        self.workload = Workload(
            sim=self, rng=self.rng, p_op=p.load, p_anywhere=p.read_anywhere, n_clients=p.clients
        )
        lease_rng = random.Random(f"{self.seed}/lease")
        if self.lease != "off":
            self.workload.lease_rng = lease_rng
            self.workload.p_lease = LEASE_READ_SHARE
        self.injector = FaultInjector(sim=self)
        if self.forgeries:
            self.forger = Forger(rng=random.Random(f"{self.seed}/forger"))
        boot = bootstrap_state(self.membership)
        self.nodes = {}
        for nid, speed in zip(self.node_ids, p.disk_speed, strict=True):
            inc = incarnations[nid]
            if nid in spares:
                self.nodes[nid] = SimNode(id=nid, disk=SimDisk(speed=speed, incarnation=inc))
                continue
            disk = SimDisk(
                hard_state=boot.hard_state, entries=list(boot.entries), speed=speed, incarnation=inc
            )
            self.nodes[nid] = SimNode(id=nid, disk=disk)
            self.checker.load(nid, boot.entries)
        if self.lease != "off":
            lo, hi = LEASE_CLOCK_PERIODS[self.lease]
            for nid in self.node_ids:
                self.nodes[nid].clock_period = lease_rng.randint(lo, hi)
        if self.lease == "mixed":
            self.lease_off = lease_rng.choice(sorted(self.node_ids))
        if p.member_every:
            self.operator = Operator(
                sim=self,
                rng=self.rng,
                every=p.member_every,
                min_voters=p.min_voters,
                base=self.membership,
                unbound_ids=frozenset(voters) if self.unbound_bootstrap else frozenset(),
            )

    # ----------------------------------------------------------------- event queue

    def run(self) -> SimStats:
        """Run the fault phase, then the quiet phase until liveness holds (or fails)."""
        if self.state_backend == "lmdb":
            self.state_dirs = SimStateDirs()
        try:
            return self._run()
        finally:
            if self.state_dirs is not None:
                self.state_dirs.close()

    def _run(self) -> SimStats:
        end_faults = self.ticks * TICK
        deadline = end_faults + self.quiet_ticks * TICK
        for sn in self.nodes.values():
            self.start(sn)
            self.at(self.rng.randrange(TICK), self._tick, sn)
        for f in self.schedule.faults:
            self.at(f.at * TICK, self.injector.fire, f)
        self.at(end_faults, self.injector.heal_all, None)
        if self.rollbacks is not None:
            self.rollbacks.schedule()
        self.at(0, self._client_step, None)
        if self.operator is not None:
            self.at(TICK // 2, self._operator_step, None)
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
        op = self.operator
        batches = [
            e
            for e in self.checker.committed_entries
            if e is not None and e.kind is EntryKind.NORMAL and e.data.startswith(BATCH_MARK)
        ]
        return SimStats(
            seed=self.seed,
            ticks=self.now // TICK,
            elections=len(self.checker.leaders),
            max_term=max(self.checker.leaders, default=0),
            committed=self.checker.commit_index(),
            writes_acked=w.writes_acked,
            writes_conflict=w.conflicts,
            writes_unknown=w.unknown,
            reads_served=w.reads_served,
            reads_dropped=w.reads_dropped,
            crashes=self.crashes,
            faults=self.injector.fired,
            messages=self.net.sent,
            dropped=self.net.dropped,
            snapshots=self.snapshots,
            installs=sum(sn.installs for sn in self.nodes.values()),
            config_changes=op.committed if op is not None else 0,
            leader_removals=op.leader_removals if op is not None else 0,
            rejoins=op.rejoins if op is not None else 0,
            diverged=op.diverged if op is not None else 0,
            repairs=op.repairs if op is not None else 0,
            replaced=op.replaced if op is not None else 0,
            refused=self.net.refused,
            forwards=self.api.forwards,
            covered=self.api.covered,
            forged=self.forger.sent if self.forger is not None else 0,
            forged_refused=self.forger.refused if self.forger is not None else 0,
            batch_entries=len(batches),
            batched_writes=sum(len(self.decoder.writes_of(e)) for e in batches),
            lease_reads=w.lease_reads,
            lease_gated=self.lease_gated,
            state_resumes=self.state_resumes,
            state_rollbacks=self.state_rollbacks,
            rollbacks=self.rollbacks.done if self.rollbacks is not None else 0,
            fenced_copies=self.fenced_copies,
            acks_later=self.acks_later,
        )

    def _client_step(self, _: None) -> None:
        self.at(self.now + TICK, self._client_step, None)
        leader = self.current_leader()
        if leader is not None and leader.raft is not None and not leader.paused:
            st = leader.raft.status()
            if st.role is Role.LEADER:
                self.checker.check_progress(leader.id, st.term, st.peers)
        w = self.workload
        w.step(self.now)
        if w.final_acked_at is not None:
            target = w.final_acked_at
            members = self.checker.committed_config().members
            nodes = self.nodes
            if all(
                (
                    nodes[n].raft is not None
                    and (nodes[n].kv.revision >= target or self._orphaned(nodes[n], members))
                )
                or (self.rollbacks is not None and self.rollbacks.excused(n))
                for n in members
            ):
                self.done = True

    def _orphaned(self, sn: SimNode, members: frozenset[NodeId]) -> bool:
        """Without ``unlisted_leaders`` (plaintext): does ``sn``'s own configuration list no
        other member of the cluster (``members``), every one it lists removed since? Then no
        member it lists can vouch for the leader, and it cannot tell that leader from a
        made-up id: only an operator brings it back (re-join it, or TLS; docs/security.md).
        The liveness check excuses such a member, and only it."""
        if self.config is None or self.config.unlisted_leaders or sn.raft is None:
            return False
        listed = sn.raft.status().membership.members
        if sn.id not in listed:
            return False  # not in its own configuration (a joiner): it hears any leader
        return not any(m in members for m in listed if m != sn.id)

    def _operator_step(self, _: None) -> None:
        self.at(self.now + TICK, self._operator_step, None)
        assert self.operator is not None
        self.operator.step(self.now)

    # ----------------------------------------------------------------- node life

    def current_leader(self) -> SimNode | None:
        """The live node that most recently announced leadership of the highest term."""
        best: SimNode | None = None
        for sn in self.nodes.values():
            live_leader = sn.raft is not None and sn.role is Role.LEADER
            if live_leader and (best is None or sn.term > best.term):
                best = sn
        return best

    def client_targets(self) -> list[NodeId]:
        """The nodes a client may contact: the members of the committed configuration."""
        members = self.checker.committed_config().members
        return [n for n in self.node_ids if n in members] or self.node_ids

    def fault_targets(self) -> list[NodeId]:
        """The nodes a fault may hit: every node but those stopped for good."""
        return [n for n in self.node_ids if not self.nodes[n].retired]

    def crash(self, sn: SimNode) -> None:
        """Kill ``sn``: its core, pending writes, input backlog and client attempts are lost."""
        self.crashes += 1
        self._stop(sn)

    def _stop(self, sn: SimNode) -> None:
        sn.raft = None
        sn.later = None  # (in the dead process's memory)
        state = sn.disk.state  # the process died; half the time with its machine
        if state is not None and state.crash(self.state_rng.random() < LOSE_UNSYNCED):
            self.state_rollbacks += 1
        sn.paused = False
        sn.pause_fault = 0
        sn.backlog.clear()
        sn.life += 1
        sn.writes = WriteQueue()
        sn.writing = None
        self.api.on_crash(sn)
        sn.reads = {}
        sn.role, sn.leader = None, None
        self.checker.observe_crash(sn.id)
        self.workload.on_crash(sn)

    def retire(self, sn: SimNode) -> None:
        """Stop ``sn`` for good: the operator removed it (it returns only through ``wipe``)."""
        if sn.raft is not None:
            self._stop(sn)
        sn.retired = True
        sn.down_fault = 0
        self.trace.append((self.now, "retire", sn.id))
        self.checker.observe_retire(sn.id)

    def wipe(self, sn: SimNode) -> None:
        """Give ``sn`` a new, empty disk and start it, waiting to be joined (a node id never
        rejoins with stale state)."""
        if sn.raft is not None:
            self._stop(sn)
        sn.wipes += 1
        if self.rollbacks is not None:
            self.rollbacks.copies.discard(sn.id)  # replaced: a new data dir, a new incarnation
        sn.disk = SimDisk(speed=sn.disk.speed, incarnation=incarnation_id(sn.id, sn.wipes))
        sn.retired = False
        sn.down_fault = 0
        sn.slow_disk.clear()
        sn.disk.slow_factor = 1
        self.trace.append((self.now, "wipe", sn.id))
        self.checker.observe_wipe(sn.id, sn.disk.incarnation)
        self.start(sn)

    def restart(self, arg: tuple[SimNode, int]) -> None:
        """Restart ``sn`` from its durable image, if it is still down from crash fault ``fid``."""
        sn, fid = arg
        if sn.down_fault != fid or sn.raft is not None or sn.retired:
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
        members = self.checker.committed_config()
        parts = []
        for sn in self.nodes.values():
            what = "voter" if sn.id in members.voters else "learner"
            if sn.id not in members.members:
                what = "retired" if sn.retired else "not a member"
            if sn.raft is None:
                parts.append(f"{sn.id} ({what}): down")
                continue
            st = sn.raft.status()
            parts.append(
                f"{sn.id} ({what}): {st.role.value} term {st.term} commit {st.commit} applied "
                f"{sn.kv.applied} last {st.last_index}"
            )
        done = (
            "the final write was not acknowledged"
            if w.final_acked_at is None
            else f"not every member applied revision {w.final_acked_at}"
        )
        raise InvariantViolation(
            LIVENESS,
            f"{self.quiet_ticks} ticks after all faults healed, {done}; " + "; ".join(parts),
        )

    # ----------------------------------------------------------------- reporting

    def format_trace(self) -> list[str]:
        """The last events before the end of the run, oldest first."""
        lines = []
        for t, who, what in self.trace:
            lines.append(f"  t={t / TICK:8.1f} {who:>8} {what}")
        return lines
