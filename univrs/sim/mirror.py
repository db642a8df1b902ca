"""Mirrors of every simulated node's logs, as the checker (checker.py) sees them.

Logs are mirrored as lists of *prefix ids*: ``ids[i]`` is an interned id of the whole prefix
``entries[1..i]`` (interned from ``(ids[i-1], term, kind, data)``), so "two logs agree up to
``i``" is one integer comparison. ``ids[0] == 0`` is the empty prefix. Each mirrored log also
knows where its CONFIG entries are, so the configuration a node uses (the latest CONFIG entry
in its log, dissertation 4.1) is one lookup. The committed log (built by the checker from the
first apply of each index) lives here too, with its CONFIG entries.

Checks that belong to the mirroring itself are made here: contiguous entries (ready-contract),
log matching, no leader truncating its own log, no log dropping a committed entry.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence

import attrs

from univrs.raft.messages import Entry, EntryKind, Membership, NodeId, decode_membership
from univrs.raft.ready import Role
from univrs.sim.invariants import (
    COMMITTED_DURABLE,
    LEADER_APPEND_ONLY,
    LOG_MATCHING,
    READY_CONTRACT,
    InvariantViolation,
)

NO_MEMBERS = Membership(voters=frozenset())


def fmt_entry(e: Entry) -> str:
    return f"({e.index},t{e.term},{e.kind.name},{e.data[:40]!r})"


def majority(m: Membership) -> int:
    """How many voters of ``m`` make a majority (the checker's own arithmetic)."""
    return len(m.voters) // 2 + 1


def meets_every_majority(holders: Iterable[NodeId], m: Membership) -> bool:
    """Do ``holders`` intersect every majority of ``m``'s voters? (For an odd number of voters
    that is: they include a majority.)"""
    n = len(m.voters)
    return sum(1 for h in holders if h in m.voters) >= n - majority(m) + 1


def fmt_members(m: Membership) -> str:
    s = "{" + ",".join(sorted(m.voters)) + "}"
    return s + (" learners {" + ",".join(sorted(m.learners)) + "}" if m.learners else "")


@attrs.define(eq=False, slots=True)
class MirroredLog:
    """A mirrored log: prefix ids and terms by index (index 0 a sentinel), and the indexes of
    its CONFIG entries, ascending."""

    ids: list[int] = attrs.field(factory=lambda: [0])
    terms: list[int] = attrs.field(factory=lambda: [0])
    cfg: list[int] = attrs.field(factory=list)

    def copy(self) -> MirroredLog:
        return MirroredLog(ids=list(self.ids), terms=list(self.terms), cfg=list(self.cfg))

    def key(self) -> tuple[int, int]:
        """How up to date it is (paper 5.4.1): (last term, length); larger is more."""
        return self.terms[-1], len(self.ids)

    def holds(self, i: int, pid: int) -> bool:
        return len(self.ids) > i and self.ids[i] == pid


@attrs.define(eq=False)
class NodeView:
    """What the checker mirrors of one node."""

    base: Membership  # its configuration while its log holds no CONFIG entry
    issued: MirroredLog = attrs.field(factory=MirroredLog)
    durable: MirroredLog = attrs.field(factory=MirroredLog)
    role: Role | None = None  # None while crashed
    term: int = 0
    commit: int = 0  # the commit index in this node's last hard state
    gone: bool = False  # stopped for good (removed); it comes back only with an empty disk
    incarnation: str = ""  # of its data dir: a wiped node is a new incarnation
    # An older copy of its data dir was put back (rollback.py): its log and hard state went
    # back, which no leader can know before the copy answers (progress on it is not checked).
    rolled: bool = False
    # ... and every peer refuses it (start counters): it never votes or acknowledges again,
    # like a voter whose disk was lost (a new incarnation) until the operator replaces it.
    fenced: bool = False
    # Entries (index, prefix id) its issued log dropped while they were not committed, whose
    # write is not durable yet: the durable write carries out a decision already checked, even
    # if the entry was committed elsewhere meanwhile (without this node's ack, which the
    # dropped entry can no longer give). Emptied at a crash (those writes are lost).
    decided: Counter[tuple[int, int]] = attrs.field(factory=Counter)


@attrs.define(eq=False)
class LogMirror:
    """Every node's logs and the committed log, mirrored (the Checker's lower half).

    ``voters`` is the initial configuration (the fallback of their logs until a CONFIG entry
    arrives); ``spares`` start with empty logs and no configuration, like a node waiting to be
    joined.
    """

    voters: Sequence[NodeId]
    spares: Sequence[NodeId] = ()
    # The bootstrap configuration (default: ``voters``, no incarnations bound).
    boot: Membership | None = None
    # The incarnation of each node's first data dir.
    incarnations: dict[NodeId, str] = attrs.field(factory=dict)
    # The transport's rule (see ``counts_in``): refuse any other incarnation than the listed.
    strict: bool = False
    # The cores know their own incarnation (``RaftNode(incarnation=...)``): a node does not
    # campaign in a configuration that binds its id to another incarnation.
    guarded: bool = True
    base: Membership = attrs.field(init=False)
    _nodes: dict[NodeId, NodeView] = attrs.field(init=False)
    _intern: dict[tuple[int, int, int, bytes], int] = attrs.field(init=False, factory=dict)
    _pos: dict[tuple[int, int], int] = attrs.field(init=False, factory=dict)
    # Configurations of CONFIG entries by prefix id, and decoded payloads.
    _members: dict[int, Membership] = attrs.field(init=False, factory=dict)
    _decoded: dict[bytes, Membership] = attrs.field(init=False, factory=dict)
    # The committed log: prefix ids, entries and commit-term upper bounds, index 0 a sentinel;
    # the indexes of its CONFIG entries.
    committed: list[int] = attrs.field(init=False, factory=lambda: [0])
    committed_entries: list[Entry | None] = attrs.field(init=False, factory=lambda: [None])
    _committed_terms: list[int] = attrs.field(init=False, factory=lambda: [0])
    _committed_cfg: list[int] = attrs.field(init=False, factory=list)
    commit_term: list[int] = attrs.field(init=False, factory=lambda: [0])

    def __attrs_post_init__(self) -> None:
        self.base = self.boot or Membership(voters=frozenset(self.voters))
        incs = self.incarnations
        self._nodes = {
            n: NodeView(base=self.base, incarnation=incs.get(n, "")) for n in self.voters
        }
        for n in self.spares:
            self._nodes[n] = NodeView(base=NO_MEMBERS, incarnation=incs.get(n, ""))

    # ---------------------------------------------------------------- configurations

    def _config(self, v: NodeView, log: MirroredLog, upto: int | None = None) -> Membership:
        """The configuration of ``log`` (its latest CONFIG entry at or below ``upto``)."""
        cfg = log.cfg
        if upto is None or not cfg or cfg[-1] <= upto:
            return self._members[log.ids[cfg[-1]]] if cfg else v.base
        k = bisect.bisect_right(cfg, upto)
        return self._members[log.ids[cfg[k - 1]]] if k else v.base

    def current_config(self, node: NodeId) -> tuple[Membership, int]:
        """The configuration ``node`` uses now (its in-memory log's latest CONFIG entry) and
        that entry's index (0: none in its log)."""
        v = self._nodes[node]
        cfg = v.issued.cfg
        if cfg:
            return self._members[v.issued.ids[cfg[-1]]], cfg[-1]
        return v.base, 0

    def config_at(self, index: int) -> Membership:
        """The configuration in force at ``index`` of the committed log."""
        k = bisect.bisect_right(self._committed_cfg, index)
        if not k:
            return self.base
        e = self.committed_entries[self._committed_cfg[k - 1]]
        assert e is not None
        return self._decode(e.data)

    def config_index_at(self, index: int) -> int:
        """The index of the CONFIG entry in force at ``index`` of the committed log (0: the
        bootstrap configuration, which no entry of the committed log holds yet)."""
        k = bisect.bisect_right(self._committed_cfg, index)
        return self._committed_cfg[k - 1] if k else 0

    def committed_config(self) -> Membership:
        """The latest configuration in the committed log (as far as anyone applied it)."""
        return self.config_at(len(self.committed) - 1)

    def _decode(self, data: bytes) -> Membership:
        m = self._decoded.get(data)
        if m is None:
            m = self._decoded[data] = decode_membership(data)
        return m

    # ---------------------------------------------------------------- log mirroring

    def _prefix(self, prev: int, e: Entry) -> int:
        key = (prev, e.term, int(e.kind), e.data)
        pid = self._intern.get(key)
        if pid is None:
            pid = self._intern[key] = len(self._intern) + 1
            if e.kind is EntryKind.CONFIG:
                self._members[pid] = self._decode(e.data)
        return pid

    def _update(
        self,
        node: NodeId,
        log: MirroredLog,
        truncate_from: int | None,
        entries: Sequence[Entry],
        what: str,
    ) -> list[tuple[int, int]]:
        """Apply one persist to ``log``.

        Returns (index, old prefix id) of every position whose content changed or vanished,
        in index order; empty when the log only grew (re-writing identical entries removes
        nothing).
        """
        ids, terms, cfg = log.ids, log.terms, log.cfg
        old_len = len(ids)
        lowest = old_len
        if truncate_from is not None:
            if truncate_from < 1:
                raise InvariantViolation(
                    READY_CONTRACT, f"{node}: {what} truncate_from={truncate_from} < 1"
                )
            lowest = min(lowest, truncate_from)
        if entries:
            lowest = min(lowest, entries[0].index)
        if lowest >= old_len and not entries:
            return []
        old_tail = ids[lowest:] if lowest < old_len else []
        del ids[lowest:]
        del terms[lowest:]
        while cfg and cfg[-1] >= lowest:
            cfg.pop()
        if entries:
            if entries[0].index != len(ids):
                raise InvariantViolation(
                    READY_CONTRACT,
                    f"{node}: {what} entries start at {entries[0].index} but the log ends at "
                    f"{len(ids) - 1}",
                )
            pid = ids[-1]
            for e in entries:
                if e.index != len(ids):
                    raise InvariantViolation(
                        READY_CONTRACT, f"{node}: {what} entries not contiguous at {fmt_entry(e)}"
                    )
                pid = self._prefix(pid, e)
                ids.append(pid)
                terms.append(e.term)
                if e.kind is EntryKind.CONFIG:
                    cfg.append(e.index)
        return [
            (lowest + k, old)
            for k, old in enumerate(old_tail)
            if lowest + k >= len(ids) or ids[lowest + k] != old
        ]

    def _check_not_committed(
        self, node: NodeId, removed: list[tuple[int, int]], decided: Counter[tuple[int, int]]
    ) -> None:
        """No committed entry left ``node``'s log, except by a removal in ``decided`` (one
        its core decided while the entry was not committed yet; each is used up once)."""
        committed = self.committed
        for index, old in removed:
            if decided[(index, old)] > 0:
                decided[(index, old)] -= 1
                continue
            if index < len(committed) and old == committed[index]:
                raise InvariantViolation(
                    COMMITTED_DURABLE,
                    f"{node} removed committed entry {fmt_entry(self._entry(index))} from its log",
                )

    def _entry(self, index: int) -> Entry:
        e = self.committed_entries[index]
        assert e is not None
        return e

    def load(self, node: NodeId, entries: Sequence[Entry]) -> None:
        """A node starts (bootstrap) with ``entries`` durable."""
        v = self._nodes[node]
        v.durable = MirroredLog()
        self._update(node, v.durable, None, entries, "initial")
        v.issued = v.durable.copy()
        self._check_matching(node, v.issued, 1, entries)

    def _check_matching(
        self, node: NodeId, log: MirroredLog, start: int, entries: Iterable[Entry]
    ) -> None:
        pos = self._pos
        ids = log.ids
        for e in entries:
            if e.index < start:
                continue
            pid = ids[e.index]
            prev = pos.setdefault((e.index, e.term), pid)
            if prev != pid:
                raise InvariantViolation(
                    LOG_MATCHING,
                    f"{node} holds {fmt_entry(e)} but another log holds a different prefix with an "
                    f"entry of the same index and term",
                )

    def observe_issued(
        self,
        node: NodeId,
        truncate_from: int | None,
        entries: Sequence[Entry],
        same_role: bool = True,
    ) -> None:
        """A Ready handed over entries to persist: the node's in-memory log changed.

        ``same_role``: the Ready carries no soft state, so the node held its last observed role
        and term throughout (a leader that stepped down within the Ready may truncate).
        """
        v = self._nodes[node]
        removed = self._update(node, v.issued, truncate_from, entries, "Ready")
        if removed:
            if v.role is Role.LEADER and same_role:
                raise InvariantViolation(
                    LEADER_APPEND_ONLY,
                    f"{node}, leader of term {v.term}, truncated its log from index "
                    f"{removed[0][0]}",
                )
            self._check_not_committed(node, removed, Counter())
            v.decided.update(removed)
        for e in entries:  # an entry written again is no longer a decided removal
            v.decided.pop((e.index, v.issued.ids[e.index]), None)
        if entries:
            self._check_matching(node, v.issued, 0, entries)

    def observe_durable(
        self, node: NodeId, truncate_from: int | None, entries: Sequence[Entry]
    ) -> None:
        """A write the node issued is now durable (writes complete in issue order)."""
        v = self._nodes[node]
        removed = self._update(node, v.durable, truncate_from, entries, "durable write")
        self._check_not_committed(node, removed, v.decided)
        v.decided += Counter()  # drop the used-up ones

    def observe_crash(self, node: NodeId) -> None:
        """The node lost its memory: its log is its durable log again, it leads nothing."""
        v = self._nodes[node]
        self._forget_unseen(node, v.issued, v.durable)
        v.issued = v.durable.copy()
        v.decided.clear()  # the writes not yet durable are lost
        v.role = None

    def _forget_unseen(self, node: NodeId, dead: MirroredLog, kept: MirroredLog | None) -> None:
        """Entries of ``dead`` (a log that just vanished) that no log holds any more never
        existed for anyone: forget their (index, term), so a lone voter that re-leads a term
        it had not made durable (nothing of that term left it) may write that index again.
        If a message still in flight carries one, its receiver brings it back, and a
        conflicting twin is caught then (log-matching)."""
        ids = dead.ids
        lo = 0
        if kept is not None:
            # Prefix ids agree up to some index and differ after it: binary search.
            hi = min(len(ids), len(kept.ids)) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if ids[mid] == kept.ids[mid]:
                    lo = mid
                else:
                    hi = mid - 1
        others = [
            log
            for n, w in self._nodes.items()
            for log in ((w.durable,) if n == node else (w.issued, w.durable))
        ]
        pos = self._pos
        for i in range(lo + 1, len(ids)):
            pid = ids[i]
            if any(log.holds(i, pid) for log in others):
                continue
            key = (i, dead.terms[i])
            if pos.get(key) == pid:
                del pos[key]

    def observe_restart(self, node: NodeId, term: int, commit: int = 0) -> None:
        """The node (re)started from its durable hard state, whose term is ``term``.

        Its term may be lower than before the crash: a term it had moved to but not yet
        persisted is forgotten, which is fine since it promised nothing in that term.
        """
        v = self._nodes[node]
        v.role = Role.FOLLOWER
        v.term = term
        v.commit = commit

    def observe_retire(self, node: NodeId) -> None:
        """A removed node was stopped for good: it neither campaigns nor votes any more (it can
        only come back through ``observe_wipe``)."""
        v = self._nodes[node]
        v.issued = v.durable.copy()
        v.role = None
        v.gone = True

    def observe_wipe(self, node: NodeId, incarnation: str = "") -> None:
        """The node got a new, empty disk (a new incarnation): nothing of its old state is
        left, and configurations that bind its id to an older incarnation do not count it."""
        old = self._nodes[node]
        self._nodes[node] = NodeView(base=NO_MEMBERS, incarnation=incarnation)
        self._forget_unseen(node, old.issued, None)

    def durable_view(self, node: NodeId) -> NodeView:
        """What the checker would hold of ``node`` had it crashed now: a copy of its data dir
        taken now (rollback.py) comes back as this."""
        v = self._nodes[node]
        return NodeView(
            base=v.base,
            issued=v.durable.copy(),
            durable=v.durable.copy(),
            term=v.term,
            commit=v.commit,
            incarnation=v.incarnation,
        )

    def observe_rollback(self, node: NodeId, view: NodeView, *, term: int, fenced: bool) -> None:
        """An older copy of ``node``'s data dir (``view``, from ``durable_view`` when the copy
        was taken; its durable term ``term``) was put back in its place, same incarnation.
        Its log and hard state go back: the point of the fault. ``fenced``: every peer
        recorded a later start of the data dir, so the copy never votes or acknowledges
        (rollback.py): the election and durability checks count it as they count a voter
        whose disk was lost, until a wipe gives the id a new data dir."""
        old = self._nodes[node]
        self._forget_unseen(node, old.issued, view.durable)
        self._nodes[node] = NodeView(
            base=view.base,
            issued=view.durable.copy(),
            durable=view.durable.copy(),
            term=term,
            commit=view.commit,
            incarnation=view.incarnation,
            rolled=True,
            fenced=fenced,
        )

    def counts_in(self, node: NodeId, m: Membership, index: int) -> bool:
        """Can ``node``, as it is now, vote or acknowledge as a voter of configuration ``m``
        (at ``index``)? Its transport refuses a peer whose incarnation differs from the one
        listed, unless (``strict`` off) the peer's own log binds it by a newer configuration:
        then the listing is the stale part."""
        listed = m.incarnation_of(node) if m.incarnations else None
        if listed is None or listed == self._nodes[node].incarnation:
            return True
        return not self.strict and self.bound_at(node) > index

    def bound_at(self, node: NodeId) -> int:
        """The index of the newest configuration in ``node``'s logs (in memory or durable)
        that binds it to its own incarnation (0: none)."""
        v = self._nodes[node]
        return max(self.bound_in(node, v, v.issued), self.bound_in(node, v, v.durable))

    def bound_in(self, node: NodeId, v: NodeView, log: MirroredLog) -> int:
        """The index of ``log``'s configuration if it binds ``node`` to its incarnation."""
        if not log.cfg:
            return 0
        i = log.cfg[-1]
        m = self._members[log.ids[i]]
        return i if m.incarnations and m.incarnation_of(node) == v.incarnation else 0
