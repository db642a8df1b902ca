"""Simulator seeds the verify helper found (session 5) that failed on the code of the time.
Each was held as a strict xfail naming its gap; the two below are closed by design (session 7)
and pinned as passing seeds, each with a core that lacks the fix failing it as before, so the
seed still shows what it is kept for."""

from __future__ import annotations

from univrs.raft import RaftNode
from univrs.raft.messages import NodeId
from univrs.sim import checker as ck
from univrs.sim.checker import InvariantViolation
from univrs.sim.cluster import Simulation


class _NoProbe(RaftNode):
    """A plaintext learner that never asks its listed members for a vouch (the old core)."""

    def _maybe_probe(self) -> bool:
        return False


class _NoVouchFromAnotherIncarnation(RaftNode):
    """Ignores the vouch of a listed id at another incarnation (the old core)."""

    def _listed_id(self, node: NodeId) -> bool:
        return False


def test_plaintext_learner_behind_the_change_adding_the_leader_catches_up() -> None:
    # 7 nodes, seed 30041, unlisted leaders off. Learner n5 lists voters n3, n4, n6, n7, n8
    # and learners n2, n5 (all but n4 still members: no orphan); the leader n9 of term 33 was
    # added after n5's configuration. The vouch of a listed member used to come only in a
    # rejected pre-vote, and a learner never campaigns: n5 refused n9 as a stranger and stayed
    # at term 30, commit 222, for good (liveness). Now a learner that refuses leader traffic
    # probes its listed members with a pre-vote request (univrs/raft/gate.py _maybe_probe);
    # n6, n7 and n8 reject it naming n9 at term 33, and n5 follows n9.
    sim = Simulation(seed=30041, n_nodes=7, unlisted_leaders=False)
    sim.run()
    n5 = sim.nodes["n5"].raft
    assert n5 is not None
    s = n5.status()
    assert (s.term, s.leader) == (33, "n9")
    assert dict(s.refused).get("stranger", 0) >= 1  # it did refuse n9 before the vouch
    # Without the probe the seed fails as it did: n5 stays at term 30, commit 222.
    old = run_seed_with(_NoProbe, 30041, 7)
    assert old.invariant == ck.LIVENESS
    assert "n5 (learner): learner term 30 commit 222" in old.detail


def test_the_learner_seed_passes_with_tls() -> None:
    assert Simulation(seed=30041, n_nodes=7, unlisted_leaders=True).run().seed == 30041


def test_plaintext_voter_whose_only_live_listed_peer_was_replaced_catches_up() -> None:
    # 5 nodes, seed 31095, unlisted leaders off. Voter n3 lists n2 (bound to n2.1), n3 and n6
    # (retired); n2 was repaired since and runs as n2.2. n3 refused n2.2's answers
    # (incarnation) and the leader (stranger): nobody it took could vouch, and n3 stayed a
    # pre-candidate at commit 101 for good. Now the vouch in a listed id's rejection from
    # another incarnation is noted, the answer still refused and never a vote
    # (univrs/raft/gate.py _maybe_vouch; the safety argument is in docs/security.md): n3
    # follows the leader n2.2 vouches for and catches up (its configuration binds n2.2 now).
    sim = Simulation(seed=31095, n_nodes=5, unlisted_leaders=False)
    sim.run()
    n3 = sim.nodes["n3"].raft
    assert n3 is not None
    s = n3.status()
    assert dict(s.refused).get("incarnation", 0) > 0  # n2.2's answers, refused
    assert s.membership.incarnation_of("n2") == sim.nodes["n2"].disk.incarnation == "n2.2"
    # Without the other incarnation's vouch the seed fails as it did.
    old = run_seed_with(_NoVouchFromAnotherIncarnation, 31095, 5)
    assert old.invariant == ck.LIVENESS
    assert "n3 (voter): pre-candidate term 27 commit 101" in old.detail


def test_the_replaced_peer_seed_passes_with_tls() -> None:
    assert Simulation(seed=31095, n_nodes=5, unlisted_leaders=True).run().seed == 31095


def run_seed_with(cls: type[RaftNode], seed: int, nodes: int) -> InvariantViolation:
    """Run a plaintext seed with core ``cls``: the violation it must fail with."""
    try:
        Simulation(seed=seed, n_nodes=nodes, unlisted_leaders=False, node_factory=cls).run()
    except InvariantViolation as v:
        return v
    raise AssertionError(f"seed {seed} passed with {cls.__name__}")


def test_a_slow_disk_landing_a_drop_decided_before_the_commit_passes() -> None:
    # 7 nodes, seed 42248 (TLS): n5 took the term-24 leader's (54, t24) over its uncommitted
    # (54, t17) at tick 618.5 on a slow disk; n6, leader of term 26, committed (54, t17)
    # without n5 about tick 645; the overwrite landed at tick 666. The checker judged the drop
    # when it landed and called it committed-durable; it is judged when decided now.
    assert Simulation(seed=42248, n_nodes=7).run().seed == 42248
