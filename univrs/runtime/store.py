"""``RaftStateStore``: the application's StateStore backed by this node's Raft log.

Writes become log entries proposed on this node (it must lead; forwarding to the leader comes
with the client-surface layer) and return once applied here; linearizable reads wait for a
ReadIndex confirmation, local reads read this replica's state as it is (possibly stale).
Every call has a deadline, never a hang: a write not confirmed in time raises
``OutcomeUnknown`` (it may still commit), a read without a quorum ``Unavailable``.

``watch`` follows this node's applied changes (the watch history, univrs/runtime/watch.py): an
in-process consumer such as a reconciler reads the state with its revision
(``state.last_applied_index``), then watches from revision + 1 (docs/orchestrator.md).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import attrs
import trio

from univrs.errors import OutcomeUnknown, Unavailable
from univrs.runtime.driver import RaftRuntime
from univrs.sm.commands import Command, Envelope
from univrs.sm.events import Event, ObjectKind
from univrs.sm.responses import Response
from univrs.sm.state import ClusterStateMachine
from univrs.sm.store import ReadConsistency, StateStore


@attrs.define(eq=False)
class RaftStateStore(StateStore):
    """StateStore over a RaftRuntime (see the module docstring)."""

    runtime: RaftRuntime
    timeout: float = 10.0

    async def execute(self, command: Command | Envelope) -> Response:
        envelope = command if isinstance(command, Envelope) else Envelope(command=command)
        try:
            with trio.fail_after(self.timeout):
                return await self.runtime.propose(envelope)
        except trio.TooSlowError:
            # Appended (or about to be) and not confirmed: it may still commit. Not
            # ``Unavailable``, which says that nothing was applied.
            raise OutcomeUnknown(
                f"the write was not committed within {self.timeout:g}s (no quorum?); its outcome "
                "is unknown: retry only with the same idempotency key"
            ) from None

    async def read_state(self, consistency: ReadConsistency) -> ClusterStateMachine:
        if consistency is ReadConsistency.LINEARIZABLE:
            try:
                with trio.fail_after(self.timeout):
                    await self.runtime.read_index()
            except trio.TooSlowError:
                raise Unavailable(
                    f"no leader confirmed the read within {self.timeout:g}s"
                ) from None
        return self.runtime.sm

    async def watch(
        self, kinds: frozenset[ObjectKind] = frozenset(ObjectKind), from_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        """The events of ``kinds`` applied on this node from ``from_revision`` on (default:
        the next one), in order, forever; raises ``Compacted`` when the revision is no longer
        kept here (read the state again and watch from its revision + 1). Iterate it inside
        ``contextlib.aclosing`` so that leaving the loop ends the watch at once."""
        hub = self.runtime.watch_hub
        start = hub.revision + 1 if from_revision is None else from_revision
        with hub.watcher():
            while True:
                events, through = await hub.poll(kinds, start, limit=1000, wait=60.0)
                for event in events:
                    yield event
                start = through + 1
