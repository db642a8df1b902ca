"""Fault injection: applies the faults of a Schedule to a running Simulation and heals them.

Each fault fires at its time, resolves its target (the current leader, or any node) with the
simulation's RNG, changes the network, a disk, a clock or a node's life, and schedules its own
healing. ``heal_all`` ends the fault phase: every partition, loss and slowdown goes, crashed
nodes restart and paused ones resume.
"""

from __future__ import annotations

import contextlib

import attrs

from univrs.errors import UnivrsError
from univrs.raft.messages import NodeId
from univrs.raft.ready import Role
from univrs.sim.faults import TICK, Fault, FaultKind
from univrs.sim.world import Node, World


@attrs.define(eq=False)
class FaultInjector:
    """Applies and heals the faults of one simulation."""

    sim: World
    fired: int = 0
    _next_id: int = 0
    # Nodes to kill (and restart) right after they forward a read: node -> (fault id, times).
    kill_on_read: dict[NodeId, tuple[int, int]] = attrs.field(factory=dict)
    # Nodes under a crash-loop fault: node -> (fault id, end time).
    crash_loops: dict[NodeId, tuple[int, int]] = attrs.field(factory=dict)

    def _target(self, f: Fault) -> Node:
        sim = self.sim
        if f.leader:
            sn = sim.current_leader()
            if sn is not None:
                return sn
        return sim.nodes[sim.rng.choice(sim.fault_targets())]

    def fire(self, f: Fault) -> None:
        """Apply fault ``f`` now and schedule its healing."""
        sim = self.sim
        self._next_id += 1
        fid = self._next_id
        heal_at = sim.now + max(1, f.duration) * TICK
        kind = f.kind
        sn = self._target(f)
        self.fired += 1
        sim.trace.append((sim.now, "fault", (kind.value, sn.id, f.duration)))
        if kind is FaultKind.CRASH:
            if sn.raft is None:
                return
            sim.crash(sn)
            sn.down_fault = fid
            sim.at(heal_at, sim.restart, (sn, fid))
        elif kind is FaultKind.POWER_LOSS:
            # Several nodes at once (always including the target), each back after its own
            # delay: their unsynced writes are lost together, which leaves logs that diverge in
            # their uncommitted suffixes.
            others = [n for n in sim.fault_targets() if n != sn.id]
            sim.rng.shuffle(others)
            more = sim.rng.randint(1, len(others)) if others else 0
            victims = [sn] + [sim.nodes[n] for n in others[:more]]
            for v in victims:
                if v.raft is None:
                    continue
                sim.crash(v)
                v.down_fault = fid
                back = sim.now + sim.rng.randint(1, max(1, f.duration)) * TICK
                sim.at(back, sim.restart, (v, fid))
        elif kind is FaultKind.PAUSE:
            if sn.raft is None or sn.paused:
                return
            sn.paused = True
            sn.pause_fault = fid
            sim.at(heal_at, sim.resume, (sn, fid))
        elif kind is FaultKind.DEAF:
            others = [n for n in sim.node_ids if n != sn.id]
            sim.net.add_partition(fid, frozenset((o, sn.id) for o in others))
            sim.at(heal_at, self._heal_partition, fid)
        elif kind in (FaultKind.PARTITION, FaultKind.ISOLATE, FaultKind.ONE_WAY):
            sim.net.add_partition(fid, self._links(kind, sn))
            sim.at(heal_at, self._heal_partition, fid)
        elif kind is FaultKind.FLAP:
            self._flap((sn, fid, heal_at, True, 8 * TICK, 8 * TICK))
        elif kind is FaultKind.FLAKY:
            # Every node's port flaps independently (bad switch firmware, a flapping uplink).
            mean_up = sim.rng.choice((5, 10, 20)) * TICK
            mean_down = sim.rng.choice((1, 3, 6)) * TICK
            for n in sim.fault_targets():
                self._next_id += 1
                first = sim.now + 1 + int(sim.rng.expovariate(1 / mean_up))
                arg = (sim.nodes[n], self._next_id, heal_at, True, mean_up, mean_down)
                sim.at(first, self._flap, arg)
        elif kind is FaultKind.CHURN:
            self._churn((fid, heal_at))
        elif kind is FaultKind.GRAY:
            sim.net.add_tx_loss(fid, sn.id, max(0.5, f.rate))
            sim.at(heal_at, self._heal_gray, fid)
        elif kind is FaultKind.LOSSY:
            sim.net.add_loss(fid, f.rate)
            sim.at(heal_at, self._heal_loss, fid)
        elif kind is FaultKind.SLOW_DISK:
            sn.slow_disk[fid] = f.factor
            sn.disk.slow_factor = max(sn.slow_disk.values())
            sim.at(heal_at, self._heal_slow, (sn, fid))
        elif kind is FaultKind.SICK:
            sn.slow_clock[fid] = f.factor
            sn.period = TICK * max(sn.slow_clock.values())
            sim.net.add_partition(fid, self._links(FaultKind.ISOLATE, sn))
            sim.at(heal_at, self._heal_slow, (sn, fid))
            sim.at(heal_at, self._heal_partition, fid)
        elif kind is FaultKind.SLOW_CLOCK:
            sn.slow_clock[fid] = f.factor
            sn.period = TICK * max(sn.slow_clock.values())
            sim.at(heal_at, self._heal_slow, (sn, fid))
        elif kind is FaultKind.RESTART:
            # Killed and restarted within a tick or two, mostly a follower with reads in flight:
            # late answers to the old process's forwarded reads reach the new one, whose read
            # ids start over.
            # Half the time the node dies right after it next forwards a read to the leader.
            if sim.rng.random() < 0.5:
                self.kill_on_read[sn.id] = (fid, sim.rng.randint(1, 4))
            else:
                self._restart((sn, fid, sim.rng.randint(1, 4)))
        elif kind is FaultKind.CRASH_LOOP:
            self.crash_loops[sn.id] = (fid, heal_at)
            if sn.raft is not None and sn.role is Role.LEADER:
                self.on_leader(sn)
        elif kind is FaultKind.WIPE:
            op = sim.operator
            if op is None or sn.retired or not op.may_wipe(sn):
                return
            sim.wipe(sn)  # a new, empty disk: a new incarnation, waiting to be repaired
        elif kind is FaultKind.TRANSFER:
            leader = sim.current_leader()
            if leader is None or leader.raft is None or leader.paused:
                return
            sim.settle(leader)  # (the driver runs a transfer as an input: a ``Call``)
            voters = leader.raft.status().membership.voters
            others = [n for n in sim.node_ids if n != leader.id and n in voters]
            if not others:
                return
            with contextlib.suppress(UnivrsError):
                leader.raft.transfer_leader(sim.rng.choice(others))
            sim.drain(leader)

    def on_forward_read(self, sn: Node) -> None:
        """``sn`` just forwarded a ReadIndex request: under a restart fault armed for that,
        it dies before the answer can come back, and starts again a moment later."""
        armed = self.kill_on_read.pop(sn.id, None)
        if armed is None or self.sim.quiet:
            return
        fid, times = armed
        self.sim.at(self.sim.now + 1, self._restart, (sn, fid, times))

    def _restart(self, arg: tuple[Node, int, int]) -> None:
        """Kill ``sn`` and start it again a moment later; ``left`` more times, a few ticks
        apart (a deploy that restarts a service repeatedly; each process is young)."""
        sim = self.sim
        sn, fid, left = arg
        if sn.raft is None or sn.retired or sim.quiet:
            return
        sim.crash(sn)
        sn.down_fault = fid
        back = sim.now + 1 + int(sim.rng.random() * TICK)
        sim.at(back, sim.restart, (sn, fid))
        if left > 1:
            self.kill_on_read[sn.id] = (fid, left - 1)

    def on_leader(self, sn: Node) -> None:
        """``sn`` just became leader: under a crash-loop fault its disk stalls and it dies a
        moment later (a lone voter is elected at once, starts sending, and may die before its
        new term is on disk)."""
        loop = self.crash_loops.get(sn.id)
        if loop is None:
            return
        fid, end = loop
        sim = self.sim
        if sim.now >= end or sim.quiet:
            del self.crash_loops[sn.id]
            return
        # Its disk stalls first (the watchdog kills a process stuck in fsync): what it wrote
        # since it won is not durable yet when it dies.
        sn.disk.slow_factor = max(sn.disk.slow_factor, 20)
        delay = 1 + int(sim.rng.random() * 20 * TICK)
        sim.at(sim.now + delay, self._crash_leader, (sn, fid, sn.life))

    def _crash_leader(self, arg: tuple[Node, int, int]) -> None:
        sim = self.sim
        sn, fid, life = arg
        sn.disk.slow_factor = max(sn.slow_disk.values(), default=1)
        if sn.life != life or sn.raft is None or sn.retired or sim.quiet:
            return
        sim.crash(sn)
        sn.down_fault = fid
        sim.at(sim.now + sim.rng.randint(1, 3) * TICK, sim.restart, (sn, fid))

    def _flap(self, arg: tuple[Node, int, int, bool, int, int]) -> None:
        """Cut (``down``) or restore ``sn``'s links, then schedule the opposite.

        Up and down times are exponential with means ``mean_up`` and ``mean_down`` (units).
        """
        sim = self.sim
        sn, fid, end, down, mean_up, mean_down = arg
        if down and sim.now < end:
            sim.net.add_partition(fid, self._links(FaultKind.ISOLATE, sn))
        else:
            sim.net.remove_partition(fid)
        if sim.now < end:
            stay = 1 + int(sim.rng.expovariate(1 / (mean_down if down else mean_up)))
            nxt = min(end, sim.now + stay)
            sim.at(nxt, self._flap, (sn, fid, end, not down, mean_up, mean_down))

    def _churn(self, arg: tuple[int, int]) -> None:
        """Replace the partition of fault ``fid`` by a fresh random one, until ``end``."""
        sim = self.sim
        fid, end = arg
        sim.net.remove_partition(fid)
        if sim.now >= end:
            return
        if sim.rng.random() < 0.7:
            sn = sim.nodes[sim.rng.choice(sim.fault_targets())]
            sim.net.add_partition(fid, self._links(FaultKind.PARTITION, sn))
        sim.at(min(end, sim.now + sim.rng.randint(1, 10) * TICK), self._churn, arg)

    def _links(self, kind: FaultKind, sn: Node) -> frozenset[tuple[NodeId, NodeId]]:
        sim = self.sim
        ids = sim.node_ids
        if kind is FaultKind.PARTITION:
            shuffled = list(ids)
            sim.rng.shuffle(shuffled)
            cut = sim.rng.randint(1, len(ids) // 2)
            a, b = shuffled[:cut], shuffled[cut:]
            return frozenset([(x, y) for x in a for y in b] + [(y, x) for x in a for y in b])
        others = [n for n in ids if n != sn.id]
        out = [(sn.id, o) for o in others]
        inc = [(o, sn.id) for o in others]
        if kind is FaultKind.ISOLATE:
            return frozenset(out + inc)
        return frozenset(out if sim.rng.random() < 0.5 else inc)

    def _heal_partition(self, fid: int) -> None:
        sim = self.sim
        sim.net.remove_partition(fid)

    def _heal_gray(self, fid: int) -> None:
        sim = self.sim
        sim.net.remove_tx_loss(fid)

    def _heal_loss(self, fid: int) -> None:
        sim = self.sim
        sim.net.remove_loss(fid)

    def _heal_slow(self, arg: tuple[Node, int]) -> None:
        sn, fid = arg
        sn.slow_disk.pop(fid, None)
        sn.slow_clock.pop(fid, None)
        sn.disk.slow_factor = max(sn.slow_disk.values(), default=1)
        sn.period = TICK * max(sn.slow_clock.values(), default=1)

    def heal_all(self, _: None) -> None:
        """End of the fault phase: everything heals, crashed nodes restart, final write starts."""
        sim = self.sim
        sim.trace.append((sim.now, "heal-all", None))
        sim.quiet = True
        sim.net.heal()
        for sn in sim.nodes.values():
            sn.slow_disk.clear()
            sn.slow_clock.clear()
            sn.disk.slow_factor = 1
            sn.period = TICK
            if sn.raft is None and not sn.retired:
                sn.down_fault = 0
                sim.start(sn)
            elif sn.paused:
                sim.resume((sn, sn.pause_fault))
        sim.workload.start_final_write(sim.now)
