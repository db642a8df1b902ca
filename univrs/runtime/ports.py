"""What the runtime needs from the world around it: small typed interfaces (``Protocol``).

The runtime is built whole from these at construction (``RaftRuntime``), and anything that has
the methods fits: ``univrs.storage.LogStore`` and the tests' in-memory store are a
``LogStorage``, ``univrs.net.transport.RaftTransport`` and the tests' in-memory networks a
``Transport``, ``univrs.runtime.metrics.NodeMetrics`` a ``Metrics`` (``NO_METRICS`` when there
is no registry). Each interface holds only what the runtime calls, so a fake for a test is a
few lines.

Blocking calls: ``LogStorage``'s methods may block (LMDB, fsync); the runtime calls them only
from the storage writer, in a worker thread (``write_in_thread``). The one exception is a small
write, which the writer runs on the event loop through the storage's ``append_nowait`` (if it
has one): that call never waits for another writer or a map growth, it refuses instead
(``univrs.errors.WouldWait``), and the writer then runs the write on its thread
(univrs/runtime/writer.py, "Small writes on the loop").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from univrs.raft.messages import Entry, HardState, Message, SnapshotMeta
from univrs.sm.state import ClusterStateMachine


class AppendLog(Protocol):
    """One synced write of the log (``LogStorage.append``): the storage writer's group commit."""

    def __call__(
        self,
        *,
        hard_state: HardState | None,
        truncate_from: int | None,
        entries: Sequence[Entry],
    ) -> None: ...


class LogStorage(Protocol):
    """The node's durable log and snapshot store, as the runtime uses it (blocking calls)."""

    def append(
        self,
        *,
        hard_state: HardState | None,
        truncate_from: int | None,
        entries: Sequence[Entry],
    ) -> None:
        """Persist one (merged) Ready in one synced transaction: drop entries from
        ``truncate_from`` on, append ``entries``, store ``hard_state``."""
        ...

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a snapshot durably (dropping the log it covers, or that conflicts with it)."""
        ...

    def snapshot_meta(self) -> SnapshotMeta | None:
        """The newest stored snapshot's meta, or None."""
        ...

    def compact(self, up_to: int) -> None:
        """Drop the log entries up to ``up_to`` (a stored snapshot covers them)."""
        ...


class Transport(Protocol):
    """Where the runtime sends Raft messages. ``send`` never blocks and may drop (Raft
    tolerates loss); replies come back through the runtime's inbox (``Inbox``). ``flush``
    never blocks either."""

    def send(self, msg: Message) -> None: ...

    def send_now(self, msgs: Sequence[Message]) -> None:
        """``send`` each of ``msgs`` (one step's, in order); the transport may write them
        from the caller's step (univrs/net/transport.py, s17-lat1)."""
        ...


class Counter(Protocol):
    """A monotonically increasing metric."""

    def inc(self, amount: float = ..., /) -> None: ...


class Histogram(Protocol):
    """A distribution of observed values (seconds)."""

    def observe(self, value: float, /) -> None: ...

    def observe_many(self, value: float, count: int, /) -> None:
        """``count`` observations of the same ``value`` (one update)."""
        ...


class Metrics(Protocol):
    """The metrics the runtime updates (``univrs.runtime.metrics.NodeMetrics`` has them)."""

    @property
    def proposals(self) -> Counter:
        """Entries proposed on this node while it led."""
        ...

    @property
    def elections(self) -> Counter:
        """Elections this node started."""
        ...

    @property
    def leader_changes(self) -> Counter:
        """Times this node saw a new leader."""
        ...

    @property
    def fsync_seconds(self) -> Histogram:
        """Duration of one synced log write."""
        ...

    @property
    def commit_seconds(self) -> Histogram:
        """From proposal to applied, on the proposing leader."""
        ...

    @property
    def proposals_dropped(self) -> Counter:
        """Proposals that ended certainly not applied (refused, or replaced by another
        leader's entry)."""
        ...

    @property
    def proposals_unknown(self) -> Counter:
        """Proposals whose outcome became unknown here (covered by the leader's snapshot)."""
        ...

    @property
    def loop_lag_seconds(self) -> Histogram:
        """How late each tick fired (the event loop's or the process's stalls: ticks.py)."""
        ...


class _Nothing:
    """A counter and a histogram that record nothing."""

    def inc(self, amount: float = 1.0, /) -> None:
        pass

    def observe(self, value: float, /) -> None:
        pass

    def observe_many(self, value: float, count: int, /) -> None:
        pass


class NoMetrics:
    """``Metrics`` that record nothing (a runtime without a registry: tests, tools)."""

    proposals = elections = leader_changes = _Nothing()
    proposals_dropped = proposals_unknown = _Nothing()
    fsync_seconds = commit_seconds = loop_lag_seconds = _Nothing()


NO_METRICS: Metrics = NoMetrics()


class StateBackend(Protocol):
    """Where the state machine lives (``[state] backend``, docs/state-at-scale.md). In memory
    (``MEMORY_STATE``) it is rebuilt from the newest snapshot and the log at every start; in
    LMDB (``univrs.storage.sm_tables.StateEnv``) it is on disk, committed once per applied
    batch with its applied index, and a start resumes from it."""

    def adopt(self, sm: ClusterStateMachine) -> ClusterStateMachine:
        """The state machine to apply to from now on, after ``sm`` was restored from a
        snapshot (the apply loop calls it; a persistent backend replaces its whole stored
        state by ``sm``'s in one transaction and returns the state on disk)."""
        ...

    def durable(self) -> None:
        """Force what was committed so far to disk (called in the storage writer's thread
        before the log is compacted: the log is only compacted below a durable state)."""
        ...


class _MemoryState:
    def adopt(self, sm: ClusterStateMachine) -> ClusterStateMachine:
        return sm

    def durable(self) -> None:
        pass


MEMORY_STATE: StateBackend = _MemoryState()
