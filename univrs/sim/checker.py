"""Safety invariants of Raft, checked incrementally while a simulation runs.

Theory of operation. The simulator reports every observable change to one ``Checker``:

* ``observe_role``: a Ready's soft state (who leads which term);
* ``observe_issued``: a Ready's persist part (``truncate_from``, ``entries``). Applied in Ready
  order this is exactly the node's in-memory log, so the checker mirrors every log;
* ``observe_durable``: the same write once the simulated disk made it durable;
* ``observe_apply``: an entry a node applied (it is committed: Ready contract, step 5);
* ``observe_ack`` / ``observe_read``: client-visible results.

Logs are mirrored as lists of *prefix ids*: ``log[i]`` is an interned id of the whole prefix
``entries[1..i]`` (interned from ``(log[i-1], term, kind, data)``), so "two logs agree up to
``i``" is one integer comparison. ``log[0] == 0`` is the empty prefix.

Invariants (Raft paper Figure 3; dissertation 3.6):

* election-safety: at most one leader per term, over the whole run;
* log-matching: two logs holding an entry with the same (index, term) agree up to it
  (a global map (index, term) -> prefix id);
* state-machine-safety: no two nodes apply different entries at one index (a global map of
  committed entries, built from the first node to apply each index);
* committed-durable: an entry, when first known committed, is in the durable logs of a quorum
  of voters (else a crash can lose it), and no node's log ever drops a committed entry;
* leader-completeness: a new leader of term T holds every entry known committed in a term
  below T (the term recorded for an entry is the applying node's term, an upper bound of the
  term it was committed in, so the check never fires falsely);
* leader-append-only: a leader never truncates its own log;
* linearizable-read: a released read is served at an applied index at least the largest index
  of a write acknowledged before the read was issued, and returns exactly what the committed log
  holds for its key at that index;
* ready-contract: the core's side of the Ready contract (contiguous entries, apply in order and
  only durable entries, reads released only when applied >= read index).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import attrs

from univrs.errors import UnivrsError
from univrs.raft.messages import Entry, NodeId
from univrs.raft.ready import Role

ELECTION_SAFETY = "election-safety"
LOG_MATCHING = "log-matching"
STATE_MACHINE_SAFETY = "state-machine-safety"
COMMITTED_DURABLE = "committed-durable"
LEADER_COMPLETENESS = "leader-completeness"
LEADER_APPEND_ONLY = "leader-append-only"
LINEARIZABLE_READ = "linearizable-read"
READY_CONTRACT = "ready-contract"
LIVENESS = "liveness"
CORE_EXCEPTION = "core-exception"

INVARIANTS = (
    ELECTION_SAFETY,
    LOG_MATCHING,
    STATE_MACHINE_SAFETY,
    COMMITTED_DURABLE,
    LEADER_COMPLETENESS,
    LEADER_APPEND_ONLY,
    LINEARIZABLE_READ,
    READY_CONTRACT,
    LIVENESS,
    CORE_EXCEPTION,
)


class InvariantViolation(UnivrsError):
    """A simulation broke an invariant; ``invariant`` names it, ``detail`` says how."""

    def __init__(self, invariant: str, detail: str) -> None:
        self.invariant = invariant
        self.detail = detail
        super().__init__(f"{invariant}: {detail}")


def _fmt(e: Entry) -> str:
    return f"({e.index},t{e.term},{e.kind.name},{e.data[:40]!r})"


@attrs.define(eq=False)
class _NodeView:
    """What the checker mirrors of one node. Invariant: ``issued[0] == durable[0] == 0``."""

    issued: list[int] = attrs.field(factory=lambda: [0])
    issued_terms: list[int] = attrs.field(factory=lambda: [0])  # term of each issued entry
    durable: list[int] = attrs.field(factory=lambda: [0])
    durable_terms: list[int] = attrs.field(factory=lambda: [0])
    role: Role | None = None  # None while crashed
    term: int = 0
    commit: int = 0  # the commit index in this node's last hard state


@attrs.define(eq=False)
class Checker:
    """Checks the invariants above; every ``observe_*`` raises InvariantViolation on a breach."""

    voters: Sequence[NodeId]
    _nodes: dict[NodeId, _NodeView] = attrs.field(init=False)
    _quorum: int = attrs.field(init=False)
    _intern: dict[tuple[int, int, int, bytes], int] = attrs.field(init=False, factory=dict)
    _pos: dict[tuple[int, int], int] = attrs.field(init=False, factory=dict)
    # The committed log: prefix ids, entries and commit-term upper bounds, index 0 a sentinel.
    committed: list[int] = attrs.field(init=False, factory=lambda: [0])
    committed_entries: list[Entry | None] = attrs.field(init=False, factory=lambda: [None])
    _committed_terms: list[int] = attrs.field(init=False, factory=lambda: [0])
    commit_term: list[int] = attrs.field(init=False, factory=lambda: [0])
    leaders: dict[int, NodeId] = attrs.field(init=False, factory=dict)
    max_acked: int = attrs.field(init=False, default=0)
    # Per key: the committed indexes that wrote it (ascending) and the values they wrote.
    _hist: dict[str, tuple[list[int], list[str]]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._nodes = {n: _NodeView() for n in self.voters}
        self._quorum = len(self.voters) // 2 + 1

    # ---------------------------------------------------------------- log mirroring

    def _prefix(self, prev: int, e: Entry) -> int:
        key = (prev, e.term, int(e.kind), e.data)
        pid = self._intern.get(key)
        if pid is None:
            pid = self._intern[key] = len(self._intern) + 1
        return pid

    def _update(
        self,
        node: NodeId,
        log: list[int],
        terms: list[int],
        truncate_from: int | None,
        entries: Sequence[Entry],
        what: str,
    ) -> tuple[int, int] | None:
        """Apply one persist to ``log``.

        Returns (index, old prefix id) of the first position whose content changed or vanished,
        or None when the log only grew (re-writing identical entries removes nothing).
        """
        old_len = len(log)
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
            return None
        old_tail = log[lowest:] if lowest < old_len else []
        del log[lowest:]
        del terms[lowest:]
        if entries:
            if entries[0].index != len(log):
                raise InvariantViolation(
                    READY_CONTRACT,
                    f"{node}: {what} entries start at {entries[0].index} but the log ends at "
                    f"{len(log) - 1}",
                )
            pid = log[-1]
            for e in entries:
                if e.index != len(log):
                    raise InvariantViolation(
                        READY_CONTRACT, f"{node}: {what} entries not contiguous at {_fmt(e)}"
                    )
                pid = self._prefix(pid, e)
                log.append(pid)
                terms.append(e.term)
        for k, old in enumerate(old_tail):
            j = lowest + k
            if j >= len(log) or log[j] != old:
                return j, old
        return None

    def _check_not_committed(self, node: NodeId, removed: tuple[int, int] | None) -> None:
        if removed is None:
            return
        index, old = removed
        if index < len(self.committed) and old == self.committed[index]:
            raise InvariantViolation(
                COMMITTED_DURABLE,
                f"{node} removed committed entry {_fmt(self._entry(index))} from its log",
            )

    def _entry(self, index: int) -> Entry:
        e = self.committed_entries[index]
        assert e is not None
        return e

    def load(self, node: NodeId, entries: Sequence[Entry]) -> None:
        """A node starts (bootstrap) with ``entries`` durable."""
        v = self._nodes[node]
        v.durable, v.durable_terms = [0], [0]
        self._update(node, v.durable, v.durable_terms, None, entries, "initial")
        v.issued, v.issued_terms = list(v.durable), list(v.durable_terms)
        self._check_matching(node, v.issued, 1, entries)

    def _check_matching(
        self, node: NodeId, log: list[int], start: int, entries: Iterable[Entry]
    ) -> None:
        pos = self._pos
        for e in entries:
            if e.index < start:
                continue
            pid = log[e.index]
            prev = pos.setdefault((e.index, e.term), pid)
            if prev != pid:
                raise InvariantViolation(
                    LOG_MATCHING,
                    f"{node} holds {_fmt(e)} but another log holds a different prefix with an "
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
        removed = self._update(node, v.issued, v.issued_terms, truncate_from, entries, "Ready")
        if removed is not None:
            if v.role is Role.LEADER and same_role:
                raise InvariantViolation(
                    LEADER_APPEND_ONLY,
                    f"{node}, leader of term {v.term}, truncated its log from index {removed[0]}",
                )
            self._check_not_committed(node, removed)
        if entries:
            self._check_matching(node, v.issued, 0, entries)

    def observe_durable(
        self, node: NodeId, truncate_from: int | None, entries: Sequence[Entry]
    ) -> None:
        """A write the node issued is now durable (writes complete in issue order)."""
        v = self._nodes[node]
        removed = self._update(
            node, v.durable, v.durable_terms, truncate_from, entries, "durable write"
        )
        self._check_not_committed(node, removed)

    def observe_crash(self, node: NodeId) -> None:
        """The node lost its memory: its log is its durable log again, it leads nothing."""
        v = self._nodes[node]
        v.issued, v.issued_terms = list(v.durable), list(v.durable_terms)
        v.role = None

    def observe_restart(self, node: NodeId, term: int, commit: int = 0) -> None:
        """The node (re)started from its durable hard state, whose term is ``term``.

        Its term may be lower than before the crash: a term it had moved to but not yet
        persisted is forgotten, which is fine since it promised nothing in that term.
        """
        v = self._nodes[node]
        v.role = Role.FOLLOWER
        v.term = term
        v.commit = commit

    # ---------------------------------------------------------------- roles and terms

    def observe_term(self, node: NodeId, term: int) -> None:
        v = self._nodes[node]
        if term > v.term:
            v.term = term

    def observe_role(self, node: NodeId, role: Role, term: int) -> None:
        """Soft state from a Ready (call after observe_issued for that Ready)."""
        v = self._nodes[node]
        v.role = role
        if term > v.term:
            v.term = term
        if role is not Role.LEADER:
            return
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise InvariantViolation(
                ELECTION_SAFETY, f"{node} and {other} are both leaders of term {term}"
            )
        self._check_leader_complete(node, term)

    def _check_leader_complete(self, node: NodeId, term: int) -> None:
        # The highest committed index whose commit term is below ``term``: every entry up to it
        # was committed in a term below ``term`` (commit terms are upper bounds).
        i = len(self.committed) - 1
        ct = self.commit_term
        while i > 0 and ct[i] >= term:
            i -= 1
        if i == 0:
            return
        log = self._nodes[node].issued
        if len(log) <= i or log[i] != self.committed[i]:
            # Report the lowest committed entry it lacks (log prefixes agree up to some point).
            missing = 1
            while missing < i and len(log) > missing and log[missing] == self.committed[missing]:
                missing += 1
            raise InvariantViolation(
                LEADER_COMPLETENESS,
                f"{node} leads term {term} but its log lacks committed entry "
                f"{_fmt(self._entry(missing))} (committed by term {ct[missing]}); "
                f"its log ends at {len(log) - 1}",
            )

    # ---------------------------------------------------------------- apply and clients

    def observe_apply(self, node: NodeId, entry: Entry, key: str | None, value: str | None) -> None:
        """``node`` applied committed ``entry`` (``key``/``value`` when it is a write)."""
        i = entry.index
        v = self._nodes[node]
        if i < len(self.committed):
            known = self.committed_entries[i]
            if known != entry:
                assert known is not None
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"{node} applied {_fmt(entry)} at index {i} but {_fmt(known)} was applied "
                    f"there before",
                )
        elif i == len(self.committed):
            pid = self._prefix(self.committed[-1], entry)
            self.committed.append(pid)
            self.committed_entries.append(entry)
            self._committed_terms.append(entry.term)
            self.commit_term.append(max(v.term, entry.term))
            holders = sum(
                1 for w in self._nodes.values() if len(w.durable) > i and w.durable[i] == pid
            )
            if holders < self._quorum:
                raise InvariantViolation(
                    COMMITTED_DURABLE,
                    f"{node} applied {_fmt(entry)} but only {holders} of {len(self._nodes)} "
                    f"durable logs hold it (quorum {self._quorum})",
                )
            self._check_unelectable(node, i)
            if key is not None and value is not None:
                idx, vals = self._hist.setdefault(key, ([], []))
                idx.append(i)
                vals.append(value)
        else:
            raise InvariantViolation(
                READY_CONTRACT, f"{node} applied index {i} but nothing was applied at {i - 1}"
            )
        d = v.durable
        if len(d) <= i or d[i] != self.committed[i]:
            raise InvariantViolation(
                READY_CONTRACT, f"{node} applied {_fmt(entry)} before it was durable locally"
            )

    def _check_unelectable(self, node: NodeId, i: int) -> None:
        """No node whose log lacks committed entry ``i`` could win an election, even after
        crashes (dissertation 3.6.3, the argument behind Leader Completeness).

        A voter grants a vote to a candidate whose log is at least as up to date as its own
        (paper 5.4.1). The candidate may campaign with everything it holds (its in-memory log);
        a voter may have crashed back to its durable log. If the voters that would grant such
        a candidate form a quorum, some run of faults elects a leader without the entry. In
        correct Raft the entry that made ``i`` committed (of the committing leader's term) is
        durable on a quorum, and every member of that quorum refuses such a candidate.
        """
        pid = self.committed[i]
        nodes = self._nodes.values()
        best = [(v.durable_terms[-1], len(v.durable)) for v in nodes]
        for cid, c in self._nodes.items():
            if len(c.issued) > i and c.issued[i] == pid:
                continue
            ct, cl = c.issued_terms[-1], len(c.issued)
            grant = [t < ct or (t == ct and n <= cl) for t, n in best]
            if sum(grant) >= self._quorum:
                voters = [n for n, g in zip(self._nodes, grant, strict=True) if g]
                raise InvariantViolation(
                    COMMITTED_DURABLE,
                    f"{node} applied {_fmt(self._entry(i))}, but {cid}, whose log lacks it "
                    f"(last term {ct}, last index {cl - 1}), could be elected with the votes of "
                    f"{', '.join(voters)} (their durable logs are no more up to date)",
                )

    def observe_snapshot(self, node: NodeId, index: int, term: int, *, durable: bool) -> None:
        """``node`` installed a snapshot from the leader at (index, term): in memory (its Ready)
        or on disk (``durable``). Its log becomes the committed prefix up to ``index``, plus
        what followed if it already held that prefix (paper Figure 13, steps 6-7).
        """
        if index >= len(self.committed):
            raise InvariantViolation(
                READY_CONTRACT,
                f"{node} installed a snapshot at {index}, beyond anything committed "
                f"({len(self.committed) - 1})",
            )
        e = self._entry(index)
        if e.term != term:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY,
                f"{node} installed a snapshot at ({index}, t{term}) but the committed entry "
                f"there is {_fmt(e)}",
            )
        v = self._nodes[node]
        log, terms = (v.durable, v.durable_terms) if durable else (v.issued, v.issued_terms)
        if len(log) > index and log[index] == self.committed[index]:
            return
        log[:] = self.committed[: index + 1]
        terms[:] = self._committed_terms[: index + 1]

    def check_snapshot_state(self, node: NodeId, index: int, state: dict[str, str]) -> None:
        """A snapshot at ``index`` must hold exactly the committed state at ``index``."""
        for key in sorted(set(state) | set(self._hist)):
            want = self.value_at(key, index)
            if state.get(key) != want:
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"{node}: snapshot at {index} holds {key}={state.get(key)!r}; the committed "
                    f"log gives {want!r}",
                )

    def observe_commit(self, node: NodeId, commit: int, *, leading: bool) -> None:
        """A Ready's hard state carries ``commit``; ``leading``: the node led its current term
        throughout that Ready (so a raise of its commit index was its own decision).

        The justification of every commit (paper 5.4.2-5.4.3): the leader's log up to an entry
        of its own term at or after the new commit index is durable on a quorum. Then every
        later leader holds it: any candidate lacking it is less up to date than some member of
        that quorum. An index of an earlier term has no such justification on its own (Figure
        8), however many replicas it has.
        """
        v = self._nodes[node]
        if commit <= v.commit:
            return
        v.commit = commit
        if not leading:
            return
        term = v.term
        terms = v.issued_terms
        for j in range(commit, len(terms)):
            if terms[j] != term:
                continue
            pid = v.issued[j]
            holders = sum(
                1 for w in self._nodes.values() if len(w.durable) > j and w.durable[j] == pid
            )
            if holders >= self._quorum:
                return
        entry_term = terms[commit] if commit < len(terms) else None
        raise InvariantViolation(
            COMMITTED_DURABLE,
            f"{node}, leader of term {term}, advanced its commit index to {commit} (an entry of "
            f"term {entry_term}) but no entry of term {term} at or after it is durable on a "
            f"quorum: nothing yet protects index {commit} from being overwritten (paper 5.4.2)",
        )

    def observe_ack(self, index: int) -> None:
        """A client saw its write at ``index`` acknowledged."""
        if index > self.max_acked:
            self.max_acked = index

    def value_at(self, key: str, index: int) -> str | None:
        """What the committed log holds for ``key`` after applying entries 1..index."""
        h = self._hist.get(key)
        if h is None:
            return None
        k = bisect.bisect_right(h[0], index)
        return h[1][k - 1] if k else None

    def observe_read(
        self,
        node: NodeId,
        *,
        ctx: int,
        read_index: int,
        served_at: int,
        key: str,
        value: str | None,
        acked_at_issue: int,
    ) -> None:
        """A read released at ``read_index`` was served from ``node``'s state at ``served_at``."""
        if served_at < read_index:
            raise InvariantViolation(
                READY_CONTRACT,
                f"{node} released read {ctx} at read index {read_index} with applied {served_at}",
            )
        if served_at < acked_at_issue:
            raise InvariantViolation(
                LINEARIZABLE_READ,
                f"stale read {ctx} of {key!r} on {node}: served at applied index {served_at} "
                f"(read index {read_index}) but a write at index {acked_at_issue} was "
                f"acknowledged before the read was issued",
            )
        if served_at >= len(self.committed):
            raise InvariantViolation(
                READY_CONTRACT, f"{node} served read {ctx} at {served_at}, beyond what it applied"
            )
        want = self.value_at(key, served_at)
        if value != want:
            raise InvariantViolation(
                LINEARIZABLE_READ,
                f"read {ctx} of {key!r} on {node} at index {served_at} returned {value!r}; "
                f"the committed log holds {want!r} there",
            )

    # ---------------------------------------------------------------- views

    def role_of(self, node: NodeId) -> Role | None:
        return self._nodes[node].role

    def term_of(self, node: NodeId) -> int:
        return self._nodes[node].term

    def commit_index(self) -> int:
        """The highest index any node has applied (all of 1..it are committed)."""
        return len(self.committed) - 1
