"""The simulated operator: membership changes under the seed's faults (dissertation 4).

Theory of operation. Every so often (``Profile.member_every`` ticks on average) the operator
plans a *batch* of one or two changes from the last configuration it knows committed
(``base``): add one or two spare nodes as learners (with an address entry), promote caught-up
learners, remove one or two voters (sometimes the leader itself), remove a learner, or promote
one learner and remove a voter. It never plans below ``Profile.min_voters`` voters.

It drives the batch through whichever node leads (``Simulation.current_leader``), like the
``univrs cluster`` commands would: it proposes the first change not yet in the leader's log
(``RaftNode.propose_membership``) and then *tries* the next one at once. The real core refuses
that second proposal (``ProposalDropped``: one change at a time), so a batch runs one change
after the other; a mutant that lets two changes be in flight gets both. A refused or lost
proposal (``NotLeader``, ``ProposalDropped``, a new leader without the entry) is retried on
the next tick. A promotion waits until the learner is caught up (the leader's
``status().peers`` match within ``CATCH_UP`` entries of its last index); a learner that does
not catch up within ``GIVE_UP`` ticks is removed instead (an interrupted join, cleaned up).

A change is known committed when some node's state machine has applied a CONFIG entry after
``base`` with the configuration the change wants (the state machine only applies committed
entries). A removed node keeps running for a while (a few ticks, sometimes up to ``LINGER``),
then is stopped for good (*retired*); when the operator adds it again it first gets an empty
disk (a node id never rejoins with stale state), and only when that is safe (``_may_rejoin``).
Spare nodes that are not members are also wiped before they are added.

After the fault phase the operator plans nothing new and proposes nothing more: what is in the
logs commits or is dropped by the core, and removed nodes are retired.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import attrs

from univrs.errors import NotLeader, ProposalDropped
from univrs.raft.messages import Membership, NodeId
from univrs.raft.ready import Role, Status
from univrs.sim.faults import TICK
from univrs.sim.invariants import STATE_MACHINE_SAFETY, InvariantViolation

if TYPE_CHECKING:
    from univrs.sim.cluster import Simulation

CATCH_UP = 8  # a learner within this many entries of the leader's last index is caught up
GIVE_UP = 300  # ticks a learner may take to catch up before it is removed again
LINGER = 200  # a removed node runs on for up to this many ticks (mostly a few) after removal


def address(node: NodeId) -> str:
    """The simulated raft address of a node (the address entry of its configuration)."""
    return f"sim://{node}"


def with_learner(m: Membership, node: NodeId) -> Membership:
    """``m`` plus ``node`` as a learner, with its address."""
    return Membership(
        voters=m.voters,
        learners=m.learners | {node},
        addresses=tuple(sorted({*m.addresses, (node, address(node))})),
        api_addresses=m.api_addresses,
    )


def promoted(m: Membership, node: NodeId) -> Membership:
    """``m`` with learner ``node`` made a voter."""
    return Membership(
        voters=m.voters | {node},
        learners=m.learners - {node},
        addresses=m.addresses,
        api_addresses=m.api_addresses,
    )


def without(m: Membership, node: NodeId) -> Membership:
    """``m`` without ``node`` (voter or learner) and its addresses."""
    return Membership(
        voters=m.voters - {node},
        learners=m.learners - {node},
        addresses=tuple(p for p in m.addresses if p[0] != node),
        api_addresses=tuple(p for p in m.api_addresses if p[0] != node),
    )


@attrs.define(eq=False, slots=True)
class Change:
    """One membership change of a batch: what it does and the configuration it leads to."""

    kind: str  # "add" | "promote" | "remove"
    node: NodeId
    desired: Membership
    of_leader: bool = False  # removes the node that led when it was planned
    proposed: bool = False  # some leader accepted it (it may commit, however late)


@attrs.define(eq=False)
class Operator:
    """Plans and drives membership changes (see the module docstring)."""

    sim: Simulation
    rng: random.Random
    every: int  # mean ticks between batches
    min_voters: int
    base: Membership  # the latest configuration known committed
    base_index: int = 1  # its entry's index (the bootstrap configuration is at index 1)
    pending: list[Change] = attrs.field(factory=list)
    next_at: int = 0  # simulated time of the next batch
    since: int = 0  # when pending[0] became the first change of the batch
    guarded: bool = True  # re-add removed nodes only when it is safe (see _may_rejoin)
    lingering: dict[NodeId, int] = attrs.field(factory=dict)  # removed node -> stop time
    was_member: set[NodeId] = attrs.field(factory=set)  # nodes once members (rejoins count)
    # Removed nodes: the index of a committed configuration that no longer has them.
    removed_at: dict[NodeId, int] = attrs.field(factory=dict)
    # Removed nodes added again whose new log does not reach removed_at yet.
    rejoining: dict[NodeId, int] = attrs.field(factory=dict)
    # Statistics.
    committed: int = 0
    leader_removals: int = 0
    rejoins: int = 0
    proposals: int = 0
    gave_up: int = 0

    def __attrs_post_init__(self) -> None:
        self.was_member = set(self.base.members)
        self.next_at = self._gap(0)

    def _gap(self, now: int) -> int:
        return now + (1 + int(self.rng.expovariate(1 / self.every))) * TICK

    # ----------------------------------------------------------------- driving

    def step(self, now: int) -> None:
        """Once per tick: retire removed nodes, track and push the batch, plan a new one."""
        quiet = self.sim.quiet
        if self.lingering:
            for nid, at in sorted(self.lingering.items()):
                if quiet or now >= at:
                    del self.lingering[nid]
                    self.sim.retire(self.sim.nodes[nid])
        if self.pending:
            self._check_committed(now)
        if quiet:
            return
        if self.rejoining:
            self._settle()
        if not self.pending:
            if now < self.next_at:
                return
            self._plan(now)
        if self.pending:
            self._give_up_on_learner(now)
            self._push()

    def _check_committed(self, now: int) -> None:
        """Has some node applied a configuration of the batch after ``base``?"""
        for sn in self.sim.nodes.values():
            kv = sn.kv
            if sn.raft is None or kv.config_index <= self.base_index or not self.pending:
                continue
            m = len(self.pending) - 1
            while m >= 0 and self.pending[m].desired != kv.config:
                m -= 1
            if m < 0:
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"{sn.id} applied configuration {sorted(kv.config.voters)} (learners "
                    f"{sorted(kv.config.learners)}) at index {kv.config_index}, which no one "
                    f"proposed",
                )
            done = self.pending[: m + 1]
            del self.pending[: m + 1]
            self.base, self.base_index = kv.config, kv.config_index
            self.since = now
            for ch in done:
                self._done(ch, now)
            if not self.pending:
                self.next_at = self._gap(now)

    def _done(self, ch: Change, now: int) -> None:
        self.committed += 1
        self.sim.trace.append((now, "operator", f"committed: {ch.kind} {ch.node}"))
        if ch.kind == "remove":
            self.leader_removals += ch.of_leader
            self.lingering[ch.node] = now + int(LINGER * self.rng.random() ** 3) * TICK
            self.removed_at[ch.node] = self.base_index
            self.rejoining.pop(ch.node, None)
        else:
            if ch.kind == "add" and ch.node in self.was_member:
                self.rejoins += 1
            self.was_member.add(ch.node)

    def _give_up_on_learner(self, now: int) -> None:
        """A learner that has not caught up in GIVE_UP ticks is removed (its join failed)."""
        ch = self.pending[0]
        if ch.kind != "promote" or ch.proposed or now - self.since < GIVE_UP * TICK:
            return
        self.gave_up += 1
        self.pending = [Change(kind="remove", node=ch.node, desired=without(self.base, ch.node))]
        self.since = now

    def _push(self) -> None:
        """Propose the batch's changes the leader does not hold yet (see the module docstring)."""
        sim = self.sim
        sn = sim.current_leader()
        if sn is None or sn.raft is None or sn.paused:
            return
        raft = sn.raft
        st = raft.status()
        if st.role is not Role.LEADER:
            return
        cur = st.membership
        if cur == self.base:
            first = 0
        else:
            first = len(self.pending)
            while first > 0 and self.pending[first - 1].desired != cur:
                first -= 1
            if first == 0:
                return  # it holds a configuration we did not ask for (yet to be resolved)
        for ch in self.pending[first:]:
            if ch.kind == "promote" and not caught_up(st, ch.node):
                break
            try:
                raft.propose_membership(ch.desired)
            except (NotLeader, ProposalDropped):
                break
            self.proposals += 1
            ch.proposed = True
            sim.trace.append((sim.now, "operator", f"proposed on {sn.id}: {ch.kind} {ch.node}"))
        sim.drain(sn)

    # ----------------------------------------------------------------- planning

    def _plan(self, now: int) -> None:
        """Choose the next batch from ``base``."""
        rng = self.rng
        sim = self.sim
        b = self.base
        voters = sorted(b.voters)
        learners = sorted(b.learners)
        spares = [n for n in sim.node_ids if n not in b.members and n not in self.lingering]
        # At most one removed node comes back per batch, and only when that is safe.
        back = [n for n in spares if n in self.removed_at and self._may_rejoin(n)][:1]
        spares = [n for n in spares if n not in self.removed_at or n in back]
        can_remove = len(voters) - self.min_voters
        options: list[tuple[str, int]] = []
        if learners:
            options += [("promote", 5), ("drop-learner", 1)]
            if can_remove >= 0:
                options.append(("promote-remove", 2))
        if spares and len(learners) < 2:
            options.append(("add", 3))
        if can_remove > 0:
            options.append(("remove", 3))
        if not options:
            self.next_at = self._gap(now)
            return
        kind = rng.choices([k for k, _ in options], [w for _, w in options])[0]
        leader = sim.current_leader()
        leader_id = leader.id if leader is not None else None
        plan: list[tuple[str, NodeId]] = []
        if kind == "promote":
            plan = [("promote", n) for n in rng.sample(learners, rng.randint(1, len(learners)))]
        elif kind == "drop-learner":
            plan = [("remove", rng.choice(learners))]
        elif kind == "promote-remove":
            victim = self._victim(voters, leader_id)
            plan = [("promote", rng.choice(learners)), ("remove", victim)]
        elif kind == "add":
            count = min(rng.randint(1, 2), len(spares), 2 - len(learners))
            plan = [("add", n) for n in rng.sample(spares, count)]
        else:
            first = self._victim(voters, leader_id)
            plan = [("remove", first)]
            if can_remove > 1 and rng.random() < 0.5:
                plan.append(("remove", self._victim([v for v in voters if v != first], None)))
        m = b
        for what, node in plan:
            if what == "add":
                sim.wipe(sim.nodes[node])
                if node in self.removed_at:
                    self.rejoining[node] = self.removed_at[node]
                m = with_learner(m, node)
            elif what == "promote":
                m = promoted(m, node)
            else:
                m = without(m, node)
            self.pending.append(
                Change(kind=what, node=node, desired=m, of_leader=node == leader_id)
            )
        self.since = now
        sim.trace.append((now, "operator", f"plan: {plan}"))

    def _may_rejoin(self, node: NodeId) -> bool:
        """May removed ``node`` be added again, with an empty disk, now?

        Not always: a node that starts empty grants every vote and pre-vote (its log is the
        least up to date), and while it catches up from the log it passes through old
        configurations that list it as a voter. So a candidate whose stale configuration still
        lists the node as a voter (it lacks the entry that removed it) can win with its vote,
        and so can the node itself with the votes of other nodes coming back with it: a leader
        without committed entries (the simulator found both; ``guarded=False`` shows them). The
        operator therefore brings a removed node back only when every member holds (the
        leader's ``status().peers`` match) a configuration that does not have it, no other
        removed node that came back is still catching up to its removal, and no removed node
        still runs (its stale log and configuration are outside the leader's view). (The core
        could make this unnecessary: see docs/simulator.md.)
        """
        if not self.guarded:
            return True
        if self.rejoining or self.lingering:
            return False
        sn = self.sim.current_leader()
        if sn is None or sn.raft is None or sn.paused:
            return False
        st = sn.raft.status()
        if st.role is not Role.LEADER or st.membership != self.base:
            return False
        need = self.removed_at[node]
        match = {p.id: p.match for p in st.peers}
        match[st.id] = st.last_index
        return all(match.get(m, 0) >= need for m in self.base.members)

    def _settle(self) -> None:
        """Removed nodes that came back stop counting as rejoining once the leader sees their
        log past their removal."""
        sn = self.sim.current_leader()
        if sn is None or sn.raft is None:
            return
        st = sn.raft.status()
        for p in st.peers:
            need = self.rejoining.get(p.id)
            if need is not None and p.match >= need:
                del self.rejoining[p.id]

    def _victim(self, voters: list[NodeId], leader: NodeId | None) -> NodeId:
        if leader is not None and leader in voters and self.rng.random() < 0.35:
            return leader
        return self.rng.choice(voters)


def caught_up(st: Status, node: NodeId) -> bool:
    """Does the leader (status ``st``) see ``node`` within CATCH_UP entries of its log?"""
    for p in st.peers:
        if p.id == node:
            return p.match + CATCH_UP >= st.last_index
    return False
