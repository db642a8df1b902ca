"""The leader's view of each follower: match/next indexes and the flow-control state.

Theory of operation (the idea of etcd's ``tracker/progress.go``, our own code)
-------------------------------------------------------------------------------
- PROBE: the leader does not know where the follower's log matches its own. It sends one
  AppendEntries at a time and waits for the answer (``probe_sent``); a heartbeat response
  unpauses it, so a lost probe is retried every heartbeat.
- REPLICATE: the follower matched; the leader streams appends optimistically (``next`` moves
  past what was sent) with at most ``max_inflight`` unacknowledged messages (``Inflights``).
  A rejection drops back to PROBE.
- SNAPSHOT: the entries the follower needs are compacted away: the leader streams its newest
  snapshot (``snapshot``, a SnapshotSender; None while the leader has no snapshot data yet) and
  sends no appends. Once the follower installs it, ``match`` jumps to the snapshot index and
  the follower is probed again. Rejections of appends are ignored in this state.

Invariants: ``0 <= match < next``; in REPLICATE the inflight indexes are strictly increasing and
all ``> match``.
"""

from __future__ import annotations

import collections
import enum

import attrs

from univrs.raft.snapshot import SnapshotSender


class ProgressState(enum.Enum):
    """Flow-control state of one follower (see the module docstring)."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@attrs.define(eq=False)
class Inflights:
    """The last index of each unacknowledged AppendEntries in flight, oldest first (bounded)."""

    capacity: int
    _items: collections.deque[int] = attrs.field(factory=collections.deque)

    def add(self, last_index: int) -> None:
        assert len(self._items) < self.capacity, "inflight window overflow"
        assert not self._items or self._items[-1] < last_index, "inflight indexes must increase"
        self._items.append(last_index)

    def free_to(self, index: int) -> None:
        """Forget every message whose entries are all acknowledged by ``index``."""
        items = self._items
        while items and items[0] <= index:
            items.popleft()

    def free_first(self) -> None:
        """Forget the oldest message (a heartbeat answer proves the link works; etcd's unstick)."""
        if self._items:
            self._items.popleft()

    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def reset(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@attrs.define(eq=False)
class Progress:
    """Replication progress of one follower, as the leader tracks it."""

    match: int
    next: int
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False  # PROBE only: an append is outstanding, wait for its answer
    recent_active: bool = False  # heard from it since the last CheckQuorum round
    snapshot: SnapshotSender | None = None  # SNAPSHOT only: the stream in progress
    # The highest commit index this follower can derive from what we sent it (an append's
    # min(commit, its last entry), a heartbeat's commit): below min(commit, match) it needs
    # telling. Only an optimisation of latency; correctness never depends on it.
    commit_sent: int = 0
    # The index of the newest read of this follower's that we answered (ReadIndex): it waits
    # to apply that far, so a commit index up to it is told at once, not deferred (commit_notice.py
    # ``_maybe_tell_commit``).
    read_index: int = 0
    # Removed members only (heartbeat.py ``_prune_progress``): heartbeat rounds since the
    # configuration removing it committed.
    removal_rounds: int = 0
    # Heartbeats that may wait (heartbeat.py ``_heartbeat_may_wait``): the tick (``_now``) the
    # leader last sent it an AppendEntries and last heard an answer from it (None: never, this
    # term), and whether the last periodic heartbeat was skipped for it and is still owed.
    append_sent_at: int | None = None
    heard_at: int | None = None
    heartbeat_owed: bool = False

    def become_probe(self) -> None:
        """Fall back to one-at-a-time probing from ``next`` (which the caller set)."""
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights.reset()
        self.snapshot = None

    def become_replicate(self) -> None:
        """The follower matches at ``match``: stream from ``match + 1``."""
        self.state = ProgressState.REPLICATE
        self.probe_sent = False
        self.inflights.reset()
        self.snapshot = None
        self.next = self.match + 1

    def become_snapshot(self) -> None:
        """The follower needs a snapshot; no appends are sent meanwhile (the caller sets
        ``snapshot`` once it has data to stream)."""
        self.state = ProgressState.SNAPSHOT
        self.probe_sent = False
        self.inflights.reset()
        self.snapshot = None

    def is_paused(self) -> bool:
        """True if the leader must not send this follower another append now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent(self, last_index: int, count: int) -> None:
        """Record an append just sent whose entries end at ``last_index`` (``count`` entries)."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """A success acknowledged ``index``; True if that moved ``match`` forward."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, new_next: int) -> bool:
        """A rejection of prev index ``rejected``; move ``next`` back to ``new_next`` (clamped).

        Returns False for a stale rejection: in REPLICATE one at or below ``match``, in PROBE
        one that does not answer the outstanding probe (``next - 1``), in SNAPSHOT any.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
        elif self.state is ProgressState.SNAPSHOT:
            return False  # the stream decides; a rejection can only be stale here
        elif self.next - 1 != rejected:
            return False
        # next - 1 must be a position the follower might match: below the rejected one and
        # above what it already acknowledged.
        self.next = max(min(rejected, new_next), self.match + 1)
        self.become_probe()
        return True
