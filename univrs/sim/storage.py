"""The storage layer of the simulated runtime: the process's write queue on its simulated disk.

Storage work goes on the process's ``WriteQueue`` (univrs/raft/interpreter.py, the one the
driver's writer uses): persist jobs, snapshots from a leader, and the node's own snapshots. One
item at a time is written, durable after a random delay; consecutive Ready writes are merged
(group commit) and a commit-only hard state waits for the next write that syncs, as in the real
writer. A job that persists nothing still waits for every earlier write. When an item is
durable:

* a merged write: the disk stores it, its ``messages_after_persist`` are sent and what it made
  durable is reported to the core (``report_persisted``);
* a snapshot from the leader: the disk installs it (and, with the LMDB state backend, the
  state env adopts it only now) and the core hears it is durable;
* the node's own snapshot (``_take_snapshot``, a queue item in FIFO order with the writes):
  unless a leader's snapshot was installed since, the core gets it (``snapshot_taken``) and
  the stored log is compacted up to what the core lets go.

A crash voids the writes in flight (their completion events carry the process number).
"""

from __future__ import annotations

import random

from univrs.raft.interpreter import (
    InstallJob,
    MergedWrite,
    PersistJob,
    installed,
    report_persisted,
)
from univrs.raft.messages import SnapshotMeta
from univrs.sim.delivery import DeliveryLayer
from univrs.sim.disk import Taken
from univrs.sim.faults import TICK, Schedule
from univrs.sim.invariants import STATE_DURABLE, InvariantViolation
from univrs.sim.node import SimNode

# After the fault phase no write takes longer than this (units). Raft elects a leader only if
# a round of votes (two fsyncs and two message delays) is well within the election timeout
# (paper 5.6: broadcastTime << electionTimeout); a seed whose slowest disks take longer than
# the timeout can duel elections for ever, which says nothing about the core.
QUIET_DISK_MAX = 2 * TICK


class StorageLayer(DeliveryLayer):
    """The write queue on the simulated disk and what completed writes do (over delivery)."""

    rng: random.Random
    schedule: Schedule
    quiet: bool
    snapshots: int

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

    def _disk_done(self, arg: tuple[SimNode, int]) -> None:
        sn, life = arg
        if sn.life != life:
            return  # the write was lost in a crash
        if sn.paused:
            sn.backlog.append((self._disk_done, arg))
            return
        self.settle(sn)
        item = sn.writing
        sn.writing = None
        raft = sn.raft
        assert raft is not None and item is not None
        disk = sn.disk
        if isinstance(item, MergedWrite):
            disk.store(item)
            if item.truncate_from is not None or item.entries:
                self.checker.observe_durable(sn.id, item.truncate_from, item.entries)
            if item.truncate_from is not None:
                _check_applied_on_disk(sn)
            report = sn.writes.written(item)
            for m in item.after_persist:
                self._send(m)
            if report is not None:
                report_persisted(raft, report)
        elif isinstance(item, InstallJob):
            disk.install(item.meta, item.data)
            if item.meta.index >= sn.installing:
                sn.installing = 0
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

    def _take_snapshot(self, sn: SimNode) -> None:
        """Snapshot the state machine now; the core hears of it once the write is durable."""
        kv = sn.kv
        sn.snap_at = kv.applied
        self.snapshots += 1
        meta = SnapshotMeta(index=kv.applied, term=kv.applied_term, membership=kv.config)
        self._submit(sn, Taken(meta=meta, data=kv.snapshot(), epoch=sn.installs))


def _check_applied_on_disk(sn: SimNode) -> None:
    """After a durable write that cut the log: the entry the node's state machine applied last
    is still on its disk (ready.py step 5: committed entries are handed out only once durable
    locally, and a committed entry is never cut). A write that cut it leaves the state ahead
    of the durable log: a crash now and the node refuses to start (``state-durable`` at the
    restart, with the LMDB backend), or with the memory backend restarts without entries it
    applied. Session 26's audit found a core that took a write's entries as durable while a
    queued write cut them (an entry replaced by one leader and put back by a later one,
    interpreter.py ``WriteQueue.written``); this check catches that class at the write, with
    either backend, without waiting for a crash at the wrong moment."""
    kv, disk = sn.kv, sn.disk
    applied = kv.applied
    if applied == 0 or applied <= max(disk.base, sn.installing):
        # Nothing applied, or the snapshot the log was compacted to covers it, or a snapshot
        # from the leader the state took ahead of its install (the contract's step 0).
        return
    if disk.term_at(applied) != kv.applied_term:
        raise InvariantViolation(
            STATE_DURABLE,
            f"{sn.id} applied ({applied}, term {kv.applied_term}) but a durable write left its "
            f"log without it (last index {disk.last_index}, term there "
            f"{disk.term_at(applied)}): the state is ahead of the durable log",
        )
