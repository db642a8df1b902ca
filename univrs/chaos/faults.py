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
"""

from __future__ import annotations

import logging
import os
import pathlib
import random
import shutil
import signal

import attrs
import trio

from univrs.chaos.links import Link, LinkFaults, partition_links
from univrs.chaos.monitor import FETCH_ERRORS, Monitor
from univrs.chaos.proxy import FaultProxy, LinkPolicy
from univrs.chaos.scenario import MEMBERSHIP_KINDS, FaultSpec, PlannedFault
from univrs.net.http import HttpResponse, request_json
from univrs.tools.devcluster import LocalCluster, NodeProc

log = logging.getLogger("univrs.chaos.faults")

CATCH_UP_TIMEOUT = 30.0


@attrs.define(eq=False)
class FaultRecord:
    """What one planned fault actually did, with real times (seconds after the run start)."""

    index: int
    label: str
    kind: str
    start: float
    end: float | None = None
    targets: tuple[str, ...] = ()
    note: str = ""
    # Partitions: per node it cut off, seconds from healing until it followed the agreed
    # leader again (None: not within the monitor's HEAL_WATCH_TIMEOUT, or the fault phase
    # ended first).
    leader_after_heal: dict[str, float | None] = attrs.field(factory=dict)

    def to_plain(self) -> dict[str, object]:
        return {
            "index": self.index,
            "label": self.label,
            "kind": self.kind,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "targets": list(self.targets),
            "note": self.note,
            "leader_after_heal": dict(self.leader_after_heal),
        }


@attrs.define(eq=False)
class Injector:
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

    async def _corrupt_snapshots(self, fault: PlannedFault, rec: FaultRecord) -> None:
        """Flip one bit of every stored snapshot file of the target nodes (``all`` by default),
        in place while they run, at a random offset: damage at rest (docs/storage.md,
        "Guarantees"). Each node must go on, log it once and retake its snapshot."""
        spec = fault.spec
        one = await self._resolve(spec.target) if spec.target != "all" else None
        nodes = [one] if one else ([] if spec.target != "all" else self._up())
        rec.targets = tuple(nodes)
        flipped = []
        for node in nodes:
            folder = self.cluster.node(node).data_dir / "raft.lmdb"
            for path in sorted(folder.glob("snapshot-*.dat")):
                offset = self.rng.randrange(1 << 40)
                where = await trio.to_thread.run_sync(_flip_bit, path, offset)
                if where is not None:
                    flipped.append(f"{node}:{path.name}@{where}")
        rec.note = "flipped " + (", ".join(flipped) if flipped else "nothing (no snapshot file)")

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

    # ---------------------------------------------------------------- membership

    async def _api(
        self, node_id: str, method: str, path: str, body: object = None, timeout: float = 30.0
    ) -> HttpResponse | None:
        addr = self.cluster.node(node_id).api_addr
        try:
            return await request_json(addr, method, path, body=body, timeout=timeout)
        except FETCH_ERRORS as exc:
            self._fetch_errors[node_id] = f"{type(exc).__name__}: {exc}"[:160]
            return None

    def _problem(self, rec: FaultRecord, message: str) -> None:
        rec.note = message
        self.unexpected.append(f"{rec.label}: {message}")

    async def _membership(self, fault: PlannedFault, rec: FaultRecord) -> None:
        spec, kind = fault.spec, fault.kind
        timeout = spec.param("timeout") or 30.0
        if kind == "snapshot":
            one = await self._resolve(spec.target) if spec.target != "all" else None
            nodes = [one] if one else ([] if spec.target != "all" else self._up())
            rec.targets = tuple(nodes)
            done = []
            for node in nodes:
                resp = await self._api(node, "POST", "/v1/cluster/snapshot", {}, timeout=30.0)
                if resp is not None and resp.status == 200:
                    done.append(f"{node}@{resp.body['index']}")
                else:
                    done.append(f"{node}: failed")
            rec.note = "snapshots " + ", ".join(done)
            return
        if kind == "join":
            if not self.spares_left:
                rec.note = "skipped: no spare node left"
                return
            via = await self._resolve(spec.target)
            if via is None:
                rec.note = "skipped: no member running"
                return
            spare = self.spares_left.pop(0)
            rec.targets = (spare,)
            self.joining.add(spare)
            try:
                await self._join(spec, rec, spare, via, timeout)
            finally:
                self.joining.discard(spare)
            return
        if kind == "wipe":
            async with self._wiping:  # after the previous wipe's member is a voter again
                target = await self._resolve(spec.target)
                if target is None:
                    rec.note = f"skipped: no {spec.target} node available"
                    return
                await self._wipe(rec, target, timeout)
            return
        target = await self._resolve(spec.target)
        if target is None:
            rec.note = f"skipped: no {spec.target} node available"
            return
        await self._leave_or_remove(rec, kind, target, timeout)

    async def _join(
        self, spec: FaultSpec, rec: FaultRecord, spare: str, via: str, timeout: float
    ) -> None:
        """Start ``spare`` joining through ``via``; wait up to ``timeout`` for it to be a voter."""
        await self._proc(f"join {self.cluster.node(via).api_addr}", spare)
        started = trio.current_time()
        state = "?"
        left = "" if spec.param("via_leaves") else None  # "": not yet
        # With via_leaves the wait is shielded (like a wipe's rejoin): a join cut off by
        # the end of the fault phase would pass unjudged, and a learner that never gets
        # promoted still converges with the others.
        with trio.CancelScope(shield=left is not None), trio.move_on_after(timeout):
            while True:
                resp = await self._api(spare, "GET", "/v1/cluster/join", timeout=2.0)
                if resp is not None and resp.status == 200:
                    state = resp.body.get("state", "?")
                    if state in ("voter", "failed"):
                        break
                    if left == "" and state in ("adding", "catching-up", "promoting"):
                        left = await self._via_leaves(via, timeout)
                await trio.sleep(0.25)
        took = trio.current_time() - started
        after = f" ({via} {left} during the join)" if left else ""
        if state == "voter":
            rec.note = f"{spare} joined via {via}, a voter after {took:.1f}s{after}"
        else:
            self._problem(rec, f"{spare} joining via {via}: {state} after {took:.1f}s{after}")

    async def _wipe(self, rec: FaultRecord, node: str, timeout: float) -> None:
        """A member loses its disk (docs/operations.md "A disk was replaced"): kill -9, data
        dir deleted, started empty, rejoined under its id with ``replace`` through another
        member; a problem unless it is a voter again within ``timeout``."""
        rec.targets = (node,)
        others = [n for n in self._up() if n != node]
        if not others:
            rec.note = "skipped: no other member to join through"
            return
        via = self.rng.choice(others)
        # Shielded: once the disk is gone the rejoin finishes (within ``timeout``) even when
        # the fault phase ends meanwhile; healing cannot bring a wiped member back.
        with trio.CancelScope(shield=True):
            await self._wipe_and_rejoin(rec, node, via, others, timeout)

    async def _wipe_and_rejoin(
        self, rec: FaultRecord, node: str, via: str, others: list[str], timeout: float
    ) -> None:
        await self._proc("wipe", node)
        started = trio.current_time()
        state, asked = "?", False
        with trio.move_on_after(timeout):
            while True:
                if not asked:
                    body = {"target": self.cluster.node(via).api_addr, "replace": True}
                    resp = await self._api(node, "POST", "/v1/cluster/join", body, timeout=5.0)
                    if resp is not None and resp.status >= 400:
                        # As an operator would: through another member (this one may be down).
                        state = f"refused: {resp.status} {resp.body}"
                        others = [n for n in self._up() if n != node and n != via] or others
                        via = self.rng.choice(others)
                    else:
                        asked = resp is not None
                else:
                    resp = await self._api(node, "GET", "/v1/cluster/join", timeout=2.0)
                    if resp is not None and resp.status == 200:
                        state = resp.body.get("state", "?")
                        if state in ("voter", "failed"):
                            break
                await trio.sleep(0.25)
        took = trio.current_time() - started
        if state == "voter":
            rec.note = f"{node} wiped, rejoined via {via}, a voter after {took:.1f}s"
        else:
            self._problem(rec, f"{node} wiped, rejoining via {via}: {state} after {took:.1f}s")

    async def _via_leaves(self, via: str, timeout: float) -> str:
        """The member a join goes through leaves the cluster (and stops for good) while the
        join runs: what the join's fallback to the other members is for."""
        resp = await self._api(via, "POST", "/v1/cluster/leave", {}, timeout=timeout)
        if resp is None or resp.status != 200:
            return "could not leave" if resp is None else f"could not leave ({resp.status})"
        await self._proc("retire", via)
        return "left"

    async def _leave_or_remove(
        self, rec: FaultRecord, kind: str, node: str, timeout: float
    ) -> None:
        rec.targets = (node,)
        if kind == "leave":
            resp = await self._api(node, "POST", "/v1/cluster/leave", {}, timeout=timeout)
        else:
            others = [n for n in self._up() if n != node]
            if not others:
                rec.note = "skipped: no other member to ask"
                return
            via = self.rng.choice(others)
            resp = await self._api(via, "DELETE", f"/v1/cluster/members/{node}", timeout=timeout)
        if resp is None or resp.status != 200:
            if resp is None:
                why = f"no answer ({self._fetch_errors.get(via if kind != 'leave' else node)})"
            else:
                why = f"{resp.status} {resp.body}"
            self._problem(rec, f"{kind} of {node} failed: {why}")
            return
        await self._proc("retire", node)
        voters = resp.body.get("voters") if isinstance(resp.body, dict) else None
        rec.note = f"{node} {'left' if kind == 'leave' else 'removed'}" + (
            f"; voters {','.join(voters)}" if voters else ""
        )

    async def heal_all(self) -> None:
        """Heal every fault: all links pass, every node runs (resumed or restarted)."""
        self._links.heal()
        for node in list(self.down):
            await self._restore(node)


def _flip_bit(path: pathlib.Path, offset: int) -> int | None:
    """Flip a bit of the file's byte at ``offset`` modulo its size, in place; the offset, or
    None if the file is gone or empty (replaced meanwhile)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        at = offset % size
        (byte,) = os.pread(fd, 1, at)
        os.pwrite(fd, bytes([byte ^ (1 << (offset % 8))]), at)
        return at
    finally:
        os.close(fd)
