"""The apply loop: committed entries and installed snapshots into the state machine, in order,
and the outcome of every proposal waiting on them.

The driver queues work with ``enqueue`` (committed entries) and ``enqueue_install`` (a snapshot
from the leader, already handed to the storage writer); the loop applies it in that order,
resolves the proposals appended at those indexes (``PendingProposals``, univrs/runtime/
proposals.py: the rules the simulator runs too) and reports ``Applied`` to the driver (a
checkpoint) after every ``APPLY_CHUNK`` commands or ``APPLY_CHUNK_SECONDS``, whichever comes
first, so it never hogs the event loop (the last chunk of the work queued has no checkpoint of
its own: the wait for more work ends the step; its report may be left for the driver's next
step, ``applied_later``). The bound counts commands, not entries: a batch entry
holds up to 256 commands, and a node catching up (a joined member after its snapshot install,
a restart replaying its log) has hundreds of them queued at once; 512 entries between
checkpoints were seconds of CPU with no ping or heartbeat answered (docs/state-at-scale.md,
"Ninth increment"). A small commit may instead apply on the driver's step (``apply_now``,
only while this loop waits with nothing queued, so the order holds; the driver reports it to
the core itself). The proposal outcomes:

* the state machine's response, when the proposal's own entry (same index and term) applies;
* ``ProposalDropped`` when the entry applied at its index has another term: its own entry
  was replaced and can never commit (State Machine Safety);
* ``OutcomeUnknown`` when a snapshot installed from the leader covers its index: the snapshot
  says nothing about which entry sat there, so it may have applied. Never retried blindly.

Each applied command's changes (rendered as events only when read) go to the watch history
(``watch_hub``, univrs/runtime/watch.py) at its revision, from one place (``_apply_one``); a
restored snapshot resets it (what came before is compacted there).

Batch entries (payload version 2, univrs/runtime/payload.py): the commands of one entry apply
with ``ClusterStateMachine.apply_batch`` at consecutive revisions; their proposals wait as one
``ProposeBatch`` at the entry's index, and each gets its own command's response (all of them
the same outcome when the entry was replaced or covered by a snapshot). A payload that does
not decode fails every command of the entry alike; an envelope that does not fails alone.

This node's own entries (a proposal waits at the entry's index and term) are read from the
plain document the proposer encoded, not decoded from their bytes again, when it round-trips
exactly (univrs/runtime/payload.py says why that applies what the followers decode).

A committed entry of a payload version newer than this node applies stops the node
(``UnsupportedPayloadVersion``, logged at CRITICAL with the index): answering it with an error
would make this replica diverge from the ones that apply it. A leader proposes batch entries
only once every member announced it applies them (univrs/runtime/capabilities.py), so this
happens only to a node started with older code on a log that already holds them.

Entries the installed snapshot already covers are skipped. Only this loop changes the state
machine, the applied index and the applied membership (``RuntimeView.applied_membership``).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence

import attrs
import trio

from univrs.errors import OutcomeUnknown, ProposalDropped
from univrs.raft.messages import Entry, EntryKind, SnapshotMeta, decode_membership
from univrs.raft.ready import SnapshotInstall
from univrs.runtime.events import Applied, Propose, ProposeBatch
from univrs.runtime.payload import (
    MAX_PAYLOAD_VERSION,
    Decoded,
    UnsupportedPayloadVersion,
    decode_entry,
    decode_own_entry,
)
from univrs.runtime.ports import Histogram, Metrics
from univrs.runtime.proposals import Outcome, PendingProposals
from univrs.runtime.snapshots import SnapshotChecker, restore
from univrs.runtime.view import RuntimeView
from univrs.runtime.watch import WatchHub
from univrs.sm.objects import AppliedChanges
from univrs.sm.responses import ErrorCode, Failure, Response
from univrs.sm.state import ClusterStateMachine

log = logging.getLogger("univrs.node")

# Commands applied between two checkpoints of the apply loop (an entry that carries none, a
# no-op or a configuration, counts as one); an entry is never split, so a chunk ends at the
# first entry that reaches the bound (at most APPLY_CHUNK - 1 + one batch entry's commands).
APPLY_CHUNK = 256
# ... and at most about this long (trio's clock, checked after each entry): on a loaded machine
# 256 commands took over 100 ms, and an HTTP request needs several scheduling rounds.
APPLY_CHUNK_SECONDS = 0.02
CONFIG_TERMS = 64  # applied CONFIG entries whose term is remembered (membership changes)


@attrs.define(eq=False)
class Applier:
    """Runs the apply loop (``run``); see the module docstring."""

    sm: ClusterStateMachine
    view: RuntimeView
    events: trio.MemorySendChannel[object]  # the driver's inbox: ``Applied`` reports
    metrics: Metrics
    # Called after each queued batch of entries is applied (the snapshotter's threshold check)
    # and after a snapshot from the leader is restored (with its meta).
    after_apply: Callable[[], None]
    on_restored: Callable[[SnapshotMeta], None]
    watch_hub: WatchHub = attrs.field(factory=WatchHub)
    # Takes a state machine restored from a snapshot and returns the one to apply to (a
    # persistent backend stores it: ``StateBackend.adopt``).
    adopt: Callable[[ClusterStateMachine], ClusterStateMachine] = lambda sm: sm
    # Appended proposals by index (the driver adds them; this loop settles them).
    # A batch entry's proposals wait as one ``ProposeBatch`` (univrs/runtime/packing.py).
    pending: PendingProposals[Propose | ProposeBatch] = attrs.field(factory=PendingProposals)
    # The newest entry payload version this node applies (lower only in tests, to play a node
    # of older code: univrs/runtime/payload.py).
    max_payload_version: int = MAX_PAYLOAD_VERSION
    # Offered the report of the last chunk of the work queued now: True if the driver takes
    # it in by itself at its next step, with no ``Applied`` event (step.py ``_applied_later``).
    applied_later: Callable[[int], bool] = lambda _index: False
    applied_index: int = attrs.field(init=False)
    applied_term: int = attrs.field(init=False)
    _config_terms: dict[int, int] = attrs.field(factory=dict, init=False)  # index -> term
    _queue: collections.deque[tuple[Entry, ...] | SnapshotInstall] = attrs.field(
        factory=collections.deque, init=False
    )
    _wakeup: trio.Event = attrs.field(factory=trio.Event, init=False)
    _idle: bool = attrs.field(default=False, init=False)  # the loop waits for work
    _durable: dict[int, trio.Event] = attrs.field(factory=dict, init=False)
    # While entries apply (their proposers' waiters filled), what to call once they are
    # applied, in the same step (``at_end``); None between applies.
    _ending: list[Callable[[], None]] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.applied_index = self.view.core.status().applied
        self.applied_term = self.sm.last_applied_term
        self.watch_hub.reset(self.sm.revision)

    def enqueue(self, entries: tuple[Entry, ...]) -> None:
        """Committed entries to apply, after everything queued before."""
        self._queue.append(entries)
        self._wakeup.set()

    def enqueue_install(self, install: SnapshotInstall, durable: trio.Event | None = None) -> None:
        """A snapshot from the leader to restore, after everything queued before (the storage
        writer stores it: it was submitted to the writer before this call). ``durable`` is set
        once it is stored: the restored state is adopted only then (a persistent state that
        got ahead of the durable log would be refused at the next start)."""
        if durable is not None:
            self._durable[id(install)] = durable
        self._queue.append(install)
        self._wakeup.set()

    def config_term(self, index: int) -> int | None:
        """The term of the CONFIG entry applied at ``index``, if it was applied lately."""
        return self._config_terms.get(index)

    def at_end(self, fn: Callable[[], None]) -> bool:
        """Call ``fn`` once the entries being applied on the driver's step now (``apply_now``)
        are applied, in this same step (True); False when none are (a waiter filled by the
        apply loop, or failed elsewhere). For a proposer's waiter callback that wants to act
        on its answer without a task step of its own (univrs/api/fast.py ``_answer_on_step``).
        Not in the apply loop: there (large commits, many clients) the answers' rendering and
        writing would come before the loop's ``Applied`` report, which the driver's next
        batch waits for. ``fn`` must not raise; one that does is logged as the bug it is.
        It runs before the state's transaction of those entries commits, inside it."""
        ending = self._ending
        if ending is None:
            return False
        ending.append(fn)
        return True

    def _ended(self) -> None:
        ending, self._ending = self._ending, None
        for fn in ending or ():
            try:
                fn()
            except Exception:  # a bug in the caller's callback: not the apply's to die of
                log.exception("a callback at the end of an apply failed")

    def apply_now(self, entries: tuple[Entry, ...]) -> bool:
        """Apply ``entries`` at once, on the caller's task (the driver's step), if the loop
        waits with nothing queued; False if they must be queued instead. The caller reports
        the new ``applied_index`` to the core itself (no ``Applied`` event)."""
        if not self._idle or self._queue:
            return False
        self._ending = []
        try:
            with self.sm.batch():
                for entry in entries:
                    if entry.index > self.applied_index:
                        self._apply_one(entry)
                # The answers go out before the state's transaction commits (session 27: a
                # one-client write's answer no longer waits for the state's page writes).
                # What they answer is committed in the log, durable on a quorum; the state
                # is not synced anyway and is rebuilt from the log if its commit fails (the
                # node stops). Nobody reads the state in between: this runs to the commit
                # without a checkpoint, and a client answered here asks again only after.
                self._ended()
        finally:
            self._ended()  # (a filled waiter's answer is due even if a later entry failed)
        self.after_apply()
        return True

    async def run(self) -> None:
        """Apply whatever is queued, in order, until cancelled."""
        while True:
            self._idle = True
            await self._wakeup.wait()
            self._idle = False
            self._wakeup = trio.Event()
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, SnapshotInstall):
                    await self._restore(item)
                    continue
                entries = [e for e in item if e.index > self.applied_index]
                at = 0
                while at < len(entries):
                    # One batch per chunk: a persistent state commits it in one transaction
                    # with its applied index, before anything else runs (no await inside).
                    done, until = 0, trio.current_time() + APPLY_CHUNK_SECONDS
                    with self.sm.batch():
                        while at < len(entries) and done < APPLY_CHUNK:
                            done += self._apply_one(entries[at])
                            at += 1
                            if trio.current_time() >= until:
                                break
                    report = Applied(self.applied_index)
                    if at < len(entries) or self._queue:
                        await self.events.send(report)  # a checkpoint between chunks
                        continue
                    # The last chunk of the work queued now: no checkpoint of its own, for the
                    # wait for more work just below ends this step anyway (a checkpoint here
                    # cost every apply a second scheduling round of this task: issue 14,
                    # round 16). A full inbox is waited for, as ``send`` does.
                    if self.applied_later(report.index):
                        continue
                    try:
                        self.events.send_nowait(report)
                    except trio.WouldBlock:
                        await self.events.send(report)
                self.after_apply()

    async def _restore(self, install: SnapshotInstall) -> None:
        meta = install.meta
        started = trio.current_time()
        check = self.view.core.snapshot_check
        checked = check.take(meta, install.data) if isinstance(check, SnapshotChecker) else None
        if checked is None:
            restored = await trio.to_thread.run_sync(restore, install.data)
        else:
            restored = checked  # restored once, by the check just before (no second decode)
        durable = self._durable.pop(id(install), None)
        if durable is not None:
            await durable.wait()  # the writer stored the snapshot: now the state may follow
        adopting = trio.current_time()
        self.sm = self.adopt(restored)
        adopted = trio.current_time() - adopting  # on this loop (a staged env: renames, fsyncs)
        self.watch_hub.reset(self.sm.revision)  # what happened before it is unknown here
        self.applied_index, self.applied_term = meta.index, meta.term
        self.view.applied_membership = meta.membership
        self.on_restored(meta)
        covered = self.pending.covered(meta.index)
        if covered:
            # The snapshot does not say which entry sat at their indexes: ours may have
            # applied (the rule is PendingProposals.covered_outcome: unknown).
            outcome = self.pending.covered_outcome()
            what = f"proposals up to {meta.index} were covered by a snapshot from the leader"
            proposals = [
                p
                for token in covered
                for p in (token.proposals if isinstance(token, ProposeBatch) else (token,))
            ]
            for p in proposals:  # one exception each: they are raised in different tasks
                p.waiter.fail(outcome_error(outcome, what))
            failed = self.metrics.proposals_dropped
            if outcome is not Outcome.NOT_APPLIED:
                failed = self.metrics.proposals_unknown
            failed.inc(len(proposals))
        log.info(
            "snapshot installed",
            extra={
                "index": meta.index,
                "term": meta.term,
                "bytes": len(install.data),
                "restored_by_check": checked is not None,
                "seconds": round(trio.current_time() - started, 3),
                "adopt_seconds": round(adopted, 3),
            },
        )
        await self.events.send(Applied(meta.index))

    def _apply_one(self, entry: Entry) -> int:
        """Apply ``entry``; returns how many commands it carried (1 at least: the apply
        loop's measure of work, ``APPLY_CHUNK``)."""
        # One response per command of the entry (None: not a command entry).
        responses: list[Response] | None = None
        sm, hub = self.sm, self.watch_hub
        if entry.kind is EntryKind.NORMAL:
            own = self.pending.own(entry.index, entry.term)
            try:
                if own is not None and own.payload == entry.data:
                    decoded = decode_own_entry(entry.data, own.doc, self.max_payload_version)
                else:
                    decoded = decode_entry(entry.data, self.max_payload_version)
            except UnsupportedPayloadVersion as exc:
                log.critical(
                    "stopping: committed entry of an unsupported payload version",
                    extra={"index": entry.index, "term": entry.term, "reason": str(exc)},
                )
                raise
            # Every command's changes handed to the watch history once per entry.
            captured: list[tuple[int, AppliedChanges]] = []
            responses = apply_decoded(sm, entry, decoded, captured)
            if not isinstance(decoded, str) and decoded[2]:  # a batch entry
                hub.applied_many(captured, len(entry.data) // len(decoded[0]))
        else:
            if entry.kind is EntryKind.CONFIG:
                self.view.applied_membership = decode_membership(entry.data)
                self._config_terms[entry.index] = entry.term
                if len(self._config_terms) > CONFIG_TERMS:
                    del self._config_terms[min(self._config_terms)]
            sm.mark_applied(index=entry.index, term=entry.term)
        self.applied_index, self.applied_term = entry.index, entry.term
        if hub.revision < sm.revision:  # not a batch entry (its commands reported each)
            hub.applied(sm.revision, sm.last_changes(), len(entry.data))
        work = 1 if responses is None else len(responses)
        settled = self.pending.applied(entry.index, entry.term)
        if settled is None:
            return work
        token, outcome = settled
        proposals = token.proposals if isinstance(token, ProposeBatch) else (token,)
        if outcome is Outcome.APPLIED and responses is not None:
            if len(responses) == 1 and len(proposals) > 1:  # a bad payload fails all alike
                responses = responses * len(proposals)
            if len(responses) != len(proposals):  # our own entry: cannot happen
                raise AssertionError(
                    f"entry {entry.index} carries {len(responses)} commands, "
                    f"{len(proposals)} were proposed in it"
                )
            for p, response in zip(proposals, responses, strict=True):
                p.waiter.set(response)
            _observe_commits(self.metrics.commit_seconds, proposals)
        else:
            for p in proposals:
                p.waiter.fail(
                    ProposalDropped(f"entry {entry.index} was replaced by a newer leader's entry")
                )
            self.metrics.proposals_dropped.inc(len(proposals))
        return work


def _observe_commits(histogram: Histogram, proposals: Sequence[Propose]) -> None:
    """The commit latency of applied proposals: one observation per run of proposals handed
    over together (a client frame's share its start time: ``propose_together``), not one
    each (a histogram observation costs about 0.8 µs)."""
    now = trio.current_time()
    started, count = 0.0, 0
    for p in proposals:
        if count and p.started == started:
            count += 1
            continue
        if count:
            histogram.observe_many(now - started, count)
        started, count = p.started, 1
    if count:
        histogram.observe_many(now - started, count)


def apply_decoded(
    sm: ClusterStateMachine,
    entry: Entry,
    decoded: Decoded | str,
    captured: list[tuple[int, AppliedChanges]] | None = None,
) -> list[Response]:
    """The state machine's part of applying the normal entry ``entry`` whose payload decoded to
    ``decoded`` (``decode_entry``'s answer): a payload that does not decode only marks its index
    applied (its one response a failure), a version-1 entry is one command, a batch entry its
    commands at consecutive revisions (their changes appended to ``captured`` when given). The
    apply loop and ``univrs state-scrub``'s replay both apply entries through this."""
    if isinstance(decoded, str):
        sm.mark_applied(index=entry.index, term=entry.term)
        return [_failure(decoded)]
    if not decoded[2]:  # version 1: one command
        command = decoded[0][0]
        assert not isinstance(command, str)  # a bad version-1 envelope fails whole
        return [sm.apply(command, index=entry.index, term=entry.term, time_ms=decoded[1])]
    commands, time_ms, _ = decoded
    return sm.apply_batch(
        [_failure(c) if isinstance(c, str) else c for c in commands],
        index=entry.index,
        term=entry.term,
        time_ms=time_ms,
        captured=captured,
    )


def _failure(reason: str) -> Failure:
    return Failure(code=ErrorCode.INVALID_ARGUMENT, message=reason)


def outcome_error(outcome: Outcome, what: str) -> Exception:
    """The error a proposer gets for an attempt that ended without a response."""
    if outcome is Outcome.NOT_APPLIED:
        return ProposalDropped(f"{what}; they did not apply: retrying is safe")
    return OutcomeUnknown(f"{what}; whether they applied is unknown here")
