"""The watch history: the recent change events of this node's applied state, for watchers.

Theory of operation. The apply loop hands every applied entry's changes to ``WatchHub.applied``
(``ClusterStateMachine.last_changes``: the same changes in the same order on every replica,
since apply is deterministic), and a snapshot install or a restart to ``reset``. Changes are
kept as captured (the changed objects, each changed workload's instance counts), encoded as one
``bytes`` per revision (univrs/runtime/captured.py: the objects' snapshot rows, ``marshal``-ed), and
rendered as events (``last_events``'s) only when a watcher first reads their revision: building
two workload views per write cost more than applying it, on every node, watched or not. Kept as
objects they were about 18 containers per write for seconds, which the garbage collector's full
collections walked again and again, stalling the event loop (docs/performance.md, Round 10); a
``bytes`` is not tracked by the collector, so the history costs it a handful of containers
whatever its length. The newest ``young`` revisions' captured changes are kept as objects too
(watchers at the head render them without decoding), and the events rendered for reads are
kept for the newest ``RENDERED_KEPT`` revisions read (watchers reading the same revisions
share them). The hub keeps
them in one bounded, shared history: at most ``capacity`` events and about ``max_bytes``
(estimated from the commands' sizes; events share the state machine's immutable objects), the
oldest revisions dropped first, whole. Nothing is buffered per watcher: a watcher is a
cursor (the next revision it wants) that reads the shared history, so a slow watcher costs no
memory; once its cursor falls behind what the history still holds it gets ``Compacted``
(etcd's semantics: list again, then watch from the list's revision + 1).

Revisions are the state machine's (``ClusterStateMachine.revision``: the log index, unless
batch entries applied, whose commands take one revision each; the apply loop hands each
command's changes over at its own revision). ``revision`` is the last revision seen here;
``compacted_revision`` is the highest revision whose events may be missing here (the
revision the node started or installed a snapshot at, or the newest revision dropped for
room). A
read from revision ``r`` is served iff ``r > compacted_revision``; it returns the events of
revisions ``r`` .. ``through`` (whole revisions, filtered by kind) and ``through``, so the next
read starts at ``through + 1``: no gap, no duplicate, on this node or on any other (their
events are the same; a node that has not applied as far yet simply waits).

The kinds of each kept revision's events are kept beside it (session 27), so a read of some
kinds skips the revisions of others without rendering them, and a poll of some kinds waits
for a revision with one of them (``_wait_kinds``), not for every revision applied: a watcher
of machines (the reconciler of a cluster with none registered) costs nothing per write.

Bounds: ``max_watchers`` concurrent watchers per node (``Unavailable`` beyond, so a client
goes to another member), ``capacity`` events kept, and a read returns at most ``limit``
events (whole revisions: one revision's events are never split, so it may return more when a
single revision holds more).
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import trio

from univrs.errors import Compacted, Unavailable
from univrs.runtime.captured import decode_changes, encode_changes, encode_workload_change
from univrs.sm.events import Event, ObjectKind
from univrs.sm.objects import AppliedChanges

DEFAULT_CAPACITY = 10_000  # events kept per node
DEFAULT_MAX_WATCHERS = 1_000  # concurrent watchers per node
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # estimated bytes the kept events hold
EVENT_OVERHEAD = 256  # estimated bytes of one event besides the command's data
RENDERED_KEPT = 256  # revisions whose rendered events are kept for further readers
_ALL_KINDS = frozenset(ObjectKind)
_ONE_KIND = {kind: frozenset({kind}) for kind in ObjectKind}
_WORKLOAD = ObjectKind.WORKLOAD


def _kinds_of(changes: tuple[Event, ...] | AppliedChanges) -> frozenset[ObjectKind]:
    """The kinds of the events of one revision, without rendering them."""
    if isinstance(changes, AppliedChanges):
        items = changes.items
        if len(items) == 1:
            return _ONE_KIND[items[0][0]]
        return frozenset([item[0] for item in items])
    return frozenset([event.kind for event in changes])


YOUNG_KEPT = 128  # newest revisions whose captured changes are also kept as objects


@attrs.define(eq=False, slots=True)
class _KindWait:
    """Polls of the same kinds waiting (``WatchHub._wait_kinds``): set by the first revision
    with one of them (``first``; 0: the history was reset)."""

    event: trio.Event = attrs.field(factory=trio.Event)
    first: int = 0


@attrs.define(eq=False)
class WatchHub:
    """This node's bounded event history and its watchers (see the module docstring)."""

    capacity: int = DEFAULT_CAPACITY
    max_watchers: int = DEFAULT_MAX_WATCHERS
    max_bytes: int = DEFAULT_MAX_BYTES
    young: int = YOUNG_KEPT  # the newest revisions kept as objects too (rendered cheaper)
    # The kept revisions, in order, as parallel lists (the revision at position i is
    # _revisions[i], _sources[i], ...); the live ones start at _head (dropped ones are trimmed
    # lazily, so dropping is O(1) amortized). Only revisions with events are kept. A source is
    # the revision's captured changes encoded (``encode_changes``: a ``bytes``, which the
    # garbage collector does not track) or events handed over as such (tests).
    _revisions: list[int] = attrs.field(factory=list, init=False)
    _sources: list[bytes | tuple[Event, ...]] = attrs.field(factory=list, init=False)
    # The kinds of each kept revision's events (session 27): a read of some kinds skips the
    # revisions of others without rendering them.
    _kinds: list[frozenset[ObjectKind]] = attrs.field(factory=list, init=False)
    # Polls of some kinds (not all) waiting for a revision with an event of one of them, by
    # those kinds: woken by such a revision (or a reset) only, not by every apply.
    _kind_waits: dict[frozenset[ObjectKind], _KindWait] = attrs.field(factory=dict, init=False)
    # Running totals since the last reset, after the revision at each position: its events and
    # their estimated bytes added to those of every revision before it (kept or dropped). A
    # trim finds how many revisions to drop by bisecting these (round 18: not a loop over the
    # dropped ones), and the live history holds _total_* - _dropped_* of each.
    _ends_count: list[int] = attrs.field(factory=list, init=False)
    _ends_cost: list[int] = attrs.field(factory=list, init=False)
    _total_count: int = attrs.field(default=0, init=False)
    _total_cost: int = attrs.field(default=0, init=False)
    _dropped_count: int = attrs.field(default=0, init=False)  # the totals at the live head
    _dropped_cost: int = attrs.field(default=0, init=False)
    # Events rendered for reads, by revision, the newest RENDERED_KEPT revisions read: watchers
    # reading the same revisions share one rendering (insertion order: the oldest first out).
    _rendered: dict[int, tuple[Event, ...]] = attrs.field(factory=dict, init=False)
    # The captured changes of the newest ``young`` revisions, by revision, as objects too:
    # watchers at the head (most of them) render these without decoding; few enough that the
    # collector's walks of them cost little. Their revisions in order in _young_order (the
    # oldest first out: a deque, not the dict's first key, which the dict finds by skipping
    # the slots of the keys deleted before it).
    _young: dict[int, AppliedChanges] = attrs.field(factory=dict, init=False)
    _young_order: collections.deque[int] = attrs.field(factory=collections.deque, init=False)
    _head: int = attrs.field(default=0, init=False)
    _revision: int = attrs.field(default=0, init=False)
    _compacted: int = attrs.field(default=0, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _armed: bool = attrs.field(default=False, init=False)  # somebody waits on _changed
    _watchers: int = attrs.field(default=0, init=False)
    dropped_events: int = attrs.field(default=0, init=False)  # for metrics: events made room for

    # ------------------------------------------------------------ fed by the apply loop

    def reset(self, revision: int) -> None:
        """Start over at ``revision`` (start-up, a snapshot installed): nothing before or at
        it is known here."""
        for kept in (self._revisions, self._sources, self._kinds, self._ends_count):
            kept.clear()
        self._ends_cost.clear()
        self._rendered.clear()
        self._young.clear()
        self._young_order.clear()
        self._head = 0
        self._total_count = self._total_cost = self._dropped_count = self._dropped_cost = 0
        self._revision = self._compacted = revision
        self._wake()
        waits, self._kind_waits = self._kind_waits, {}
        for wait in waits.values():
            wait.event.set()  # (first 0: read again from where it was)

    def applied(
        self, revision: int, events: tuple[Event, ...] | AppliedChanges, size: int = 0
    ) -> None:
        """The entry at ``revision`` (``size`` bytes of command data) was applied with these
        events (maybe none), or with these changes (``ClusterStateMachine.last_changes``),
        rendered as events only if a watcher reads that revision."""
        self._keep(revision, events, size)
        self._trim()
        self._wake()

    def applied_many(self, changes: list[tuple[int, AppliedChanges]], size: int = 0) -> None:
        """``applied(revision, captured, size)`` for each (revision, captured) in order (the
        commands of one batch entry, ``size`` bytes of command data each), the history trimmed
        to its bounds and its watchers woken once, after all of them: the same history as
        calling ``applied`` for each (trimming drops the oldest revisions first, so dropping
        at the end drops the same ones), without the per-command bookkeeping (round 14; round
        18: ``_keep``'s work written out once for the whole entry).

        Session 30: a revision of one workload's change with both sides (a scale, most writes)
        is encoded by ``captured.encode_workload_change`` (both rows in one look-up of
        ``workload_bytes``'s cache: the state's table put the after just before); and the
        young revisions leave once per entry, after all of them came in (the same ones
        leave)."""
        last = self._revision
        total_count, total_cost = self._total_count, self._total_cost
        revisions, kinds_kept = self._revisions, self._kinds
        first = len(kinds_kept)
        ends_count, ends_cost = self._ends_count, self._ends_cost
        source = self._sources.append
        keep_young = self.young
        young = self._young if keep_young > 0 else {}  # (none kept: a dict dropped after)
        one_kind, workload = _ONE_KIND, _WORKLOAD
        one_cost = 2 * size + EVENT_OVERHEAD
        for revision, captured in changes:
            assert revision > last, (revision, last)
            last = revision
            items = captured.items
            if len(items) == 1:
                kind, ident, before, after = items[0]
                if kind is workload and before is not None and after is not None:
                    source(encode_workload_change(ident, before, after))
                else:
                    source(encode_changes(captured))
                kinds_kept.append(one_kind[kind])
                total_count += 1
                total_cost += one_cost
            elif items:
                count = len(items)
                source(encode_changes(captured))
                kinds_kept.append(_kinds_of(captured))
                total_count += count
                total_cost += 2 * size + EVENT_OVERHEAD * count
            else:
                continue
            revisions.append(revision)
            ends_count.append(total_count)
            ends_cost.append(total_cost)
            young[revision] = captured
        self._revision = last
        self._total_count, self._total_cost = total_count, total_cost
        kept = len(kinds_kept) - first
        if kept and keep_young > 0:  # the oldest young revisions leave, the same as one by one
            order = self._young_order
            order.extend(revisions[-kept:])
            while len(order) > keep_young:
                del young[order.popleft()]
        if self._kind_waits and kept:  # (before the trim moves them)
            self._wake_kinds(frozenset().union(*kinds_kept[first:]), first)
        self._trim()
        self._wake()

    def _keep(self, revision: int, events: tuple[Event, ...] | AppliedChanges, size: int) -> None:
        assert revision > self._revision, (revision, self._revision)
        self._revision = revision
        count = len(events)
        if not count:
            return
        # The objects after (and before) come from commands of about this size.
        self._total_count += count
        self._total_cost += 2 * size + EVENT_OVERHEAD * count
        self._revisions.append(revision)
        kinds = _kinds_of(events)
        self._kinds.append(kinds)
        if self._kind_waits:
            self._wake_kinds(kinds, len(self._kinds) - 1)
        if isinstance(events, AppliedChanges):
            self._sources.append(encode_changes(events))
            if self.young > 0:
                self._young[revision] = events
                self._young_order.append(revision)
                if len(self._young_order) > self.young:
                    del self._young[self._young_order.popleft()]
        else:
            self._sources.append(events)
        self._ends_count.append(self._total_count)
        self._ends_cost.append(self._total_cost)

    def _trim(self) -> None:
        """Drop the oldest revisions while the history is over its bounds: the fewest that
        bring it within both (each bound is met from some position on; the later one)."""
        head, kept = self._head, len(self._revisions)
        over_count = self._total_count - self.capacity  # events that must go, at least
        over_cost = self._total_cost - self.max_bytes
        if (over_count > self._dropped_count or over_cost > self._dropped_cost) and head < kept:
            to = head
            if over_count > self._dropped_count:
                to = bisect.bisect_left(self._ends_count, over_count, head, kept) + 1
            if over_cost > self._dropped_cost:
                to = max(to, bisect.bisect_left(self._ends_cost, over_cost, head, kept) + 1)
            to = min(to, kept)
            dropped_count = self._ends_count[to - 1]
            self.dropped_events += dropped_count - self._dropped_count
            self._dropped_count, self._dropped_cost = dropped_count, self._ends_cost[to - 1]
            self._compacted = self._revisions[to - 1]
            self._head = head = to
        if head > 1024 and head * 2 > kept:
            for kept_list in (self._revisions, self._sources, self._kinds, self._ends_count):
                del kept_list[:head]
            del self._ends_cost[:head]
            self._head = 0

    def _wake(self) -> None:
        # Only when somebody waits: applying a chunk of entries does not allocate an event each.
        if self._armed:
            self._armed = False
            self._changed.set()
            self._changed = trio.Event()

    def _wake_kinds(self, kinds: frozenset[ObjectKind], at: int) -> None:
        """Wake the polls waiting for a revision with an event of one of ``kinds`` (those of
        the revisions kept from position ``at`` on), each told the first such revision."""
        waits = self._kind_waits
        kept, revisions = self._kinds, self._revisions
        for wanted in [w for w in waits if not w.isdisjoint(kinds)]:
            wait = waits.pop(wanted)
            wait.first = next(
                revisions[j] for j in range(at, len(kept)) if not kept[j].isdisjoint(wanted)
            )
            wait.event.set()

    # ------------------------------------------------------------ read by watchers

    @property
    def revision(self) -> int:
        """The last revision applied here (the state machine's, see the module docstring)."""
        return self._revision

    @property
    def compacted_revision(self) -> int:
        """Every revision up to this one may be missing from the history here."""
        return self._compacted

    @property
    def watchers(self) -> int:
        """Watchers being served now."""
        return self._watchers

    def read(self, kinds: frozenset[ObjectKind], start: int, limit: int) -> tuple[list[Event], int]:
        """(events of ``kinds`` from revision ``start`` on, the last revision covered).

        Whole revisions, at least ``limit`` events unless the history ends first; raises
        ``Compacted`` if revision ``start`` may be missing here."""
        if start <= self._compacted:
            raise Compacted(
                f"revision {start} is compacted on this node (it keeps revisions after "
                f"{self._compacted}); list again and watch from the list's revision + 1",
                current_revision=self._revision,
                compacted_revision=self._compacted,
            )
        found: list[Event] = []
        revisions, kinds_kept = self._revisions, self._kinds
        i = bisect.bisect_left(revisions, start, lo=self._head)
        for j in range(i, len(revisions)):  # no await in here: the lists stay put
            if len(found) >= limit:
                return found, revisions[j] - 1
            if kinds_kept[j].isdisjoint(kinds):
                continue  # none of these kinds: not rendered for this read
            found.extend(e for e in self._events(j) if e.kind in kinds)
        return found, max(self._revision, start - 1)

    def _events(self, at: int) -> tuple[Event, ...]:
        """The events of the kept revision at position ``at``, rendered once for the readers of
        the newest RENDERED_KEPT revisions read."""
        source = self._sources[at]
        if not isinstance(source, bytes):
            return source
        revision = self._revisions[at]
        events = self._rendered.get(revision)
        if events is None:
            captured = self._young.get(revision)
            if captured is None:
                captured = decode_changes(source, revision)
            events = captured.events()
            rendered = self._rendered
            if len(rendered) >= RENDERED_KEPT:
                del rendered[next(iter(rendered))]
            rendered[revision] = events
        return events

    async def wait_beyond(self, revision: int) -> None:
        """Return once a revision after ``revision`` is applied here (or the history reset)."""
        while self._revision <= revision:
            self._armed = True
            await self._changed.wait()

    def _wait_kinds(self, kinds: frozenset[ObjectKind]) -> _KindWait:
        """What is set once a revision with an event of one of ``kinds`` is kept here (or the
        history reset); the caller has read every revision kept so far."""
        wait = self._kind_waits.get(kinds)
        if wait is None:
            wait = self._kind_waits[kinds] = _KindWait()
        return wait

    async def poll(
        self, kinds: frozenset[ObjectKind], start: int, limit: int, wait: float
    ) -> tuple[list[Event], int]:
        """``read``, waiting up to ``wait`` seconds for at least one event: (events, the last
        revision covered; the next poll starts after it). A poll of some kinds only is woken
        by a revision with an event of one of them (session 27: a reconciler waiting for a
        machine's registration is not woken by every write), and reads on from that revision;
        at its deadline either poll answers with the newest revision applied."""
        deadline = trio.current_time() + wait
        every = kinds >= _ALL_KINDS
        while True:
            events, through = self.read(kinds, start, limit)
            if events:
                return events, through
            start = through + 1  # nothing of these kinds up to here
            if trio.current_time() >= deadline:
                return [], through
            if every:
                with trio.move_on_at(deadline):
                    await self.wait_beyond(through)
                continue
            waiting = self._wait_kinds(kinds)
            with trio.move_on_at(deadline):
                await waiting.event.wait()
            # The revisions after ``through`` before the first of these kinds hold none of
            # them: read from that one (others' revisions may have been dropped meanwhile; a
            # poll woken by each revision moved its start along), or, not woken, from none.
            if not waiting.event.is_set():
                return [], max(self._revision, through)
            start = max(start, waiting.first)

    @contextmanager
    def watcher(self) -> Iterator[None]:
        """Count one watcher for as long as the block runs; ``Unavailable`` when this node
        serves ``max_watchers`` already (another member may have room)."""
        if self._watchers >= self.max_watchers:
            raise Unavailable(
                f"this node serves {self.max_watchers} watchers already; watch on another "
                "member or retry later",
                retry_after=1.0,
            )
        self._watchers += 1
        try:
            yield
        finally:
            self._watchers -= 1
