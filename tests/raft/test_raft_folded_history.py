"""Plaintext mode, the seed-40 class (docs/liveness-gaps.md, s13-live): whom a stale member
hears is decided by its log's *history*, not by when the log was compacted. The configurations
compaction or a snapshot's install folds away stay named (``ConfigHistory.named``, durable as
``HardState.named``), so the candidate a member voted for in its term, an id such a
configuration named, leads it in that term (gate.py ``_once_listed``); and a learner, which
votes for no one, probes the id whose leader traffic it refused if its history named it, and
hears it in the term that id's rejection names it the leader of (gate.py
``_self_vouch_heard``; simulator, 5 nodes, lmdb, lease within, seed 60039). A made-up id, which
no configuration of the history named, still moves no one."""

from __future__ import annotations

import random

import attrs
from senders_helpers import follower, forged_append, settle
from test_raft_stale_member import PLAINTEXT, leaderless, pre_votes, stranger_refusals

from univrs.raft import (
    AppendEntries,
    Heartbeat,
    Membership,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from univrs.raft.membership import ConfigHistory
from univrs.raft.messages import Entry, EntryKind, HardState, SnapshotMeta, encode_membership
from univrs.raft.ready import InitialState

WITHOUT_N3 = Membership(
    voters=frozenset({"n1", "n2", "n4"}),
    incarnations=(("n1", "inc1"), ("n2", "inc2"), ("n4", "inc4")),
)
"""n3 removed: the configuration n2's log holds after index 3."""

LEARNER_N2 = Membership(
    voters=frozenset({"n1", "n4"}),
    learners=frozenset({"n2"}),
    incarnations=(("n1", "inc1"), ("n2", "inc2"), ("n4", "inc4")),
)
"""n3 removed, n2 a learner: the configuration of the learner's snapshot."""


class _ForgetsFoldedConfigs(RaftNode):
    """Names by the log it holds only, as session 12's core did: configurations compaction or
    an install folded away are forgotten."""

    def _once_listed(self, node: str) -> bool:
        return self._configs.ever_lists(node, folded=False)


class _LearnerAsksOnlyListed(RaftNode):
    """A learner probes only whom it lists and notes no vouch of an unlisted id (session 12)."""

    def _probe_peers(self) -> set[str]:
        return set(self._configs.current.members)

    def _self_vouch_heard(self, msg: object) -> bool:
        return False


def _compacted(cls: type[RaftNode], membership: Membership = WITHOUT_N3) -> RaftNode:
    """n2 of the bootstrap {n1, n2, n3}, following n1, which appends ``membership`` at index 3
    (removing n3) and commits it; the log is then compacted up to 3, so no configuration
    of the log n2 holds names n3 any more."""
    node = follower(cls, config=PLAINTEXT)
    change = Entry(term=2, index=3, kind=EntryKind.CONFIG, data=encode_membership(membership))
    node.step(attrs.evolve(forged_append("n1", 2, incarnation="inc1"), entries=(change,), commit=3))
    settle(node)
    assert node.status().commit == 3 and node.status().membership == membership
    assert node.snapshot_taken(SnapshotMeta(index=3, term=2, membership=membership), b"") == 3
    return node


def _vote_then_hear(node: RaftNode, candidate: str, term: int) -> None:
    """``node`` (leaderless) grants ``candidate``'s vote in ``term``, then takes its heartbeat."""
    node.step(RequestVote(term=term, src=candidate, dst="n2", last_log_index=9, last_log_term=5))
    settle(node)
    assert (node.status().term, node.status().vote) == (term, candidate)
    node.step(Heartbeat(term=term, src=candidate, dst="n2", commit=3))


def test_a_member_whose_log_was_compacted_hears_the_candidate_its_history_named() -> None:
    """n2's log named n3 (the bootstrap configuration) until compaction folded it into a base
    that does not. n2 votes for n3 in term 7 and hears it: the history counts, as it did before
    the compaction. A made-up id that won n2's vote the same way is refused; so is n3 on the
    core that forgets folded configurations (session 12's, which failed the simulator's 5
    nodes lmdb lease seed 60123 that way before the learner's vouch closed it)."""
    node = _compacted(RaftNode)
    leaderless(node)
    _vote_then_hear(node, "mallory", 6)
    assert stranger_refusals(node) == 1 and node.status().leader is None
    _vote_then_hear(node, "n3", 7)
    s = node.status()
    assert (s.term, s.leader, s.role) == (7, "n3", Role.FOLLOWER)
    assert stranger_refusals(node) == 1

    old = _compacted(_ForgetsFoldedConfigs)
    leaderless(old)
    _vote_then_hear(old, "n3", 7)
    assert stranger_refusals(old) == 1 and old.status().leader is None


def test_the_folded_history_rides_on_the_next_hard_state_and_survives_a_restart() -> None:
    """``HardState.named`` is written with the next hard state written for another reason
    (never a write of its own), and a node restarted from it hears n3 after voting for it,
    though its snapshot's configuration does not name n3 and its log holds no configuration."""
    node = _compacted(RaftNode)
    assert not node.has_ready()  # the fold alone writes nothing
    leaderless(node)
    node.step(RequestVote(term=7, src="n4", dst="n2", last_log_index=9, last_log_term=5))
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.named == ("n1", "n2", "n3")
    hs = HardState(term=7, vote="n4", commit=3, named=rd.hard_state.named)
    initial = InitialState(
        hard_state=hs, snapshot=SnapshotMeta(index=3, term=2, membership=WITHOUT_N3), applied=3
    )
    restarted = RaftNode("n2", rng=random.Random(2), initial=initial, config=PLAINTEXT)
    leaderless(restarted)
    _vote_then_hear(restarted, "n3", 8)
    assert restarted.status().leader == "n3"
    # Without the history (a store written by a build from before it): refused.
    bare = RaftNode(
        "n2",
        rng=random.Random(2),
        initial=attrs.evolve(initial, hard_state=attrs.evolve(hs, named=())),
        config=PLAINTEXT,
    )
    leaderless(bare)
    _vote_then_hear(bare, "n3", 8)
    assert bare.status().leader is None and stranger_refusals(bare) == 1


def _refusing_learner(cls: type[RaftNode]) -> RaftNode:
    """Learner n2, compacted past the bootstrap configuration that named n3, which leads now
    (a stranger to n2's configuration): n2 refused its heartbeat and its election timer ran
    out."""
    node = _compacted(cls, LEARNER_N2)
    assert node.status().role is Role.LEARNER
    leaderless(node)
    node.step(Heartbeat(term=5, src="n3", dst="n2", commit=3))
    assert stranger_refusals(node) == 1
    return node


def _probe(node: RaftNode) -> list[str]:
    for _ in range(PLAINTEXT.election_ticks_max + 1):
        node.tick()
        asked = pre_votes(list(node.ready().messages))
        if asked:
            return asked
    return []


def test_an_orphaned_learner_hears_the_refused_leader_its_history_named_on_its_own_word() -> None:
    """Simulator, 5 nodes, lmdb, lease within, seed 60039: learner n7's snapshot listed only
    members retired since; the leader n2 was a voter of the configuration its log held before
    that snapshot. Here learner n2 refused n3's heartbeat; its probe asks the members it lists
    and n3 (its history named n3); n3 rejects, naming itself the leader of term 5, and n2
    follows n3 in term 5. The vouch names only its sender: one naming a third id is not
    noted, and a made-up id is never probed nor noted."""
    node = _refusing_learner(RaftNode)
    assert _probe(node) == ["n1", "n3", "n4"]
    # n3 vouching for another id, and a made-up id vouching for itself: neither noted.
    node.step(
        RequestVoteResponse(term=5, src="n3", dst="n2", granted=False, pre_vote=True, leader="n9")
    )
    node.step(Heartbeat(term=5, src="n9", dst="n2", commit=3))
    node.step(
        RequestVoteResponse(
            term=5, src="mallory", dst="n2", granted=False, pre_vote=True, leader="mallory"
        )
    )
    node.step(Heartbeat(term=5, src="mallory", dst="n2", commit=3))
    assert stranger_refusals(node) == 5 and node.status().leader == "n1"  # (lapsed)
    node.step(
        RequestVoteResponse(term=5, src="n3", dst="n2", granted=False, pre_vote=True, leader="n3")
    )
    node.step(Heartbeat(term=6, src="n3", dst="n2", commit=3))  # another term: refused
    assert stranger_refusals(node) == 7
    node.step(Heartbeat(term=5, src="n3", dst="n2", commit=3))
    s = node.status()
    assert (s.term, s.leader, s.role) == (5, "n3", Role.LEARNER)
    assert stranger_refusals(node) == 7

    # A made-up id's leader traffic is never probed, nor does it displace n3.
    m = _compacted(RaftNode, LEARNER_N2)
    leaderless(m)
    m.step(Heartbeat(term=5, src="mallory", dst="n2", commit=3))
    assert _probe(m) == ["n1", "n4"]
    m = _refusing_learner(RaftNode)
    m.step(Heartbeat(term=5, src="mallory", dst="n2", commit=3))
    assert _probe(m) == ["n1", "n3", "n4"]

    # Session 12's core: asks whom it lists only, and n3's own word is not noted.
    old = _refusing_learner(_LearnerAsksOnlyListed)
    assert _probe(old) == ["n1", "n4"]
    old.step(
        RequestVoteResponse(term=5, src="n3", dst="n2", granted=False, pre_vote=True, leader="n3")
    )
    old.step(Heartbeat(term=5, src="n3", dst="n2", commit=3))
    assert old.status().leader == "n1" and stranger_refusals(old) == 3
    # And without the folded history n3 is no id the learner's log named: not probed.
    forgot = _refusing_learner(_ForgetsFoldedConfigs)
    assert _probe(forgot) == ["n1", "n4"]


def test_a_voter_notes_no_unlisted_ids_own_word() -> None:
    """The learner's rule is a learner's: a voter (which has the voted-for rule) does not
    note an unlisted id's rejection naming itself, even one its history named."""
    node = _compacted(RaftNode)
    leaderless(node)
    node.step(Heartbeat(term=5, src="n3", dst="n2", commit=3))
    node.step(
        RequestVoteResponse(term=5, src="n3", dst="n2", granted=False, pre_vote=True, leader="n3")
    )
    node.step(Heartbeat(term=5, src="n3", dst="n2", commit=3))
    assert node.status().leader is None and stranger_refusals(node) == 3


class _AnyIdsOwnWord(RaftNode):
    """Takes any refused leader's own word, whatever its history named: the rule plaintext
    mode rules out (a made-up id would lead the learner)."""

    def _once_listed(self, node: str) -> bool:
        return True


def test_without_the_history_condition_a_made_up_id_leads_the_learner() -> None:
    """What the condition on the history keeps out: on a core without it, mallory's refused
    heartbeat gets it probed, its rejection naming itself is noted, and it leads the learner
    and appends a mint; the real core probes only whom it lists and refuses all three."""
    for cls, led in ((_AnyIdsOwnWord, True), (RaftNode, False)):
        node = _compacted(cls, LEARNER_N2)
        leaderless(node)
        node.step(Heartbeat(term=5, src="mallory", dst="n2", commit=3))
        assert ("mallory" in _probe(node)) is led
        node.step(
            RequestVoteResponse(
                term=5, src="mallory", dst="n2", granted=False, pre_vote=True, leader="mallory"
            )
        )
        mint = Entry(term=5, index=4, kind=EntryKind.NORMAL, data=b"mint")
        node.step(
            AppendEntries(
                term=5,
                src="mallory",
                dst="n2",
                prev_log_index=3,
                prev_log_term=2,
                entries=(mint,),
                commit=4,
            )
        )
        s = node.status()
        assert (s.leader == "mallory", s.last_index == 4) == (led, led)


def test_history_holds_only_committed_configurations() -> None:
    """An uncommitted configuration a conflict truncated is not history, nor one a snapshot's
    install replaced above the node's commit; the bases and committed ones are."""
    n5 = Membership(voters=frozenset({"n1", "n2", "n5"}))
    n6 = Membership(voters=frozenset({"n1", "n2", "n6"}))
    n7 = Membership(voters=frozenset({"n1", "n2", "n7"}))
    h = ConfigHistory(base=Membership(voters=frozenset({"n1", "n2", "n3"})))
    h.on_append(
        [
            Entry(term=2, index=i, kind=EntryKind.CONFIG, data=encode_membership(m))
            for i, m in ((2, n5), (3, n6))
        ]
    )
    h.on_truncate(3)  # n6's entry, uncommitted, overwritten
    h.compact(2)  # folds the base {n1, n2, n3}
    assert h.named == {"n1", "n2", "n3"} and h.ever_lists("n5") and not h.ever_lists("n6")
    h.on_append([Entry(term=3, index=4, kind=EntryKind.CONFIG, data=encode_membership(n7))])
    h.install(9, WITHOUT_N3, keep_suffix=False, commit=3)  # n7 (index 4) above the commit
    assert h.named == {"n1", "n2", "n3", "n5"}
    assert h.ever_lists("n5") and not h.ever_lists("n7") and not h.ever_lists("n5", folded=False)


class _HoldsUnlistedLeaderToAnOldIncarnation(RaftNode):
    """The rule before s13-live's fix of 3-node seed 130355: an unlisted leader is held to
    the incarnation it was last followed at, in whatever term that was."""

    def _unlisted_incarnation(self, leader: str | None, term: int | None) -> str | None:
        followed, inc = self._leader_incarnation
        return inc if leader is not None and followed == leader else None


def _hear(node: RaftNode, term: int, incarnation: str) -> None:
    node.step(RequestVote(term=term, src="n3", dst="n2", last_log_index=9, last_log_term=5))
    settle(node)
    node.step(Heartbeat(term=term, src="n3", dst="n2", commit=3, sender_incarnation=incarnation))


def test_an_unlisted_leader_is_held_to_its_incarnation_only_in_the_term_it_was_followed() -> None:
    """n2 follows the unlisted n3 (an id its history named, which it voted for) at n3.a in
    term 7: in term 7 n3.b is refused. n3 is wiped and returns as n3.b, leads term 9, n2
    votes for it: n2 hears n3.b in term 9 (simulator, 3 nodes, seed 130355, where n1 refused
    it for good on the old rule, which this core still has)."""
    for cls, heard in ((RaftNode, True), (_HoldsUnlistedLeaderToAnOldIncarnation, False)):
        node = _compacted(cls)
        leaderless(node)
        _hear(node, 7, "n3.a")
        assert (node.status().term, node.status().leader) == (7, "n3")
        node.step(Heartbeat(term=7, src="n3", dst="n2", commit=3, sender_incarnation="n3.b"))
        assert dict(node.status().refused).get("incarnation", 0) == 1  # one leader a term
        settle(node)
        leaderless(node)
        _hear(node, 9, "n3.b")
        s = node.status()
        assert (s.term, s.leader == "n3") == (9, heard)
