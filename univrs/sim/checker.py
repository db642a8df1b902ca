"""Safety invariants of Raft, checked incrementally while a simulation runs.

Theory of operation. The simulator reports every observable change to one ``Checker``:

* ``observe_role``: a Ready's soft state (who leads which term);
* ``observe_issued``: a Ready's persist part (``truncate_from``, ``entries``). Applied in Ready
  order this is exactly the node's in-memory log, so the checker mirrors every log;
* ``observe_durable``: the same write once the simulated disk made it durable;
* ``observe_commit``: a Ready's hard-state commit index;
* ``observe_apply``: an entry a node applied (it is committed: Ready contract, step 5);
* ``observe_answer`` / ``observe_ack`` / ``observe_read``: client-visible results (history.py);
* ``observe_retire`` / ``observe_wipe``: the operator stopped a removed node for good, or gave
  it an empty disk before it joins again.

Every node's in-memory and durable logs are mirrored as prefix ids (mirror.py), so "these logs
agree up to i" is one comparison, and each mirror knows its CONFIG entries. What clients saw
is checked against the committed log by the Checker's client half (history.py): the Checker
reports each client write that took effect at its first apply, and the history answers what
the committed log holds for a key at an index.

Configurations. Every quorum is counted over the configuration that governs it, never over a
fixed set of voters: a commit over the committing leader's configuration (the latest one in its
log, which is what it counts over); a durability check at index ``i`` over the configuration in
force at ``i`` in the committed log; an election over the candidate's own configuration. With
single-server changes and one change at a time, the configuration a leader counts over is the
committed one or one change away from it, so every quorum it uses meets every majority of the
committed configuration (dissertation 4.2). That overlap is checked too (config-safety).

Invariants (Raft paper Figure 3; dissertation 3.6, 4):

* election-safety: at most one leader per term, over the whole run;
* log-matching: two logs holding an entry with the same (index, term) agree up to it
  (a global map (index, term) -> prefix id);
* state-machine-safety: no two nodes apply different entries at one index (a global map of
  committed entries, built from the first node to apply each index); every node's commit index
  points into that same committed log;
* committed-durable: an entry, when first known committed, is durable on enough voters of the
  configuration in force there that no majority of it lacks the entry; no node's log ever drops
  a committed entry; no node lacking a committed entry could be elected (see
  ``_check_unelectable``); a leader's commit is justified by a quorum of its configuration;
* config-safety: the quorum that justifies a commit also meets every majority of the
  configuration committed before it; an installed snapshot carries the configuration the
  committed log has at its index; a leader appends a configuration change only once it has
  committed an entry of its term;
* leader-completeness: a new leader of term T holds every entry known committed in a term
  below T (the term recorded for an entry is the applying node's term, an upper bound of the
  term it was committed in, so the check never fires falsely);
* leader-append-only: a leader never truncates its own log;
* exactly-once (history.py): a client write (unique id) takes effect at most once in the
  committed log; a client answered "applied" finds it applied at the answered index; a client
  answered "conflict" (a conditional write refused, like a 409) never has it take effect;
* linearizable-read (history.py): a released read is served at an applied index at least the
  largest index of a write acknowledged before the read was issued, and returns exactly what
  the committed log holds for its key at that index;
* replication-progress: a leader's match for a peer is held durably by that peer (the
  incarnation its configuration lists), checked once per tick on the current leader;
* ready-contract: the core's side of the Ready contract (contiguous entries, apply in order and
  only durable entries, reads released only when applied >= read index).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import attrs

from univrs.raft.messages import Entry, EntryKind, Membership, NodeId
from univrs.raft.ready import PeerStatus, Role
from univrs.sim.history import ClientHistory
from univrs.sim.invariants import (
    COMMITTED_DURABLE,
    CONFIG_SAFETY,
    CORE_EXCEPTION,
    CORE_INVARIANT,
    ELECTION_SAFETY,
    EXACTLY_ONCE,
    INVARIANTS,
    LEADER_APPEND_ONLY,
    LEADER_COMPLETENESS,
    LINEARIZABLE_READ,
    LIVENESS,
    LOG_MATCHING,
    READY_CONTRACT,
    REPLICATION_PROGRESS,
    STATE_MACHINE_SAFETY,
    InvariantViolation,
)
from univrs.sim.kv import KvWrite
from univrs.sim.mirror import (
    MirroredLog,
    NodeView,
    fmt_entry,
    fmt_members,
    majority,
    meets_every_majority,
)

__all__ = [
    "COMMITTED_DURABLE",
    "CONFIG_SAFETY",
    "CORE_EXCEPTION",
    "CORE_INVARIANT",
    "ELECTION_SAFETY",
    "EXACTLY_ONCE",
    "INVARIANTS",
    "LEADER_APPEND_ONLY",
    "LEADER_COMPLETENESS",
    "LINEARIZABLE_READ",
    "LIVENESS",
    "LOG_MATCHING",
    "READY_CONTRACT",
    "REPLICATION_PROGRESS",
    "STATE_MACHINE_SAFETY",
    "Checker",
    "InvariantViolation",
]


@attrs.define(eq=False)
class Checker(ClientHistory):
    """Checks the invariants above; every ``observe_*`` raises InvariantViolation on a breach."""

    # The highest commit index any node declared, the prefix id there, and the configuration
    # in force at it (possibly ahead of what anyone applied yet).
    _declared: int = attrs.field(init=False, default=0)
    _declared_pid: int = attrs.field(init=False, default=0)
    _declared_cfg: Membership = attrs.field(init=False)
    leaders: dict[int, NodeId] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._declared_cfg = self.base

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

    def observe_restart(self, node: NodeId, term: int, commit: int = 0) -> None:
        """The node restarted with durable term ``term``: a leadership of a later term it held
        before the crash never became durable, and (the core sends nothing of a term before
        that term is durable) nobody saw it: another node may lead that term. If the node did
        send, its entries of that term are in other logs, and a twin is caught as a
        log-matching breach."""
        old = self._nodes[node].term
        for t in range(term + 1, old + 1):
            if self.leaders.get(t) == node:
                del self.leaders[t]
        super().observe_restart(node, term, commit)

    def _check_leader_complete(self, node: NodeId, term: int) -> None:
        # The highest committed index whose commit term is below ``term``: every entry up to it
        # was committed in a term below ``term`` (commit terms are upper bounds).
        i = len(self.committed) - 1
        ct = self.commit_term
        while i > 0 and ct[i] >= term:
            i -= 1
        if i == 0:
            return
        log = self._nodes[node].issued.ids
        if len(log) <= i or log[i] != self.committed[i]:
            # Report the lowest committed entry it lacks (log prefixes agree up to some point).
            missing = 1
            while missing < i and len(log) > missing and log[missing] == self.committed[missing]:
                missing += 1
            raise InvariantViolation(
                LEADER_COMPLETENESS,
                f"{node} leads term {term} but its log lacks committed entry "
                f"{fmt_entry(self._entry(missing))} (committed by term {ct[missing]}); "
                f"its log ends at {len(log) - 1}",
            )

    # ---------------------------------------------------------------- apply

    def observe_apply(
        self,
        node: NodeId,
        entry: Entry,
        write: KvWrite | Sequence[KvWrite] | None = None,
        effect: bool | Sequence[bool] = False,
    ) -> None:
        """``node`` applied committed ``entry`` (``write``: the client write it carries, or
        a batch entry's writes, and whether each took effect: a refused conditional write or
        a keyed duplicate does not)."""
        writes: Sequence[KvWrite] = (
            () if write is None else (write,) if isinstance(write, KvWrite) else write
        )
        effects = (effect,) * len(writes) if isinstance(effect, bool) else effect
        i = entry.index
        v = self._nodes[node]
        if i < len(self.committed):
            known = self.committed_entries[i]
            if known != entry:
                assert known is not None
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"{node} applied {fmt_entry(entry)} at index {i} but {fmt_entry(known)} was "
                    f"applied there before",
                )
        elif i == len(self.committed):
            pid = self._prefix(self.committed[-1], entry)
            self.committed.append(pid)
            self.committed_entries.append(entry)
            self._committed_terms.append(entry.term)
            self.commit_term.append(max(v.term, entry.term))
            if entry.kind is EntryKind.CONFIG:
                self._committed_cfg.append(i)
            self._check_durable_quorum(node, entry, pid)
            self._check_unelectable(node, i)
            # Revisions (kv.py, univrs/sm/state.py): each write of the entry, or the entry
            # itself if it carries none, takes max(last + 1, index): computed here from the
            # committed log alone, so a store that numbers them otherwise is caught.
            revision = self.revisions[-1]
            for write, effect in zip(writes, effects, strict=True):
                revision = max(revision + 1, i)
                if effect:
                    self._took_effect(write, revision)
            if not writes:
                revision = max(revision + 1, i)
            self.revisions.append(revision)
        else:
            raise InvariantViolation(
                READY_CONTRACT, f"{node} applied index {i} but nothing was applied at {i - 1}"
            )
        if not v.durable.holds(i, self.committed[i]):
            raise InvariantViolation(
                READY_CONTRACT, f"{node} applied {fmt_entry(entry)} before it was durable locally"
            )

    def _check_durable_quorum(self, node: NodeId, entry: Entry, pid: int) -> None:
        """Entry ``i``, committed, must be durable on voters of the configuration in force at
        ``i`` that meet every majority of it (for an odd number of voters: on a majority).

        The leader that committed it counted over its own configuration, which is the one in
        force at ``i`` or one change away from it (single-server changes): its quorum meets
        every majority of the configuration at ``i``, and durable copies are never lost.
        """
        i = entry.index
        cfg, at = self.config_at(i), self.config_index_at(i)
        # A voter the configuration binds to an incarnation it no longer has (its disk was
        # lost) can neither vote nor acknowledge in it: it counts as holding everything.
        holders = [
            n
            for n, w in self._nodes.items()
            if w.durable.holds(i, pid)
            or (n in cfg.voters and (w.fenced or not self.counts_in(n, cfg, at)))
        ]
        if not meets_every_majority(holders, cfg):
            among = sorted(h for h in holders if h in cfg.voters)
            raise InvariantViolation(
                COMMITTED_DURABLE,
                f"{node} applied {fmt_entry(entry)} but only {len(among)} voters of the "
                f"configuration there, {fmt_members(cfg)}, hold it durably ({', '.join(among)}): "
                f"a majority of it lacks it",
            )

    def _may_campaign(self, node: NodeId, v: NodeView, log: MirroredLog, cfg: Membership) -> bool:
        """Could ``node`` start an election with ``log``? It is a voter of the configuration of
        ``log`` or of the configuration committed in it (as far as its commit index says) --
        and, as the core knows its own incarnation, only if that configuration binds its id to
        it (or to none).
        """
        m = cfg
        if node not in m.voters:
            m = self._config(v, log, min(v.commit, len(log.ids) - 1))
            if node not in m.voters:
                return False
        if not self.guarded or not m.incarnations:
            return True
        listed = m.incarnation_of(node)
        return listed is None or listed == v.incarnation

    def _may_grant(
        self, n: NodeId, w: NodeView, cfg: Membership, at: int, cid: NodeId, inc: str
    ) -> bool:
        """Could voter ``n`` (crashed back to its durable log) grant ``cid`` (of ``inc``) a
        vote that ``cid`` counts in ``cfg`` (at index ``at``)? Both transports must let the
        two incarnations talk: ``cid``'s configuration lists ``n`` as it is (or ``n``'s log
        binds it by a newer one), and ``n``'s lists ``cid`` as it is (or ``cid``'s is newer)."""
        d = w.durable
        listed = cfg.incarnation_of(n) if cfg.incarnations else None
        if (
            listed is not None
            and listed != w.incarnation
            and (self.strict or self.bound_in(n, w, d) <= at)
        ):
            return False
        m = self._config(w, d)
        listed = m.incarnation_of(cid) if m.incarnations else None
        if listed is None or listed == inc:
            return True
        return not self.strict and self.bound_at(cid) > (d.cfg[-1] if d.cfg else 0)

    def _check_unelectable(self, node: NodeId, i: int) -> None:
        """No node whose log lacks committed entry ``i`` could win an election, even after
        crashes (dissertation 3.6.3, the argument behind Leader Completeness).

        A voter grants a vote to a candidate whose log is at least as up to date as its own
        (paper 5.4.1). The candidate may campaign with everything it holds (its in-memory log)
        or, after a crash, with its durable log; either way it counts the voters of that log's
        configuration. A voter may have crashed back to its durable log. If the voters that would
        grant such a candidate form a majority of its configuration, some run of faults elects a
        leader without the entry. In correct Raft the entry that made ``i`` committed (of the
        committing leader's term) is durable on a quorum, and every member of it refuses such a
        candidate. Nodes stopped for good (removed) neither campaign nor vote; a node with an
        empty disk grants every vote. Only the incarnations the configurations bind count: a
        candidate counts a vote only from the incarnation its configuration lists, and a voter
        hears a candidate only if its own configuration lists the candidate's incarnation (or
        none).
        """
        pid = self.committed[i]
        nodes = self._nodes
        best = {n: w.durable.key() for n, w in nodes.items() if not (w.gone or w.fenced)}
        for cid, c in nodes.items():
            if c.gone or c.fenced or c.issued.holds(i, pid):
                continue
            logs = [c.issued]
            d = c.durable
            if not d.holds(i, pid) and (
                len(d.ids) != len(c.issued.ids) or d.ids[-1] != c.issued.ids[-1]
            ):
                logs.append(d)
            for log in logs:
                cfg = self._config(c, log)
                if not self._may_campaign(cid, c, log, cfg):
                    continue
                key = log.key()
                at = log.cfg[-1] if log.cfg else 0
                grant = [
                    n
                    for n in sorted(cfg.voters)
                    if n in best
                    and best[n] <= key
                    and (n == cid or self._may_grant(n, nodes[n], cfg, at, cid, c.incarnation))
                ]
                if len(grant) >= majority(cfg):
                    which = "in-memory" if log is c.issued else "durable"
                    raise InvariantViolation(
                        COMMITTED_DURABLE,
                        f"{node} applied {fmt_entry(self._entry(i))}, but {cid}, whose "
                        f"{which} log lacks it (last term {key[0]}, last index {key[1] - 1}), "
                        f"could be elected in configuration {fmt_members(cfg)} with the votes "
                        f"of {', '.join(grant)} (their durable logs are no more up to date)",
                    )

    # ---------------------------------------------------------------- snapshots

    def observe_snapshot(
        self,
        node: NodeId,
        index: int,
        term: int,
        *,
        durable: bool,
        membership: Membership | None = None,
    ) -> None:
        """``node`` installed a snapshot from the leader at (index, term) with ``membership``:
        in memory (its Ready) or on disk (``durable``). Its log becomes the committed prefix up
        to ``index``, plus what followed if it already held that prefix (paper Figure 13, steps
        6-7).
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
                f"there is {fmt_entry(e)}",
            )
        if membership is not None and membership != self.config_at(index):
            raise InvariantViolation(
                CONFIG_SAFETY,
                f"{node} installed a snapshot at {index} with configuration "
                f"{fmt_members(membership)}, but the committed log has "
                f"{fmt_members(self.config_at(index))} there",
            )
        v = self._nodes[node]
        log = v.durable if durable else v.issued
        if log.holds(index, self.committed[index]):
            return
        log.ids[:] = self.committed[: index + 1]
        log.terms[:] = self._committed_terms[: index + 1]
        log.cfg[:] = self._committed_cfg[: bisect.bisect_right(self._committed_cfg, index)]

    # ---------------------------------------------------------------- commit

    def observe_commit(self, node: NodeId, commit: int, *, leading: bool) -> None:
        """A Ready's hard state carries ``commit``; ``leading``: the node led its current term
        throughout that Ready (so a raise of its commit index was its own decision).

        Every node's commit index must point into the one committed log. A leader's raise
        needs a justification (paper 5.4.2-5.4.3): its log up to an entry of its own term at or
        after the new commit index is durable on a quorum of its configuration. Then every
        later leader holds it: any candidate lacking it is less up to date than some member of
        that quorum. An index of an earlier term has no such justification on its own (Figure
        8), however many replicas it has. A commit beyond what anyone declared before must also
        meet every majority of the configuration committed so far (config-safety): a candidate
        of that configuration must meet it too, which single-server changes made one at a time
        guarantee (dissertation 4.2) and two changes in flight do not.
        """
        v = self._nodes[node]
        if commit <= v.commit:
            return
        v.commit = commit
        ids = v.issued.ids
        if commit >= len(ids):
            raise InvariantViolation(
                READY_CONTRACT, f"{node} commit index {commit} beyond its log ({len(ids) - 1})"
            )
        self._check_commit_prefix(node, ids, commit)
        if leading:
            # A stale leader may raise its commit to an index some later leader already
            # committed (acknowledgements it read late): the committed configuration may have
            # moved on past its log by then, and the index needs no new protection.
            self._check_commit_justified(node, v, commit, overlap=commit > self._declared)
        if commit > self._declared:
            self._declared = commit
            self._declared_pid = ids[commit]
            self._declared_cfg = self._config(v, v.issued, commit)

    def _check_commit_prefix(self, node: NodeId, ids: list[int], commit: int) -> None:
        known = None
        if commit < len(self.committed):
            known = commit if ids[commit] != self.committed[commit] else None
        elif self._declared <= commit and ids[self._declared] != self._declared_pid:
            known = self._declared
        if known is not None:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY,
                f"{node} declares index {commit} committed, but its log differs from the "
                f"committed log at index {known}",
            )

    def _check_commit_justified(
        self, node: NodeId, v: NodeView, commit: int, *, overlap: bool
    ) -> None:
        term = v.term
        terms = v.issued.terms
        ids = v.issued.ids
        cfg = self._config(v, v.issued)
        at = v.issued.cfg[-1] if v.issued.cfg else 0
        # Voters that cannot vote or acknowledge in ``cfg`` (another incarnation; a fenced
        # copy of a data dir, rollback.py) count as holding everything, as in
        # ``_check_durable_quorum``.
        out = [
            n for n in sorted(cfg.voters) if not self.counts_in(n, cfg, at) or self._nodes[n].fenced
        ]
        committed_cfg = self._declared_cfg
        for j in range(commit, len(terms)):
            if terms[j] != term:
                continue
            pid = ids[j]
            holders = [n for n in sorted(cfg.voters) if n in out or self._durable_holds(n, j, pid)]
            if len(holders) < majority(cfg):
                continue
            if not overlap or meets_every_majority(holders, committed_cfg):
                return
            raise InvariantViolation(
                CONFIG_SAFETY,
                f"{node}, leader of term {term}, advanced its commit index to {commit} counting "
                f"configuration {fmt_members(cfg)}: entry {j} is durable on "
                f"{', '.join(holders)}, a quorum of it, but that misses a majority of the "
                f"configuration committed before, {fmt_members(committed_cfg)} (two changes in "
                f"flight?): a candidate of that configuration can be elected without index "
                f"{commit}",
            )
        entry_term = terms[commit] if commit < len(terms) else None
        raise InvariantViolation(
            COMMITTED_DURABLE,
            f"{node}, leader of term {term}, advanced its commit index to {commit} (an entry of "
            f"term {entry_term}) but no entry of term {term} at or after it is durable on a "
            f"quorum of its configuration {fmt_members(cfg)}: nothing yet protects index "
            f"{commit} from being overwritten (paper 5.4.2)",
        )

    def _durable_holds(self, node: NodeId, j: int, pid: int) -> bool:
        w = self._nodes.get(node)
        return w is not None and w.durable.holds(j, pid)

    # ---------------------------------------------------------------- configuration changes

    def observe_leader_config(self, node: NodeId) -> None:
        """Leader ``node`` appended a CONFIG entry (its Ready's entries, commit observed): it
        must have committed an entry of its own term first (the 2015 correction to single-
        server changes: otherwise a predecessor's uncommitted change and this one need not
        share a majority, and a committed entry can be overwritten)."""
        v = self._nodes[node]
        terms = v.issued.terms
        first = len(terms)
        for i in range(len(terms) - 1, 0, -1):
            if terms[i] != v.term:
                break
            first = i
        if v.commit < first:
            raise InvariantViolation(
                CONFIG_SAFETY,
                f"{node}, leader of term {v.term}, appended a configuration change before it "
                f"committed an entry of its term (its commit index is {v.commit}, its first "
                f"entry of term {v.term} is at {first})",
            )

    # ---------------------------------------------------------------- replication progress

    def check_progress(self, leader: NodeId, term: int, peers: tuple[PeerStatus, ...]) -> None:
        """A leader's ``match`` for a peer is what that peer acknowledged, after persisting it:
        the peer (the incarnation the leader's configuration lists, not yet moved past the
        leader's term) holds the leader's log up to it durably. A leader that keeps a match
        from an earlier incarnation or membership of the peer breaks this (it would stop
        backing off above the peer's real log and report it caught up)."""
        v = self._nodes[leader]
        cfg = self._config(v, v.issued)
        ids = v.issued.ids
        for p in peers:
            i = p.match
            if i <= 0 or i >= len(ids):
                continue
            w = self._nodes.get(p.id)
            if w is None or w.term > term or w.rolled:
                continue
            if cfg.incarnation_of(p.id) != w.incarnation:
                continue  # not (or no longer) bound to this incarnation: no claim on it
            if not w.durable.holds(i, ids[i]):
                raise InvariantViolation(
                    REPLICATION_PROGRESS,
                    f"{leader}, leader of term {term}, counts {p.id} as holding its log up to "
                    f"{i}, but {p.id}'s durable log does not (it ends at "
                    f"{len(w.durable.ids) - 1}): stale progress",
                )

    # ---------------------------------------------------------------- views

    def role_of(self, node: NodeId) -> Role | None:
        return self._nodes[node].role

    def term_of(self, node: NodeId) -> int:
        return self._nodes[node].term

    def commit_index(self) -> int:
        """The highest index any node has applied (all of 1..it are committed)."""
        return len(self.committed) - 1
