"""Which configuration is in effect: the latest CONFIG entry in the log (dissertation 4.1).

A configuration takes effect as soon as its entry is appended, whether or not it is committed,
and reverts when a conflict truncates that entry. ``ConfigHistory`` keeps the CONFIG entries of
the in-memory log (index and decoded Membership, ascending) on top of a base configuration (the
snapshot's, or the one the node started with), so both directions are cheap.

Changes are single-server (dissertation 4.2): at most one voter added or removed per entry, and
at most ``_max_inflight_config_changes()`` uncommitted CONFIG entries (the node enforces both).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from univrs.raft.messages import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    decode_membership,
    encode_membership,
)
from univrs.raft.ready import InitialState


def voter_changes(old: Membership, new: Membership) -> int:
    """How many voters a change adds or removes (single-server changes allow at most 1).

    A member is an id and an incarnation: a voter kept under its id but bound to another
    incarnation than ``old`` bound it to is a removal and an addition (two changes), or the
    old and the new majorities need not overlap while the old incarnation still runs (s14-audit
    V1). Binding an unbound voter (the bootstrap's binding change) changes no voter: the cores
    already hold such an id to the first incarnation they heard (gate.py ``_maybe_pin``)."""
    changes = len(old.voters ^ new.voters)
    for voter in old.voters & new.voters:
        was = old.incarnation_of(voter)
        if was is not None and new.incarnation_of(voter) != was:
            changes += 2
    return changes


@attrs.define(eq=False)
class ConfigHistory:
    """The configurations in the log, newest last, over a base configuration."""

    base: Membership
    base_index: int = 0
    _changes: list[tuple[int, Membership]] = attrs.field(factory=list)
    named: set[str] = attrs.field(factory=set)
    """Ids (voters and learners, any incarnation) of the committed configurations this
    history folded away: the bases that compaction or a snapshot's install replaced and the
    committed CONFIG entries compaction folded into them. Kept durable by the node
    (``HardState.named``), so that ``ever_lists`` answers for the log's whole history."""

    @property
    def current(self) -> Membership:
        """The configuration in effect (the latest appended one)."""
        return self._changes[-1][1] if self._changes else self.base

    @property
    def current_index(self) -> int:
        """The log index of the configuration in effect (``base_index`` for the base)."""
        return self._changes[-1][0] if self._changes else self.base_index

    def committed(self, commit: int) -> Membership:
        """The latest configuration whose entry is at or below ``commit``."""
        for idx, m in reversed(self._changes):
            if idx <= commit:
                return m
        return self.base

    def ever_lists(self, node: str, *, folded: bool = True) -> bool:
        """Does a configuration of this log's history list ``node``, as a voter or a learner,
        at any incarnation: the base, one in the log after it, or a committed one folded
        away by compaction or a snapshot's install (``named``)? Uncommitted configurations a
        conflict truncated are not history. ``folded`` False: leave ``named`` out (the log
        the node holds now, the rule before ``named``)."""
        for _, m in self._changes:
            if node in m.voters or node in m.learners:
                return True
        if node in self.base.voters or node in self.base.learners:
            return True
        return folded and node in self.named

    def _fold(self, m: Membership) -> None:
        self.named.update(m.voters)
        self.named.update(m.learners)

    def on_append(self, entries: Iterable[Entry]) -> bool:
        """Take CONFIG entries among ``entries`` into effect; True if the configuration changed."""
        changed = False
        for e in entries:
            if e.kind is EntryKind.CONFIG:
                try:
                    m = decode_membership(e.data)
                except (ValueError, KeyError, TypeError) as exc:
                    # Every CONFIG entry is encoded by a leader's propose_membership/bootstrap;
                    # an undecodable one means a corrupt log, never a recoverable condition.
                    raise AssertionError(f"undecodable CONFIG entry at {e.index}: {exc}") from exc
                assert not self._changes or self._changes[-1][0] < e.index
                self._changes.append((e.index, m))
                changed = True
        return changed

    def on_truncate(self, index: int) -> bool:
        """Revert CONFIG entries at ``index`` or later; True if the configuration changed."""
        changed = False
        while self._changes and self._changes[-1][0] >= index:
            self._changes.pop()
            changed = True
        return changed

    def compact(self, index: int) -> None:
        """The log up to ``index`` was compacted: fold the configurations there into the base.

        Only committed entries are compacted, and truncation never reaches them, so the base
        never needs to be undone.
        """
        while self._changes and self._changes[0][0] <= index:
            self._fold(self.base)
            self.base_index, self.base = self._changes.pop(0)

    def install(
        self, index: int, membership: Membership, *, keep_suffix: bool, commit: int = 0
    ) -> bool:
        """A snapshot at ``index`` replaced the log (or its prefix, with ``keep_suffix``).

        Its configuration becomes the base; configurations after ``index`` survive only with
        the suffix. The old base and the configurations at or below ``commit`` (the node's
        commit index before the install: committed, part of its history) go to ``named``.
        True if the configuration in effect changed.
        """
        before = self.current
        self._fold(self.base)
        for i, m in self._changes:
            if i <= commit:
                self._fold(m)
        if keep_suffix:
            self._changes = [(i, m) for i, m in self._changes if i > index]
        else:
            self._changes = []
        self.base = membership
        self.base_index = index
        return self.current != before

    def uncommitted(self, commit: int) -> int:
        """How many CONFIG entries lie after ``commit`` (not yet committed)."""
        n = 0
        for idx, _ in reversed(self._changes):
            if idx <= commit:
                break
            n += 1
        return n


def bootstrap_state(membership: Membership) -> InitialState:
    """The start state of every member of a new static cluster.

    HardState(term=1) and a CONFIG entry at (index 1, term 1) holding ``membership``: every
    bootstrapped log starts identical, so the first leader needs no repair and commits it with
    its NOOP.
    """
    entry = Entry(term=1, index=1, kind=EntryKind.CONFIG, data=encode_membership(membership))
    return InitialState(hard_state=HardState(term=1), entries=(entry,), membership=membership)
