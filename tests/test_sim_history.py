"""Simulator seeds of the seed-40 class that session 13 (s13-live) closed with the log's
history (docs/liveness-gaps.md): configurations compaction or a snapshot's install folded away
still name their ids (``HardState.named``), and a learner probes the refused leader its
history named and hears it on its own word. Each is pinned passing, with the core without
the rules (tests/sim_cores.py) failing it as before."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sim_cores import (
    ForgetsFoldedConfigs,
    HoldsUnlistedLeaderToAnOldIncarnation,
    Session12Rules,
    old_unlisted_incarnation,
)
from tests.test_sim_verify import LMDB_LEASE, AdmissionRecorder, status_of, vouch_recorder
from univrs.raft import RaftNode, Role
from univrs.raft.messages import Message, NodeId
from univrs.raft.senders import REFUSED_STRANGER
from univrs.sim import checker as ck
from univrs.sim.checker import InvariantViolation
from univrs.sim.cluster import Simulation


def history_recorder() -> tuple[type[RaftNode], list[tuple[NodeId, int, NodeId]]]:
    """The real core, noting (node, term, leader) for each leader message it took only because
    a configuration its log folded away named the sender (the same message is refused by
    session 12's ``_once_listed``, which knows only the log held)."""
    followed: list[tuple[NodeId, int, NodeId]] = []

    class Recording(AdmissionRecorder):
        def _once_listed(self, node: NodeId) -> bool:
            return self._configs.ever_lists(node, folded=not self._old_rules)

    Recording.followed = followed
    return Recording, followed


class _ProbesButIgnoresItsWord(RaftNode):
    """Probes the refused leader its history named, but notes no vouch of its own word."""

    def _self_vouch_heard(self, msg: Message) -> bool:
        return False


def _fails(seed: int, core: type[RaftNode], **kw: Any) -> tuple[Simulation, str]:
    sim = Simulation(seed=seed, unlisted_leaders=False, node_factory=core, **kw)
    with pytest.raises(InvariantViolation) as info:
        sim.run()
    assert info.value.invariant == ck.LIVENESS
    return sim, info.value.detail


def test_plaintext_orphaned_learner_hears_the_leader_its_history_named() -> None:
    # 5 nodes, lmdb state, lease reads within the bound, plaintext, seed 60039 (session-11
    # sweep; pinned failing until s13-live). Learner n7, stuck at a snapshot of index 89,
    # lists n1, n4 and n6, all retired once n4 removed itself; the leader n2 is a stranger to
    # it, nobody it lists runs, and a learner votes for no one. But n7's log held the
    # bootstrap configuration {n1..n5} (its base until that snapshot's install replaced it):
    # n2 is an id its history named (``HardState.named``). Now the learner's probe asks n2
    # too, n2 rejects naming itself, and n7 follows n2 in term 19 (gate.py
    # ``_self_vouch_heard``).
    core, followed = vouch_recorder()
    Simulation(seed=60039, unlisted_leaders=False, node_factory=core, **LMDB_LEASE).run()
    assert ("n7", 19, "n2", "n2", "probe") in followed
    # Session 12's core fails the seed as before, in the same state; so does the core that
    # forgets folded configurations (n2 is named only by the base the install replaced).
    for old in (Session12Rules, ForgetsFoldedConfigs):
        sim, detail = _fails(60039, old, **LMDB_LEASE)
        assert "n7 (learner): learner term 18 commit 89 applied 89 last 89" in detail
        n7 = status_of(sim, "n7")
        assert dict(n7.refused).get(REFUSED_STRANGER, 0) > 0
        assert n7.membership.incarnation_of("n7") == "n7.1"
        assert all(sim.nodes[m].retired for m in n7.membership.members - {"n7"})
    # A pass is no evidence by itself: the core that probes n2 but ignores its word passes
    # too, only because the extra probes moved the seed's course (the final write goes to
    # another node): n7 is still the orphan, refusing n2, at term 18.
    sim = Simulation(
        seed=60039, unlisted_leaders=False, node_factory=_ProbesButIgnoresItsWord, **LMDB_LEASE
    )
    sim.run()
    n7 = status_of(sim, "n7")
    assert (n7.role, n7.term) == (Role.LEARNER, 18) and n7.leader != "n2"
    assert dict(n7.refused).get(REFUSED_STRANGER, 0) > 0
    assert sim._orphaned(sim.nodes["n7"], sim.checker.committed_config().members)


def test_plaintext_voter_hears_the_candidate_a_folded_configuration_named() -> None:
    # 5 nodes, lmdb state, lease within, plaintext, seed 60123 (closed in session 12 by the
    # learner's vouch, tests/test_sim_verify.py, which runs that scenario on the core that
    # forgets folded configurations). On the real core voter n6 hears the leader n4 earlier:
    # it voted for n4 in term 35, and a configuration its log compacted away named n4.
    core, followed = history_recorder()
    Simulation(seed=60123, unlisted_leaders=False, node_factory=core, **LMDB_LEASE).run()
    assert ("n6", 35, "n4") in followed


def incarnation_recorder() -> tuple[type[RaftNode], list[tuple[NodeId, int, NodeId]]]:
    """The real core, noting (node, term, leader) for each leader message it took only
    because an unlisted leader is held to its incarnation only in the term it was followed
    in (the same message is refused by the old rule, tests/sim_cores.py)."""
    followed: list[tuple[NodeId, int, NodeId]] = []

    class Recording(AdmissionRecorder):
        def _unlisted_incarnation(self, leader: NodeId | None, term: int | None) -> str | None:
            if self._old_rules:
                return old_unlisted_incarnation(self, leader)
            return super()._unlisted_incarnation(leader, term)

    Recording.followed = followed
    return Recording, followed


def test_plaintext_voter_hears_an_unlisted_leader_at_its_new_incarnation() -> None:
    # 3 nodes, plaintext, seed 130355 (found by the s13-live sweep; docs/liveness-gaps.md).
    # Voter n1 lists n1, n2, n4 and n5 (n5 wiped since); the leader n3 of {n1..n4} is
    # unlisted. n1 followed n3 at incarnation n3.1 up to term 17; n3 was wiped and added
    # again as n3.2, and leads term 21, in which n1 voted for it (and a listed member vouched
    # for it). n1 held the unlisted leader to the incarnation it last followed it at, in any
    # later term, and refused n3.2's traffic (`stranger`) for good; it failed the same on
    # main (a035c6d). Now an unlisted leader is held to an incarnation only within the term
    # it was followed in (gate.py ``_unlisted_incarnation``): n1 follows n3.2 in term 21.
    core, followed = incarnation_recorder()
    Simulation(seed=130355, n_nodes=3, unlisted_leaders=False, node_factory=core).run()
    assert ("n1", 21, "n3") in followed
    signature = "n1 (voter): follower term 21 commit 235 applied 235 last 236"
    for old in (HoldsUnlistedLeaderToAnOldIncarnation, Session12Rules):
        sim, detail = _fails(130355, old, n_nodes=3)
        assert signature in detail
        n1 = status_of(sim, "n1")
        assert (n1.vote, n1.leader) == ("n3", None) and "n3" not in n1.membership.members
        assert dict(n1.refused).get(REFUSED_STRANGER, 0) > 0
        raft = sim.nodes["n1"].raft
        assert raft is not None and raft._leader_incarnation == ("n3", "n3.1")
        assert sim.nodes["n3"].disk.incarnation == "n3.2"
