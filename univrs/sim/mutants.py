"""Deliberately broken Raft cores, to show that the simulator's checks can fail.

Each mutant is a subclass of RaftNode (or of the API's ``PendingProposals``, or of the simulated
state machine ``KvStore``) that overrides one of the hook methods the core exposes for this purpose
(see univrs/raft/node.py, leader.py, snapshot_stream.py and compaction.py), breaking one rule of the
Raft paper or dissertation. The simulator itself is the same for every core: its operator always
tries a batch's next membership change at once (the real core refuses it), and its runtime sometimes
reports applied() late, so its snapshots can be ahead of it.
They live only here, in simulator code. ``python -m univrs.sim --list-mutants`` lists them and
``--mutant NAME`` runs one; each must be caught within 200 seeds (tests/test_mutants.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from univrs.raft import MAX_TERM, RaftNode
from univrs.raft.messages import (
    AppendEntriesResponse,
    Entry,
    Membership,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from univrs.runtime.proposals import Outcome, PendingProposals
from univrs.sim.kv import KvResult, KvStore, KvWrite


class CommitPreviousTerm(RaftNode):
    """Commits an entry of an earlier term by counting replicas (breaks paper 5.4.2, Figure 8)."""

    def _can_commit_by_counting(self, index: int) -> bool:
        return True


class DoubleVote(RaftNode):
    """Grants a vote to every candidate, even after voting for another in the same term (5.2)."""

    def _may_grant_vote(self, msg: RequestVote) -> bool:
        return True


class NoLogCheck(RaftNode):
    """Votes for candidates whatever their log (drops the election restriction, 5.4.1)."""

    def _log_up_to_date(self, last_index: int, last_term: int) -> bool:
        return True


class AckBeforePersist(RaftNode):
    """Acknowledges before persisting, and the leader counts its unpersisted entries."""

    def _send_after_persist(self, msg: Message) -> None:
        self._send(msg)

    def _self_match_index(self) -> int:
        return int(self._log.last_index)


class ReadNoQuorum(RaftNode):
    """Serves ReadIndex reads without confirming leadership with a quorum (dissertation 6.4)."""

    def _read_needs_quorum_check(self) -> bool:
        return False


class TwoConfigChanges(RaftNode):
    """Lets configuration changes start before the previous one commits (dissertation 4.1)."""

    def _max_inflight_config_changes(self) -> int:
        return 1 << 20


class CompactPastCommit(RaftNode):
    """Compacts the log up to any snapshot, past what is applied and committed (5.1)."""

    def _compaction_limit(self) -> int:
        return int(self._log.last_index)


class AcceptStrangers(RaftNode):
    """Takes messages from anyone: no membership rule for senders (issue 12; senders.py)."""

    def _sender_refusal(self, msg: Message) -> str | None:
        return None


class StrangerVotesWhileLed(RaftNode):
    """Judges vote requests from strangers by the election's rules even while it follows a live
    leader (the stranger rule for vote requests without its condition; senders.py)."""

    def _sender_refusal(self, msg: Message) -> str | None:
        refusal = super()._sender_refusal(msg)
        return None if isinstance(msg, RequestVote) else refusal


class StrangerVoteAnswers(RaftNode):
    """Takes vote answers from strangers: a made-up peer, a member's id from an incarnation its
    configuration does not bind (senders.py: votes *from* strangers stay refused)."""

    def _sender_refusal(self, msg: Message) -> str | None:
        refusal = super()._sender_refusal(msg)
        return None if isinstance(msg, RequestVoteResponse) else refusal


class NoTermStep(RaftNode):
    """Takes a term any distance above its own, as long as it is at most ``MAX_TERM``
    (gate.py ``MAX_TERM_STEP``, s15-review T1): a vote request at ``MAX_TERM`` from a made-up
    id, taken while the node followed no leader, left no term to elect a leader in."""

    def _impossible_term(self, term: int) -> bool:
        return term > MAX_TERM


class LiveLeaderAnyIncarnation(RaftNode):
    """Hears its live leader's id at any incarnation its configuration lets through (one it
    binds to no incarnation yet, or nothing attested), not only at the one it hears that leader
    at (senders.py; the red team's forged mint on a follower)."""

    def _live_incarnation(self, heard: str | None) -> str | None:
        return None


class UnboundAnyIncarnation(RaftNode):
    """Hears a member its configuration binds to no incarnation yet at any incarnation, not
    only at the first one it took (gate.py ``_maybe_pin``): a leader counts a forger's (or a
    wiped data dir's) acknowledgements under the member's id, a candidate its votes."""

    def _pinned_incarnations(self) -> dict[str, str]:
        return {}


class ForgetPinsAtRestart(RaftNode):
    """Starts with no pins whatever its hard state holds, as before pins were durable
    (gate.py ``_maybe_pin``): a restarted node takes the first incarnation it hears under an
    unbound member's id again (a forger's, or the member's wiped data dir's)."""

    def __init__(self, id: str, **kwargs: Any) -> None:
        super().__init__(id, **kwargs)
        self._pinned = {}
        self._durable_pins = 0
        self._last_hs = attrs.evolve(self._last_hs, pins=())


class ChangeBeforeTermCommit(RaftNode):
    """Starts a configuration change before committing an entry of its term (the 2015 bug)."""

    def _config_change_needs_term_commit(self) -> bool:
        return False


class SendBeforeTermDurable(RaftNode):
    """Sends messages of a term before that term's hard state is durable (a lone voter's
    appends to its learners, a follower's answers to a new leader)."""

    def _hold_until_term_durable(self, msg: Message) -> bool:
        return False


class StaleProgress(RaftNode):
    """Keeps a member's old progress when it re-enters the configuration, changes incarnation
    or shows a log shorter than what it acknowledged."""

    def _fresh_progress_on_reentry(self) -> bool:
        return False

    def _notice_log_regress(self) -> bool:
        return False


class ReadIdsRestart(RaftNode):
    """Forwards reads under the caller's ctx, so ids start over with every process and an
    answer to a read of an earlier process can release a new one (stale read)."""

    def _read_wire_id(self, ctx: int) -> int:
        return ctx


class LeaseFromAck(RaftNode):
    """Starts the read lease when a quorum's answer arrives instead of when the answered
    heartbeat was sent (run with read leases on)."""

    def _lease_quorum_acked(self, round: int) -> None:
        self._lease.quorum_acked(round)
        if round > getattr(self, "_quorum_round", 0):  # rounds grow for the node's lifetime
            self._quorum_round = round
            self._lease.start = self._now


class LeaseVoteWhileLed(RaftNode):
    """Grants votes and pre-votes while it heard from a live leader within the election
    timeout, so a leader's read lease protects nothing (run with read leases on)."""

    def _in_lease(self, pre_vote: bool) -> bool:
        return False


class AckAlwaysWaits(RaftNode):
    """Says every acknowledgement of its term may wait for its next input, even one that
    commits or frees a pipeline (issue 14, round 19: the runtime would leave it unstepped)."""

    def _append_success_may_wait(self, msg: AppendEntriesResponse) -> bool:
        return True


class SnapshotDropRetry(PendingProposals[Any]):
    """Treats a proposal covered by a snapshot install as not applied, so the API retries it
    (issue 10, bug 5: a write applied twice, an If-Match write answered 409 after applying)."""

    def covered_outcome(self) -> Outcome:
        return Outcome.NOT_APPLIED


class BatchSharedRevision(KvStore):
    """Applies a batch entry's writes at one shared revision (breaks the batch rule of
    univrs/sm/state.py: one revision per command)."""

    def apply(
        self, entry: Entry, writes: tuple[KvWrite, ...] = (), config: Membership | None = None
    ) -> list[tuple[KvResult | None, bool]]:
        if len(writes) < 2:
            return super().apply(entry, writes, config)
        self.applied, self.applied_term = entry.index, entry.term
        shared = self._next_revision()
        return [self._write(w, shared) for w in writes]


class RevisionFromIndex(KvStore):
    """Restores a snapshot at its index's revision, not the revision it stored, so the
    writes after it reuse revisions of a batch before it (breaks the snapshot rule of
    univrs/sm/snapshot.py: the last revision travels in the snapshot)."""

    def restore(self, data: bytes, index: int, term: int, config: Any) -> None:
        super().restore(data, index, term, config)
        self.revision = index


@attrs.frozen(kw_only=True)
class Mutant:
    """A named broken core, or a runtime whose proposal outcomes are broken."""

    name: str
    description: str
    cls: type[RaftNode] = RaftNode
    proposals: type[PendingProposals[Any]] = PendingProposals
    kv: type[KvStore] = KvStore
    lease: str = "off"  # the simulator's lease mode this mutant needs (cluster.py)
    unbound_bootstrap: bool = False  # needs a bootstrap configuration that binds no one


def _mutant(
    name: str,
    cls: type[RaftNode] = RaftNode,
    proposals: type[PendingProposals[Any]] | None = None,
    kv: type[KvStore] = KvStore,
    lease: str = "off",
    unbound_bootstrap: bool = False,
) -> Mutant:
    broken: type = kv if kv is not KvStore else (proposals or cls)
    doc = (broken.__doc__ or "").strip().splitlines()[0]
    return Mutant(
        name=name,
        description=doc,
        cls=cls,
        proposals=proposals or PendingProposals,
        kv=kv,
        lease=lease,
        unbound_bootstrap=unbound_bootstrap,
    )


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        _mutant("commit-previous-term", CommitPreviousTerm),
        _mutant("double-vote", DoubleVote),
        _mutant("no-log-check", NoLogCheck),
        _mutant("ack-before-persist", AckBeforePersist),
        _mutant("read-no-quorum", ReadNoQuorum),
        _mutant("two-config-changes", TwoConfigChanges),
        _mutant("compact-past-commit", CompactPastCommit),
        _mutant("change-before-term-commit", ChangeBeforeTermCommit),
        _mutant("send-before-term-durable", SendBeforeTermDurable),
        _mutant("stale-progress", StaleProgress),
        _mutant("read-ids-restart", ReadIdsRestart),
        _mutant("snapshot-drop-retry", proposals=SnapshotDropRetry),
        _mutant("accept-strangers", AcceptStrangers),
        _mutant("stranger-votes-while-led", StrangerVotesWhileLed),
        _mutant("stranger-vote-answers", StrangerVoteAnswers),
        _mutant("live-leader-any-incarnation", LiveLeaderAnyIncarnation),
        _mutant("no-term-step", NoTermStep),
        _mutant("unbound-any-incarnation", UnboundAnyIncarnation, unbound_bootstrap=True),
        _mutant("forget-pins-at-restart", ForgetPinsAtRestart, unbound_bootstrap=True),
        _mutant("batch-shared-revision", kv=BatchSharedRevision),
        _mutant("revision-from-index", kv=RevisionFromIndex),
        _mutant("ack-always-waits", AckAlwaysWaits),
    )
}

# Broken read leases, run in the simulator's lease mode ("within"). Unlike MUTANTS they are not
# caught within 200 seeds: a stale lease read needs a new leader to commit and acknowledge a
# write, and a client to read the old leader, inside the few ticks the broken rule adds, which
# the fault schedule rarely lines up (none in seeds 1..100 at 3 nodes). The core harness
# builds that interleaving and shows each serving a stale read (tests/raft/test_raft_lease.py).
LEASE_MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        _mutant("lease-from-ack", LeaseFromAck, lease="within"),
        _mutant("lease-vote-while-led", LeaseVoteWhileLed, lease="within"),
    )
}
ALL_MUTANTS: dict[str, Mutant] = {**MUTANTS, **LEASE_MUTANTS}


def node_factory(mutant: str | None) -> Callable[..., Any]:
    """The class the simulator builds nodes from: RaftNode, or the named mutant's."""
    return RaftNode if mutant is None else _get(mutant).cls


def proposals_factory(mutant: str | None) -> type[PendingProposals[Any]]:
    """The API's pending-proposal tracker: the real one, or the named mutant's."""
    return PendingProposals if mutant is None else _get(mutant).proposals


def mutant_lease(mutant: str | None) -> str:
    """The lease mode the named mutant runs in ("off" for most)."""
    return "off" if mutant is None else _get(mutant).lease


def mutant_unbound_bootstrap(mutant: str | None) -> bool:
    """Does the named mutant need the unbound bootstrap configuration (cluster.py)?"""
    return mutant is not None and _get(mutant).unbound_bootstrap


def kv_factory(mutant: str | None) -> type[KvStore]:
    """Each node's state machine: the real one, or the named mutant's."""
    return KvStore if mutant is None else _get(mutant).kv


def _get(mutant: str) -> Mutant:
    try:
        return ALL_MUTANTS[mutant]
    except KeyError:
        raise ValueError(f"unknown mutant {mutant!r}; known: {', '.join(ALL_MUTANTS)}") from None
