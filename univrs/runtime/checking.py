"""The leader's snapshot checked while the core keeps stepping (s12-gate).

A follower that completes the leader's snapshot checks it before the core installs it
(``SnapshotChecker``, snapshots.py): the data is decoded, or staged into a new LMDB
environment, in a worker thread. That takes 65 to 71 s at 1,000,000 + 1,000,000 objects
(docs/state-at-scale.md). Until s12-gate the driver awaited that thread before stepping
anything else, so the node answered no heartbeat, no append and no vote for the whole check:
a voter catching up was dead to the cluster for a minute.

Now only the snapshot's own last chunk waits for its check. The driver (step.py) hands the
check to a task of its own (``SnapshotChecks.begin``) and goes on stepping every other event;
when the thread is done the task puts ``CHECKED`` on the inbox, and the driver steps the
waiting chunk then (``SnapshotChecks.checked``). That is exactly the chunk arriving later
than it did, which the core handles like any delayed message, so its safety rules decide
what the late step does, on the core's state at that moment:

* appends after the snapshot's index that came meanwhile were refused (our log lacks their
  previous entry) or, if the log had them, stored and acked only once persisted, as ever;
* a snapshot at or below the commit index reached meanwhile is not installed
  (``_on_install_snapshot``: we hold all it covers), nor one from a term or leader we no
  longer follow (``_from_followed_leader``); a newer snapshot's chunks started another
  receiver, and the waiting chunk completes nothing any more;
* the core calls the checker for the very data checked (``SnapshotChecker.__call__`` answers
  from the thread's result only for the same metadata and bytes; anything else is restored
  again there), and installs at most once: a resent last chunk waits behind the check in
  flight and, stepped after the install, completes nothing.

A check the core did not use (superseded meanwhile) is discarded: its file written ahead is
dropped (``SnapshotChecker.discard``). Since s13-scale a check is not left to run to its end
once the core says its chunk can no longer complete anything (``RaftNode.snapshot_check_moot``:
our term moved on, our commit reached the snapshot, or the partial snapshot is gone): the
driver asks after every step, the check's thread is told to stop (the staging polls between
blocks of rows: about 20 ms at 1M), and the chunk is dropped when its ``CHECKED`` comes, as a
network may drop it. At 1M a check takes 35 to 80 s on this machine; a join whose leader
changed during the check ran it to the end before looking at the new leader's snapshot, which
had meanwhile arrived and waited, holding a second copy of the data (docs/state-at-scale.md,
s13-scale).

At most ``MAX_WAITING`` last chunks wait behind a check (each holds up to a chunk of data):
past it the oldest goes, as a lost message.

Joining the chunks (``snapshot_to_check``) still runs with the core waiting: it reads the
core's receiver, which only the driver may touch while it changes. Since s13-scale the
receiver carries the checksum as chunks arrive, so that wait is the join (a copy of the
data), no longer a second pass hashing it (about a second at 1M before).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time

import attrs
import trio

from univrs.raft.messages import InstallSnapshot
from univrs.raft.node import RaftNode
from univrs.runtime.snapshots import SnapshotChecker

log = logging.getLogger("univrs.node")

__all__ = ["CHECKED", "MAX_WAITING", "SnapshotChecks"]

MAX_WAITING = 4  # last chunks kept behind a check in flight (the oldest is dropped past it)


class _Checked:
    """The check in flight is done: the driver steps the chunk that waited for it."""


CHECKED = _Checked()


def _same_chunk(a: InstallSnapshot, b: InstallSnapshot) -> bool:
    return (
        a.src == b.src
        and a.term == b.term
        and a.meta == b.meta
        and a.offset == b.offset
        and a.total_size == b.total_size
        and a.checksum == b.checksum
        and len(a.data) == len(b.data)
    )


@attrs.define(eq=False)
class SnapshotChecks:
    """The snapshot check in flight (at most one: ``checking``, the last chunk it is for) and
    the last chunks that arrived meanwhile (``waiting``, in order, at most ``MAX_WAITING``;
    each is looked at again once the check in flight is stepped)."""

    sender: trio.MemorySendChannel[object]
    checking: InstallSnapshot | None = None
    waiting: collections.deque[InstallSnapshot] = attrs.field(factory=collections.deque)
    # The check in flight was told to stop (its chunk can no longer complete a snapshot):
    # its chunk is dropped at ``CHECKED``, not stepped.
    stopped: bool = False
    dropped: int = 0  # waiting chunks dropped for the bound (the oldest first)
    _stop: threading.Event = attrs.field(factory=threading.Event)

    def wait_behind(self, msg: InstallSnapshot) -> bool:
        """Keep ``msg`` for later if a check is in flight (True); a copy of a chunk already
        waiting (the leader's resend) is dropped, as a network may: the one kept is
        answered."""
        checking = self.checking
        if checking is None:
            return False
        if not _same_chunk(msg, checking) and not any(_same_chunk(msg, w) for w in self.waiting):
            if len(self.waiting) >= MAX_WAITING:
                # Distinct last chunks (a newer snapshot each) arriving faster than a check:
                # the oldest is the least likely to complete anything. Lost, as on a network.
                self.waiting.popleft()
                self.dropped += 1
                log.info(
                    "snapshot chunk dropped behind a check",
                    extra={"index": msg.meta.index, "waiting": len(self.waiting)},
                )
            self.waiting.append(msg)
        return True

    def maybe_stop(self, core: RaftNode) -> bool:
        """Tell the check in flight to stop if its chunk can no longer complete a snapshot
        (``RaftNode.snapshot_check_moot``); True if told now. The driver asks after every
        step: cheap when no check runs."""
        msg = self.checking
        if msg is None or self.stopped or not core.snapshot_check_moot(msg):
            return False
        self.stopped = True
        self._stop.set()
        log.info("snapshot check stopped", extra={"index": msg.meta.index, "term": msg.term})
        return True

    def next_waiting(self) -> InstallSnapshot | None:
        """A chunk that waited, once no check is in flight."""
        if self.checking is None and self.waiting:
            return self.waiting.popleft()
        return None

    async def begin(self, core: RaftNode, msg: InstallSnapshot, nursery: trio.Nursery) -> bool:
        """Start checking what ``msg`` completes, in a task of ``nursery``: True if it runs
        (the driver then steps ``msg`` only at ``CHECKED``); False if there is nothing to
        check (the driver steps ``msg`` now). The chunks are joined and verified in a worker
        thread with the core waiting (this awaits that); the check itself runs with the
        core stepping."""
        check = core.snapshot_check
        assert self.checking is None, "one check at a time"
        if not isinstance(check, SnapshotChecker) or not core.snapshot_check_due(msg):
            return False  # e.g. the leader sending the last chunks again (it waited for us)
        # The two log lines split a join's time: the stream (up to "received") and the check,
        # which stages the state (docs/state-at-scale.md; scripts/bench_scale reads them).
        log.info("snapshot received", extra={"index": msg.meta.index, "bytes": msg.total_size})
        started = trio.current_time()
        # Joined and verified off the loop: at 1,000,000 + 1,000,000 objects that is 212 MB
        # copied and hashed (ninth increment). The core does not change meanwhile (only the
        # driver calls it, and it waits here); ``snapshot_to_check`` is a query that keeps
        # what it joined for the step that follows.
        data = await trio.to_thread.run_sync(core.snapshot_to_check, msg)
        if data is None:
            return False
        self.checking, self.stopped, self._stop = msg, False, threading.Event()
        nursery.start_soon(self._run, check, msg, data, started, self._stop)
        return True

    async def _run(
        self,
        check: SnapshotChecker,
        msg: InstallSnapshot,
        data: bytes,
        started: float,
        stop: threading.Event,
    ) -> None:
        # Touches only the checker's own slot and the immutable data: safe while the driver
        # steps the core (and the core calls no check before ``CHECKED``: every other last
        # chunk waits behind this one).
        def timed() -> float:
            cpu = time.thread_time()
            check.precheck(msg.meta, data, stop.is_set)
            return time.thread_time() - cpu

        joined = trio.current_time()
        cpu = await trio.to_thread.run_sync(timed)
        log.info(
            "snapshot checked",
            extra={
                "index": msg.meta.index,
                "seconds": round(trio.current_time() - started, 3),
                # The chunks' join and checksum (the core waited), and the check's own
                # thread's CPU: at 1M on a loaded machine its wall time is 3 to 6 times that
                # (docs/state-at-scale.md, s13-scale).
                "join_s": round(joined - started, 3),
                "cpu_s": round(cpu, 3),
                "problem": check.found(msg.meta, data),
            },
        )
        # Never dropped: the driver must step the chunk (unless shutting down).
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.sender.send(CHECKED)

    def checked(self) -> tuple[InstallSnapshot, bool]:
        """The chunk whose check is done, and whether it was stopped (then the driver drops
        it; else it steps it now); none in flight after."""
        msg, self.checking = self.checking, None
        assert msg is not None, "CHECKED without a check in flight"
        return msg, self.stopped
