"""The simulated operator: membership changes under the seed's faults (dissertation 4).

Theory of operation. Every so often (``Profile.member_every`` ticks on average) the operator
plans a *batch* of changes from the last configuration it knows committed (``base``): add one
or two nodes as learners, promote caught-up learners, remove one or two voters (sometimes the
leader itself), remove a learner, promote one learner and remove a voter, or *replace* a member
(add a node, promote it, remove the oldest voter: bootstrap voters first, so after a while none
is left). It never plans below ``Profile.min_voters`` voters (1 in some seeds: a single voter
with learners).

Members are ids *and incarnations*: each configuration binds every member to the incarnation of
its data dir (``Membership.incarnations``), and a node's transport refuses a peer whose
incarnation is not the one its configuration lists (delivery.py). A node added (again) always
gets an empty disk with a new incarnation first, so a removed id can come back at once (no
precautions: a stale configuration that still lists the old incarnation cannot count the new
one). A *wipe* (a disk lost under a live member, injector.py) leaves a member whose id is listed
with its old incarnation: the operator *repairs* it, first thing, like the replace path of
``univrs cluster join``: remove the old incarnation, add the new one as a learner, promote it
if it was a voter.

It drives the batch through whichever node leads (``Simulation.current_leader``), like the
``univrs cluster`` commands would: it proposes the first change not yet in the leader's log
(``RaftNode.propose_membership``) and then *tries* the next one at once. The real core refuses
that second proposal (``ProposalDropped``: one change at a time), so a batch runs one change
after the other; a mutant that lets two changes be in flight gets both. It also tries as soon
as a node becomes leader (``on_leader``), before the new leader has committed anything of its
term: the real core refuses until it has (the 2015 correction), a mutant may not. A refused or
lost proposal is retried on the next tick. When a new leader lacks a change the previous leader
accepted (it is not committed), the operator sometimes gives the batch up and plans a
different one at once (*divergent* changes: the old one may still be in other logs).

A change is known committed when some node's state machine has applied a CONFIG entry after
``base`` with the configuration some proposal wanted (the state machine only applies committed
entries; a configuration no one proposed is a state-machine-safety violation). A removed node
keeps running for a while (a few ticks, sometimes up to ``LINGER``), then is stopped for good
(*retired*), unless it is added again first.

A promotion waits until the learner is caught up (the leader's ``status().peers`` match within
``CATCH_UP`` entries of its last index); a learner that does not catch up within ``GIVE_UP``
ticks is removed instead (an interrupted join, cleaned up).

After the fault phase the operator plans nothing new but repairs, and proposes only the
changes of a repair: what else is in the logs commits or is dropped by the core, and removed
nodes are retired.
"""

from __future__ import annotations

import random

import attrs

from univrs.errors import NotLeader, ProposalDropped
from univrs.raft.messages import Membership, NodeId
from univrs.raft.ready import Role, Status
from univrs.sim.faults import TICK
from univrs.sim.invariants import STATE_MACHINE_SAFETY, InvariantViolation
from univrs.sim.node import incarnation_id
from univrs.sim.world import Node, World

CATCH_UP = 8  # a learner within this many entries of the leader's last index is caught up
GIVE_UP = 300  # ticks a learner may take to catch up before it is removed again
LINGER = 200  # a removed node runs on for up to this many ticks (mostly a few) after removal
DIVERGE = 0.5  # chance to plan a different batch when a new leader lacks the proposed change


def address(node: NodeId) -> str:
    """The simulated raft address of a node (the address entry of its configuration)."""
    return f"sim://{node}"


def with_learner(m: Membership, node: NodeId, incarnation: str) -> Membership:
    """``m`` plus ``node`` (of ``incarnation``) as a learner, with its address."""
    return Membership(
        voters=m.voters,
        learners=m.learners | {node},
        addresses=tuple(sorted({*m.addresses, (node, address(node))})),
        api_addresses=m.api_addresses,
        incarnations=tuple(
            sorted({*(p for p in m.incarnations if p[0] != node), (node, incarnation)})
        ),
    )


def promoted(m: Membership, node: NodeId) -> Membership:
    """``m`` with learner ``node`` made a voter."""
    return attrs.evolve(m, voters=m.voters | {node}, learners=m.learners - {node})


def without(m: Membership, node: NodeId) -> Membership:
    """``m`` without ``node`` (voter or learner), its addresses and its incarnation."""
    return Membership(
        voters=m.voters - {node},
        learners=m.learners - {node},
        addresses=tuple(p for p in m.addresses if p[0] != node),
        api_addresses=tuple(p for p in m.api_addresses if p[0] != node),
        incarnations=tuple(p for p in m.incarnations if p[0] != node),
    )


@attrs.define(eq=False, slots=True)
class Change:
    """One membership change of a batch: what it does and the configuration it leads to."""

    kind: str  # "add" | "promote" | "remove" | "rebind" (a member, as a learner, to a new disk)
    # | "bind" (every member the configuration binds to no incarnation, to its disk's)
    node: NodeId
    desired: Membership
    of_leader: bool = False  # removes the node that led when it was planned
    proposed: bool = False  # some leader accepted it (it may commit, however late)
    why: str = ""  # "repair" (a wiped member's new incarnation) | "replace" | ""


@attrs.define(eq=False)
class Operator:
    """Plans and drives membership changes (see the module docstring)."""

    sim: World
    rng: random.Random
    every: int  # mean ticks between batches
    min_voters: int
    base: Membership  # the latest configuration known committed
    base_index: int = 1  # its entry's index (the bootstrap configuration is at index 1)
    pending: list[Change] = attrs.field(factory=list)
    repair: bool = False  # the pending batch repairs a wiped member
    # Batches given up while a change of theirs may still be in some log (divergence).
    abandoned: list[list[Change]] = attrs.field(factory=list)
    # Every configuration some leader accepted (what may legitimately commit).
    proposed_configs: list[Membership] = attrs.field(factory=list)
    accepted_by: tuple[NodeId, int] | None = None  # the leader (id, term) that took pending[0]
    next_at: int = 0  # simulated time of the next batch
    # The unbound bootstrap's members: never wiped, never added again once removed (a member
    # lagging at the bootstrap entry lists them unbound; docs/simulator.md, "Unbound bootstrap").
    unbound_ids: frozenset[NodeId] = frozenset()
    since: int = 0  # when pending[0] became the first change of the batch
    lingering: dict[NodeId, int] = attrs.field(factory=dict)  # removed node -> stop time
    was_member: set[NodeId] = attrs.field(factory=set)  # nodes once members (rejoins count)
    # Statistics.
    committed: int = 0
    leader_removals: int = 0
    rejoins: int = 0
    proposals: int = 0
    gave_up: int = 0
    diverged: int = 0  # batches given up for a different one under a new leader
    repairs: int = 0  # wiped members replaced by their new incarnation
    replaced: int = 0  # members replaced by other nodes (replace batches committed)

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
        if self.pending or self.abandoned:
            self._check_committed(now)
        # A copy of a data dir taken or fenced (rollback.py) is a member down until replaced:
        # no change that might need its vote starts meanwhile (repairs only).
        held = self.sim.rollbacks is not None and self.sim.rollbacks.blocks_wipe("")
        if not self.pending and (self._wiped() or (not quiet and not held and now >= self.next_at)):
            self._plan(now)
        if self.pending and (not quiet or self.repair):
            self._give_up_on_learner(now)
            self._push()

    def on_leader(self, sn: Node) -> None:
        """``sn`` just became leader: try the batch at once (before it commits in its term)."""
        if self.pending and (not self.sim.quiet or self.repair):
            self.sim.at(self.sim.now, self._push_now, None)

    def _push_now(self, _: None) -> None:
        if self.pending:
            self._push()

    def may_wipe(self, sn: Node) -> bool:
        """May a disk be lost under member ``sn`` now (a wipe fault)? Only between batches
        (a change in flight could leave a configuration whose quorum needs the lost member),
        one member at a time, and a voter only while at least three are listed: with its
        votes refused, the others must still make a quorum."""
        b = self.base
        if self.sim.quiet or self.pending or self.abandoned or sn.id not in b.members:
            return False
        if not self._pre_vote():
            # Without PreVote a member stranded behind (its configuration's other voters gone
            # or strangers) inflates its term for ever and is never heard again (lower-term
            # vote requests are ignored, as in etcd): a liveness hazard, not one of safety.
            return False
        if self._wiped():
            return False
        if self.sim.rollbacks is not None and self.sim.rollbacks.blocks_wipe(sn.id):
            return False  # a copy taken or fenced (rollback.py) is a member down already
        if b.incarnation_of(sn.id) is None:
            return False
        if sn.id in self.unbound_ids and not self.sim.wipe_bootstrap_members:
            # Also after the binding change: a member lagging at the bootstrap entry takes the
            # wiped data dir as the member unless it pinned the old incarnation (3 nodes, seed
            # 43031, when a restart forgot pins); one that never heard it pinned nothing.
            return False
        return sn.id not in b.voters or len(b.voters) >= 3

    def _plain(self) -> bool:
        """The seed runs the paper's plainer protocol: neither PreVote nor CheckQuorum."""
        cfg = self.sim.config
        return cfg is not None and not cfg.pre_vote and not cfg.check_quorum

    def _pre_vote(self) -> bool:
        cfg = self.sim.config
        return cfg is not None and cfg.pre_vote

    def _wiped(self) -> list[NodeId]:
        """Members of ``base`` bound to an incarnation their node no longer has."""
        out = []
        for nid in sorted(self.base.members):
            listed = self.base.incarnation_of(nid)
            if listed is not None and listed != self.sim.nodes[nid].disk.incarnation:
                out.append(nid)
        return out

    def _check_committed(self, now: int) -> None:
        """Has some node applied a configuration proposed after ``base``?"""
        for sn in self.sim.nodes.values():
            kv = sn.kv
            if sn.raft is None or kv.config_index <= self.base_index:
                continue
            cfg = kv.config
            done: list[Change] | None
            m = len(self.pending) - 1
            while m >= 0 and self.pending[m].desired != cfg:
                m -= 1
            if m >= 0:
                done = self.pending[: m + 1]
                del self.pending[: m + 1]
            else:
                done = self._abandoned_done(cfg)
                if done is None and cfg not in self.proposed_configs:
                    raise InvariantViolation(
                        STATE_MACHINE_SAFETY,
                        f"{sn.id} applied configuration {sorted(cfg.voters)} (learners "
                        f"{sorted(cfg.learners)}) at index {kv.config_index}, which no one "
                        f"proposed",
                    )
                # An older proposal won: the pending batch was planned from another base.
                self.pending = []
                self.repair = False
            self.base, self.base_index = cfg, kv.config_index
            # What other batches proposed was appended to logs without this configuration:
            # it can no longer commit (if it does, the checker says so).
            self.abandoned.clear()
            self.since = now
            for ch in done or ():
                self._done(ch, now)
            if not self.pending:
                self.repair = False
                self.accepted_by = None
                self.next_at = self._gap(now)

    def _abandoned_done(self, cfg: Membership) -> list[Change] | None:
        for batch in self.abandoned:
            for k, ch in enumerate(batch):
                if ch.desired == cfg:
                    return batch[: k + 1]
        return None

    def _done(self, ch: Change, now: int) -> None:
        self.committed += 1
        self.sim.trace.append((now, "operator", f"committed: {ch.kind} {ch.node}"))
        if ch.kind == "remove":
            self.leader_removals += ch.of_leader
            self.replaced += ch.why == "replace"
            if ch.why != "repair":  # a repair's node already runs its new incarnation
                self.lingering[ch.node] = now + int(LINGER * self.rng.random() ** 3) * TICK
        else:
            self.repairs += ch.why == "repair" and ch.kind in ("add", "rebind")
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
        self.repair = False
        self.since = now

    def _push(self) -> None:
        """Propose the batch's changes the leader does not hold yet (see the module docstring)."""
        sim = self.sim
        sn = sim.current_leader()
        if sn is None or sn.raft is None or sn.paused:
            return
        sim.settle(sn)  # (the driver runs a change as an input: a ``Call``)
        raft = sn.raft
        st = raft.status()
        if st.role is not Role.LEADER:
            return
        cur = st.membership
        if cur == self.base:
            first = 0
            if (
                self.pending[0].proposed
                and self.accepted_by not in (None, (sn.id, st.term))
                and not self.repair
                and not sim.quiet
                and self.rng.random() < DIVERGE
            ):
                # A new leader without the change the previous one accepted: plan another.
                self.diverged += 1
                old = self.pending
                self.abandoned.append(old)
                self.pending = []
                # The other direction when it can: a promotion against a removal is the pair
                # whose majorities need not overlap (the raft-dev 2015 example).
                flip = {"promote": "remove", "remove": "promote"}.get(old[0].kind)
                self._plan(sim.now, avoid={ch.node for ch in old}, prefer=flip)
                if not self.pending:
                    return
        else:
            first = len(self.pending)
            while first > 0 and self.pending[first - 1].desired != cur:
                first -= 1
            if first == 0:
                return  # it holds a configuration we did not ask for (yet to be resolved)
        for ch in self.pending[first:]:
            if ch.kind == "promote" and not caught_up(st, ch.node):
                break
            if (
                ch.kind == "remove"
                and self._plain()
                and not all(caught_up(st, v) for v in ch.desired.voters if v != st.id)
            ):
                # Without PreVote and CheckQuorum a removed member that keeps campaigning
                # deposes every leader; if the remaining voters lag, the removal may never
                # commit (7 nodes, seed 454: liveness). Remove only once they caught up.
                break
            try:
                raft.propose_membership(ch.desired)
            except (NotLeader, ProposalDropped):
                break
            self.proposals += 1
            ch.proposed = True
            if ch is self.pending[0]:
                self.accepted_by = (sn.id, st.term)
            if ch.desired not in self.proposed_configs:
                self.proposed_configs.append(ch.desired)
            sim.trace.append((sim.now, "operator", f"proposed on {sn.id}: {ch.kind} {ch.node}"))
        sim.drain(sn)

    # ----------------------------------------------------------------- planning

    def _plan(self, now: int, avoid: set[NodeId] | None = None, prefer: str | None = None) -> None:
        """Choose the next batch from ``base`` (a repair first, if a member was wiped)."""
        sim = self.sim
        b = self.base
        wiped = self._wiped()
        plan: list[tuple[str, NodeId]] = []
        leader = sim.current_leader()
        leader_id = leader.id if leader is not None else None
        why = ""
        unbound = sorted(n for n in b.members if b.incarnation_of(n) is None)
        if unbound and not wiped:
            # First of all, as the product's leader does (``record_incarnations``).
            plan = [("bind", unbound[0])]
        elif wiped:
            # Like `univrs cluster join --replace`: the member becomes a learner bound to its
            # new incarnation (one change), or (the long way) is removed and added again.
            node = wiped[0]
            if self.rng.random() < 0.5:
                plan = [("rebind", node)]
            else:
                plan = [("remove", node), ("add", node)]
            if node in b.voters:
                plan.append(("promote", node))
            self.repair = True
            why = "repair"
        else:
            self.repair = False
            plan = self._choose(avoid or set(), leader_id, prefer)
            if not plan:
                self.next_at = self._gap(now)
                return
            if len(plan) == 3 and plan[0][0] == "add" and plan[2][0] == "remove":
                why = "replace"
        m = b
        for what, node in plan:
            if what == "bind":
                pairs = {*m.incarnations, *((n, sim.nodes[n].disk.incarnation) for n in unbound)}
                m = attrs.evolve(m, incarnations=tuple(sorted(pairs)))
            elif what == "rebind":
                m = with_learner(
                    attrs.evolve(m, voters=m.voters - {node}),
                    node,
                    sim.nodes[node].disk.incarnation,
                )
            elif what == "add":
                sn = sim.nodes[node]
                if not (self.repair and sn.disk.incarnation != b.incarnation_of(node)):
                    sim.wipe(sn)  # every addition starts from an empty disk: a new incarnation
                self.lingering.pop(node, None)
                m = with_learner(m, node, sn.disk.incarnation)
            elif what == "promote":
                m = promoted(m, node)
            else:
                m = without(m, node)
            self.pending.append(
                Change(kind=what, node=node, desired=m, of_leader=node == leader_id, why=why)
            )
        self.accepted_by = None
        self.since = now
        sim.trace.append((now, "operator", f"plan: {plan}"))

    def _choose(
        self, avoid: set[NodeId], leader_id: NodeId | None, prefer: str | None = None
    ) -> list[tuple[str, NodeId]]:
        rng = self.rng
        sim = self.sim
        b = self.base
        voters = sorted(b.voters)
        learners = sorted(n for n in b.learners if n not in avoid)
        # Nodes that are not members: spares, and removed ids (lingering ones too: adding one
        # again at once stops its old process and gives it a new disk).
        spares = [
            n
            for n in sim.node_ids
            if n not in b.members
            and n not in avoid
            and n not in self.unbound_ids
            and (n not in self.lingering or self._pre_vote())
        ]
        can_remove = len(voters) - self.min_voters
        options: list[tuple[str, int]] = []
        if learners:
            options += [("promote", 5), ("drop-learner", 1)]
            if can_remove >= 0:
                options.append(("promote-remove", 2))
        if spares and len(b.learners) < 2:
            options.append(("add", 3))
            options.append(("replace", 3))
        if can_remove > 0:
            # Seeds that go down to a single voter head there (a lone voter with learners).
            options.append(("remove", 12 if self.min_voters == 1 else 3))
        if not options:
            return []
        kinds = [k for k, _ in options]
        kind = prefer if prefer in kinds else rng.choices(kinds, [w for _, w in options])[0]
        targets = [v for v in voters if v not in avoid] or voters
        if kind == "promote":
            return [("promote", n) for n in rng.sample(learners, rng.randint(1, len(learners)))]
        if kind == "drop-learner":
            return [("remove", rng.choice(learners))]
        if kind == "promote-remove":
            return [("promote", rng.choice(learners)), ("remove", self._victim(targets, leader_id))]
        if kind == "add":
            count = min(rng.randint(1, 2), len(spares), 2 - len(b.learners))
            return [("add", n) for n in rng.sample(spares, count)]
        if kind == "replace":
            new = rng.choice(spares)
            plan = [("add", new), ("promote", new)]
            if len(voters) + 1 > self.min_voters:
                plan.append(("remove", self._oldest(targets, leader_id)))
            return plan
        first = self._victim(targets, leader_id)
        plan = [("remove", first)]
        if can_remove > 1 and rng.random() < 0.5:
            plan.append(("remove", self._victim([v for v in voters if v != first], None)))
        return plan

    def _victim(self, voters: list[NodeId], leader: NodeId | None) -> NodeId:
        if leader is not None and leader in voters and self.rng.random() < 0.35:
            return leader
        return self.rng.choice(voters)

    def _oldest(self, voters: list[NodeId], leader: NodeId | None) -> NodeId:
        """The voter to replace: a bootstrap member if one is left (its first incarnation),
        sometimes the leader."""
        if leader is not None and leader in voters and self.rng.random() < 0.2:
            return leader
        first = [v for v in voters if self.base.incarnation_of(v) == incarnation_id(v, 0)]
        return self.rng.choice(first or voters)


def caught_up(st: Status, node: NodeId) -> bool:
    """Does the leader (status ``st``) see ``node`` within CATCH_UP entries of its log?"""
    for p in st.peers:
        if p.id == node:
            return p.match + CATCH_UP >= st.last_index
    return False
