"""What arrives at a simulated node: messages, forged messages, disk completions and ticks.

The event handlers of the simulated runtime (runtime.py ``ReadyRuntime`` inherits them):

- ``_send`` puts a message on the simulated network with its sender's incarnation and binding
  (the real hello's), unless the receiver's transport would refuse that incarnation;
- ``_deliver`` steps a delivered message on its receiver (refused, like the real transport, if
  its incarnation is not the one the receiver's configuration binds the sender to) and tracks
  which process of a reader a ReadIndex request or answer belongs to (the checker's
  bookkeeping);
- ``_forge`` / ``_hand_forgery`` step forged messages (forger.py) the core must refuse
  (forgery-refused);
- ``_disk_done`` completes a storage item (a merged write, a snapshot install or a snapshot
  taken) and reports what it made durable;
- ``_tick`` / ``sync_clock`` drive the node's clock (lease mode feeds it the ticks it is due).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from univrs.raft.interpreter import InstallJob, MergedWrite, installed, report_persisted
from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
)
from univrs.sim.checker import Checker
from univrs.sim.faults import TICK, Schedule
from univrs.sim.forger import Forger
from univrs.sim.invariants import FORGERY_REFUSED, InvariantViolation
from univrs.sim.network import SimNetwork
from univrs.sim.world import Node


class Delivery:
    """The event handlers of ReadyRuntime (runtime.py), which provides these attributes and
    the methods below that raise NotImplementedError. A node is a ``runtime.SimNode``, seen
    as ``world.Node`` so that this module does not import runtime.py (no import cycle)."""

    strict_incarnations: bool
    checker: Checker
    net: SimNetwork
    injector: Any  # injector.FaultInjector
    forger: Forger | None
    schedule: Schedule
    trace: Any
    now: int
    nodes: dict[NodeId, Node]
    lease: str
    _heap: list[tuple[int, int, Callable[[Any], None], Any]]
    _seq: int
    _read_origins: dict[tuple[NodeId, int, NodeId, int, int], deque[int]]

    def at(self, time: int, fn: Callable[[Any], None], arg: Any) -> None:
        raise NotImplementedError

    def drain(self, sn: Node) -> None:
        raise NotImplementedError

    def _next_write(self, sn: Node) -> None:
        raise NotImplementedError

    def _check_compaction(self, sn: Node) -> None:
        raise NotImplementedError

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

    def _newer(self, bound_at: int, sn: Node) -> bool:
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

    def _forge(self, sn: Node, heard: Message) -> None:
        """Maybe hand ``sn`` a forged message right after it heard ``heard`` (forger.py)."""
        raft = sn.raft
        assert raft is not None and self.forger is not None
        self._hand_forgery(sn, self.forger.maybe_forge(raft, heard))

    def _hand_forgery(self, sn: Node, forged: Message | None) -> None:
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

    def _disk_done(self, arg: tuple[Node, int]) -> None:
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

    def _tick(self, sn: Node) -> None:
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
            self._hand_forgery(sn, self.forger.maybe_forge_answer(raft))

    def sync_clock(self, sn: Node) -> None:
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
