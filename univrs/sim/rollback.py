"""The rollback fault: an older copy of a member's data dir put back in its place.

A VM snapshot rolled back, or last night's ``cp -a`` put back: the data dir keeps its
incarnation while its hard state and log go back (docs/security.md, "A data dir copied back
from an older copy"). With ``Simulation.rollback`` on (off by default: these faults draw from
their own RNG, and a seed without them runs exactly as before), each run plays a few:

1. *copy*: a running member's durable image (``SimDisk``) is copied, and what the checker
   holds of it (``durable_view``);
2. *later start*: the member is restarted (a deploy): a start of its data dir after the copy;
3. *put back*: once every other node recorded that later start (or one after it), the member
   is stopped and the copy put back in its place, same incarnation, and started;
4. *replace* (checked mode, with a membership operator): a while after the copy is fenced,
   the operator replaces the member as the logs tell them (a new, empty data dir: a wipe,
   which the membership operator repairs).

At most a minority of the voters is out at once (copies taken or fenced, members whose disk
was lost and not yet repaired), and no disk is lost (a wipe fault) meanwhile: a fenced copy
is a member down, and safety with a majority down means no progress.

Step 3 waits for every other node on purpose: a copy started before some peer heard a later
start of the original is invisible to that peer (the window the design leaves open, as in
etcd), and a sweep of it would only show that. A copy whose wait outlasts the fault phase is
never put back (``SimStats.rollbacks`` counts those that were).

Mode ``"checked"`` runs the transport's start check (delivery.py ``_start_taken``, the rule of
univrs/raft/starts.py): every peer refuses the copy, which fences itself at the first
refusal; the checker counts it as gone (it never votes or acknowledges again). Mode
``"unchecked"`` plays the code before start counters: the copy takes part, and may vote a
second time in a term it voted in, or let a leader lacking an entry it had acknowledged win
(the checker's election-safety and committed-durable checks).
"""

from __future__ import annotations

import copy
import random

import attrs

from univrs.raft.messages import NodeId
from univrs.sim.disk import SimDisk
from univrs.sim.faults import TICK
from univrs.sim.mirror import NodeView
from univrs.sim.world import World

MODES = ("off", "checked", "unchecked")
ROLLBACKS_PER_RUN = 3
RETRY_TICKS = 10


@attrs.define(eq=False)
class _Copy:
    node: NodeId
    disk: SimDisk
    view: NodeView
    wipes: int  # the node's wipe count when copied: a wipe since makes the copy moot


@attrs.define(eq=False)
class Rollbacks:
    """Plays the rollback faults of one run (see the module docstring)."""

    sim: World
    checked: bool
    rng: random.Random
    done: int = 0  # copies put back
    active: set[NodeId] = attrs.field(factory=set)  # nodes with a copy taken, not yet put back
    copies: set[NodeId] = attrs.field(factory=set)  # nodes running a put-back copy (checked)

    def schedule(self) -> None:
        ticks = self.sim.ticks
        for _ in range(ROLLBACKS_PER_RUN):
            at = self.rng.randrange(ticks // 10, max(ticks // 10 + 1, ticks * 6 // 10))
            self.sim.at(at * TICK, self._take, None)

    def _take(self, _: None) -> None:
        sim = self.sim
        members = sim.checker.committed_config().voters
        up = [
            n
            for n in sim.node_ids
            if n in members
            and n not in self.active
            and n not in self.copies
            and sim.nodes[n].raft is not None
            and not sim.nodes[n].retired
        ]
        budget = self._room() - len(self.active)
        if not up or sim.quiet or budget < 1:
            return
        sn = sim.nodes[self.rng.choice(up)]
        taken = _Copy(
            node=sn.id,
            disk=copy.deepcopy(sn.disk),
            view=sim.checker.durable_view(sn.id),
            wipes=sn.wipes,
        )
        self.active.add(sn.id)
        sim.trace.append((sim.now, "copy", f"{sn.id} start {_counter(sn.disk)}"))
        restart_at = sim.now + self.rng.randint(20, 100) * TICK
        sim.at(restart_at, self._later_start, taken)

    def _later_start(self, taken: _Copy) -> None:
        sim = self.sim
        sn = sim.nodes[taken.node]
        if sn.wipes != taken.wipes or sn.retired:
            self.active.discard(taken.node)
            return
        if sn.raft is not None and not sim.quiet:
            sim.crash(sn)
            sim.trace.append((sim.now, "restart", sn.id))
            sim.start(sn)
        sim.at(sim.now + self.rng.randint(20, 100) * TICK, self._put_back, taken)

    def _put_back(self, taken: _Copy) -> None:
        sim = self.sim
        sn = sim.nodes[taken.node]
        if sn.wipes != taken.wipes or sn.retired or sim.quiet:
            self.active.discard(taken.node)
            return
        later = _counter(taken.disk) + 1  # the copy's next start counts this
        key = (sn.id, sn.disk.incarnation)
        seen = all(
            other.disk.start_records.get(key, (0, ""))[0] >= later
            for other in sim.nodes.values()
            if other.id != sn.id and not other.retired
        )
        op = sim.operator
        busy = op is not None and (op.pending or op.abandoned)
        if sn.raft is None or not seen or busy or self._room() < 1:
            sim.at(sim.now + RETRY_TICKS * TICK, self._put_back, taken)
            return
        sim.crash(sn)
        speed, slow = sn.disk.speed, sn.disk.slow_factor
        sn.disk = taken.disk
        sn.disk.speed, sn.disk.slow_factor = speed, slow
        sim.checker.observe_rollback(
            sn.id, taken.view, term=taken.disk.hard_state.term, fenced=self.checked
        )
        self.active.discard(sn.id)
        if self.checked:
            self.copies.add(sn.id)
            # The operator, told by the logs, replaces the member (a new, empty data dir: a
            # new incarnation, which the membership operator repairs), where there is one.
            if sim.operator is not None:
                replace_at = sim.now + self.rng.randint(50, 150) * TICK
                sim.at(replace_at, self._replace, (sn.id, sn.wipes))
        self.done += 1
        sim.trace.append((sim.now, "put back", f"{sn.id} copy of start {later - 1}"))
        sim.start(sn)

    def _room(self) -> int:
        """How many more members may be down for good (fenced copies, members whose disk was
        lost and not yet repaired) with a majority of the committed configuration left: a
        fenced copy is a member down until replaced, and safety with a majority down means
        no progress."""
        sim = self.sim
        cfg = sim.checker.committed_config()
        lost = [
            n
            for n in cfg.members
            if cfg.incarnation_of(n) not in (None, sim.nodes[n].disk.incarnation)
        ]
        return (len(cfg.voters) - 1) // 2 - len(self.copies) - len(lost)

    def _replace(self, arg: tuple[NodeId, int]) -> None:
        node, wipes = arg
        sim = self.sim
        sn = sim.nodes[node]
        if node not in self.copies or sn.wipes != wipes or sn.retired or sim.quiet:
            return
        if not sim.operator.may_wipe(sn):  # between its batches, as for a lost disk
            sim.at(sim.now + RETRY_TICKS * TICK, self._replace, arg)
            return
        sim.wipe(sn)

    def blocks_wipe(self, node: NodeId) -> bool:
        """Does a copy taken, or a fenced copy other than ``node``, forbid losing a disk now
        (it is a member down already)?"""
        return bool(self.active or self.copies - {node})

    def excused(self, node: NodeId) -> bool:
        """Is ``node`` a put-back copy the checks stopped (liveness does not wait for it)?"""
        return node in self.copies


def _counter(disk: SimDisk) -> int:
    return disk.start.counter if disk.start is not None else 0
