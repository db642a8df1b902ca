"""``MemoryStateStore``: the in-memory ``StateStore`` with a watch, for tests and the
reconciler's unit tests (one process, no Raft).

``univrs.sm`` is pure (no I/O library), so its ``InMemoryStateStore`` cannot wait; this
subclass keeps every event (unbounded: a test store) and wakes watchers with trio.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import attrs
import trio

from univrs.sm.events import Event, ObjectKind
from univrs.sm.store import InMemoryStateStore


@attrs.define(eq=False)
class MemoryStateStore(InMemoryStateStore):
    """``InMemoryStateStore`` plus ``watch`` (nothing is ever compacted)."""

    _events: list[Event] = attrs.field(factory=list, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)

    def applied(self, events: tuple[Event, ...]) -> None:
        if events:
            self._events.extend(events)
            self._changed.set()
            self._changed = trio.Event()

    async def watch(
        self, kinds: frozenset[ObjectKind] = frozenset(ObjectKind), from_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        """Every event of ``kinds`` from ``from_revision`` on, in order, forever."""
        start = self.state_machine.revision + 1 if from_revision is None else from_revision
        seen = 0
        while True:
            for event in self._events[seen:]:
                seen += 1
                if event.revision >= start and event.kind in kinds:
                    yield event
            await self._changed.wait()
