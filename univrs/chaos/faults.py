"""Injecting the faults of a scenario into a running cluster, and healing them.

Process faults act on the node processes of a ``LocalCluster`` (kill -9, SIGTERM, SIGSTOP and
SIGCONT by PID, restarts); the blocking process calls run in worker threads, one at a time.
Network faults set the policy of the fault proxies, one per ordered pair of nodes; several may
overlap, each contributing a policy per link (``univrs.chaos.links``: the links a partition
cuts and how the contributions combine).

The injector remembers what it broke (``down``: node -> how; the network contributions), so
``heal_all`` at the end of the fault phase restores everything whatever was in progress.
Membership faults change which nodes are expected to run (``active``): a joined spare becomes
active; a node that left or was removed is stopped and is no longer active (healing does not
bring it back, and the final checks compare the active members only). A spare is active from
its start, but while its join runs (``joining``) no other fault picks it, as a target or as
the member to go through: at a load of 10 its process took 11 s to listen, and a `leave
follower` that picked it 8 s after its start failed at once, connection refused (chaos seed
603 of join-and-leave-under-load, "no answer" in 24 ms; the same for a `remove leader` asked
through the second spare a second before it listened).
Targets are resolved when a fault starts (the leader at that moment); random choices come from
the seeded ``rng``.

Split by concept (s13-small): the membership faults are in ``univrs.chaos.fault_membership``
and the damage of stored snapshot files in ``univrs.chaos.fault_disk`` (base classes of
``Injector``), the record of a fault in ``univrs.chaos.fault_record``; this module holds the
injector's state, its targets and process actions, and the process and network faults.
"""

from __future__ import annotations

import logging
import random
import shutil
import signal

import attrs
import trio

from univrs.chaos.fault_disk import DiskFaults
from univrs.chaos.fault_membership import MembershipFaults
from univrs.chaos.fault_record import FaultRecord
from univrs.chaos.links import Link, LinkFaults, partition_links
from univrs.chaos.monitor import Monitor
from univrs.chaos.proxy import FaultProxy, LinkPolicy
from univrs.chaos.scenario import MEMBERSHIP_KINDS, PlannedFault
from univrs.tools.devcluster import LocalCluster, NodeProc

__all__ = ["CATCH_UP_TIMEOUT", "FaultRecord", "Injector"]

log = logging.getLogger("univrs.chaos.faults")

CATCH_UP_TIMEOUT = 30.0


@attrs.define(eq=False)
class Injector(MembershipFaults, DiskFaults):
    """Carries out planned faults (see the module docstring)."""

    cluster: LocalCluster
    proxies: dict[Link, FaultProxy]
    monitor: Monitor
    rng: random.Random
    t0: float
    records: list[FaultRecord] = attrs.field(factory=list)
    down: dict[str, str] = attrs.field(factory=dict)  # node -> killed|stopped|paused|died
    unexpected: list[str] = attrs.field(factory=list)  # surprises (bad exit codes, ...)
    active: set[str] = attrs.field(factory=set)  # members expected to run (see the docstring)
    joining: set[str] = attrs.field(factory=set)  # started spares whose join fault still runs
    spares_left: list[str] = attrs.field(factory=list)  # spare nodes not started yet
    _links: LinkFaults = attrs.field(init=False)
    _fetch_errors: dict[str, str] = attrs.field(factory=dict)  # node -> last request's failure
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    # One wipe at a time: a second disk lost while the first member still rejoins would lose
    # a quorum's data (no cluster recovers from that without an operator's unsafe recover).
    _wiping: trio.Lock = attrs.field(factory=trio.Lock)

    @property
    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.cluster.nodes]

    def now(self) -> float:
        return trio.current_time() - self.t0

    # ---------------------------------------------------------------- targets

    def __attrs_post_init__(self) -> None:
        self._links = LinkFaults(self.proxies)
        if not self.active:
            spares = self.cluster.spares
            self.active = {n for n in self.node_ids if n not in spares}
            self.spares_left = sorted(spares)

    def _up(self) -> list[str]:
        return [
            n
            for n in self.node_ids
            if n in self.active and n not in self.down and n not in self.joining
        ]

    async def _resolve(self, target: str) -> str | None:
        up = self._up()
        if target in self.node_ids:
            return target if target in up else None
        if target == "all":
            return None
        if not up:
            return None
        if target == "random":
            return self.rng.choice(up)
        leader = await self._leader()
        if target == "leader":
            return leader if leader in up else None
        followers = [n for n in up if n != leader]
        return self.rng.choice(followers) if followers else None

    async def _leader(self) -> str | None:
        # An election may be in progress: wait a little for one.
        with trio.move_on_after(5.0):
            while True:
                leader = await self.monitor.leader_of()
                if leader is not None:
                    return leader
                await trio.sleep(0.1)
        return None

    # ---------------------------------------------------------------- process actions

    async def _proc(self, action: str, node_id: str) -> None:
        node = self.cluster.node(node_id)
        async with self._lock:
            await trio.to_thread.run_sync(self._proc_sync, action, node)

    def _proc_sync(self, action: str, node: NodeProc) -> None:
        c = self.cluster
        if action == "kill":
            c.kill(node)
            self.down[node.node_id] = "killed"
        elif action == "stop":
            code = c.stop(node)
            if code not in (0, None):
                self.unexpected.append(f"{node.node_id}: graceful stop exited with code {code}")
            self.down[node.node_id] = "stopped"
        elif action == "pause":
            c.send_signal(node, signal.SIGSTOP)
            self.down[node.node_id] = "paused"
        elif action == "resume":
            c.send_signal(node, signal.SIGCONT)
            self.down.pop(node.node_id, None)
        elif action == "start":
            if not node.running():
                c.start(node)
            self.down.pop(node.node_id, None)
        elif action.startswith("join "):
            c.start(node, join=action.split(" ", 1)[1])
            self.active.add(node.node_id)
        elif action == "wipe":  # kill -9, lose the disk, start empty waiting to be joined
            c.kill(node)
            shutil.rmtree(node.data_dir, ignore_errors=True)
            c.start(node, initial_cluster_state="existing")
            self.down.pop(node.node_id, None)
        elif action == "retire":  # it left the cluster: stop it for good
            code = c.stop(node)
            if code not in (0, None):
                self.unexpected.append(f"{node.node_id}: stop after leaving exited with {code}")
            self.active.discard(node.node_id)
            self.down.pop(node.node_id, None)
        else:  # pragma: no cover - programming error
            raise ValueError(action)

    async def _restore(self, node_id: str) -> None:
        how = self.down.get(node_id)
        if how == "paused":
            await self._proc("resume", node_id)
        elif how in ("killed", "stopped", "died"):
            await self._proc("start", node_id)

    async def _wait_caught_up(self, node_id: str) -> bool:
        """Until ``node_id`` has applied what the leader had committed when we started."""
        with trio.move_on_after(CATCH_UP_TIMEOUT):
            target = None
            while True:
                s = await self.monitor.sample()
                leader = None
                views = dict(s.views)
                for v in views.values():
                    if v and v.get("role") == "leader":
                        leader = v
                mine = views.get(node_id)
                if target is None and leader is not None:
                    target = leader["commit_index"]
                if target is not None and mine and mine["applied_index"] >= target:
                    return True
                await trio.sleep(0.2)
        return False

    # ---------------------------------------------------------------- faults

    async def run(self, fault: PlannedFault) -> None:
        """Carry out one planned fault: wait for its start, act, wait for its end, heal it.
        Cancellation (the fault phase ending) leaves the healing to ``heal_all``."""
        await trio.sleep_until(self.t0 + fault.start)
        rec = FaultRecord(index=fault.index, label=fault.label(), kind=fault.kind, start=self.now())
        self.records.append(rec)
        log.info("fault %s starts", rec.label)
        try:
            await self._run(fault, rec)
        finally:
            if rec.end is None:
                rec.end = self.now()
            log.info("fault %s ends %s", rec.label, rec.note)

    async def _run(self, fault: PlannedFault, rec: FaultRecord) -> None:
        spec, kind = fault.spec, fault.kind
        end_at = self.t0 + fault.end
        if kind in ("kill", "stop", "pause"):
            node = await self._resolve(spec.target)
            if node is None:
                rec.note = f"skipped: no {spec.target} node available"
                return
            rec.targets = (node,)
            await self._proc(kind, node)
            await trio.sleep_until(end_at)
            await self._restore(node)
        elif kind == "restart":
            node = await self._resolve(spec.target)
            if node is None:
                rec.note = f"skipped: no {spec.target} node available"
                return
            rec.targets = (node,)
            await self._proc("kill" if spec.param("signal") == "kill" else "stop", node)
            await self._proc("start", node)
        elif kind == "rolling-restart":
            leader = await self._leader()
            order = sorted(n for n in self._up() if n != leader)
            if leader in self._up():
                order.append(leader)  # the leader last, as an operator would
            rec.targets = tuple(order)
            for node in order:
                await self._proc("kill" if spec.param("signal") == "kill" else "stop", node)
                await self._proc("start", node)
                if not await self._wait_caught_up(node):
                    rec.note += f"{node} did not catch up within {CATCH_UP_TIMEOUT:g}s; "
                await trio.sleep(spec.param("gap"))
        elif kind == "full-restart":
            nodes = self._up()
            rec.targets = tuple(nodes)
            for node in nodes:
                await self._proc("kill" if spec.param("signal") == "kill" else "stop", node)
            await trio.sleep_until(end_at)
            for node in nodes:
                await self._restore(node)
        elif kind in ("partition", "flapping"):
            await self._partition(fault, rec, end_at)
        elif kind in ("latency", "lossy"):
            target = None if spec.target == "all" else await self._resolve(spec.target)
            links = self._links.of(target if spec.target != "all" else "all")
            rec.targets = (spec.target if target is None else target,)
            policy = LinkPolicy(
                delay=spec.param("delay"),
                jitter=spec.param("jitter"),
                loss=spec.param("loss") or 0.0,
                loss_stall=spec.param("loss_stall") or 0.2,
                reset_rate=spec.param("reset_rate") or 0.0,
            )
            self._links.add(fault.index, links, policy)
            try:
                await trio.sleep_until(end_at)
            finally:
                self._links.remove(fault.index)
        elif kind in MEMBERSHIP_KINDS:
            await self._membership(fault, rec)
        elif kind == "corrupt-snapshot":
            await self._corrupt_snapshots(fault, rec)
        elif kind == "reset":
            target = None if spec.target == "all" else await self._resolve(spec.target)
            n = self._links.reset(target)
            rec.targets = (spec.target if target is None else target,)
            rec.note = f"{n} connections reset"
        else:
            raise ValueError(f"unknown fault kind {kind!r}")  # the scenario parser refuses it

    async def _partition(self, fault: PlannedFault, rec: FaultRecord, end_at: float) -> None:
        spec = fault.spec
        mode = spec.param("mode")
        flapping = fault.kind == "flapping"
        period: float = spec.param("period") if flapping else 0.0
        phases = 0
        try:
            while trio.current_time() < end_at:
                target = await self._resolve(spec.target) if spec.target != "all" else None
                if target is None:
                    target = self.rng.choice(sorted(self.active))
                leader = await self.monitor.leader_of() if mode == "halves" else None
                links, sides, about = partition_links(
                    mode,
                    sorted(self.active),
                    target,
                    leader,
                    spec.param("leader"),
                    spec.param("direction"),
                    self.rng,
                )
                phases += 1
                if phases == 1:
                    rec.targets = about
                    rec.note = sides
                policy = LinkPolicy(partitioned=True, retransmit=spec.param("retransmit"))
                self._links.add(fault.index, links, policy)
                if not flapping:
                    await trio.sleep_until(end_at)
                    break
                await trio.sleep_until(min(end_at, trio.current_time() + period))
                self._links.remove(fault.index)
                await trio.sleep_until(min(end_at, trio.current_time() + period))
            if flapping:
                rec.note += f" ({phases} flaps of {period:g}s)"
        finally:
            self._links.remove(fault.index)
            rec.end = self.now()  # healed (the watch below is not part of the fault)
        if not flapping and rec.targets:
            rec.leader_after_heal = await self.monitor.time_to_leader(rec.targets, self.active)

    async def watch_processes(self, every: float = 0.2) -> None:
        """Until cancelled: notice a node process that ended without the injector ending it
        (a crash, or a signal from outside), record it with the time and exit status, and
        count the node as down so that healing starts it again."""
        while True:
            await trio.sleep(every)
            if self._lock.locked():
                continue  # a process action is in flight: its bookkeeping is not done yet
            for node in self.cluster.nodes:
                if node.node_id not in self.active:
                    continue
                if node.node_id in self.down or node.running():
                    continue
                code = node.proc.poll() if node.proc is not None else None
                how = f"exit code {code}"
                if code is not None and code < 0:
                    how = f"killed by {signal.Signals(-code).name}, not sent by the chaos runner"
                self.unexpected.append(f"{node.node_id} died at {self.now():.2f}s ({how})")
                self.down[node.node_id] = "died"
                log.warning("%s died unexpectedly (%s)", node.node_id, how)

    async def heal_all(self) -> None:
        """Heal every fault: all links pass, every node runs (resumed or restarted)."""
        self._links.heal()
        for node in list(self.down):
            await self._restore(node)
