"""Simulator seeds the verify helper found (session 5) that fail on the current code and are
not fixed yet: each is held as a strict xfail naming the gap, so that a fix turns it into a
failure to remove (and its seed into a pinned passing test)."""

from __future__ import annotations

import pytest

from univrs.sim import checker as ck
from univrs.sim.checker import InvariantViolation
from univrs.sim.cluster import Simulation


@pytest.mark.xfail(
    strict=True,
    raises=InvariantViolation,
    reason="plaintext gap: a learner is never vouched for (7 nodes, seed 30041)",
)
def test_plaintext_learner_behind_the_change_adding_the_leader_catches_up() -> None:
    # KNOWN GAP (open, docs/security.md): 7 nodes, seed 30041, unlisted leaders off. Learner
    # n5 lists voters n3, n4, n6, n7, n8 and learners n2, n5 (all but n4 still members, so it
    # is no orphan); the leader n9 of term 33 was added after n5's configuration. n5 refuses
    # n9 as a stranger (135 refusals) and stays at term 30, commit 222, for good: the vouch
    # of a listed member comes only in a rejected pre-vote, and a learner never campaigns.
    # With TLS (unlisted leaders on) the seed passes.
    sim = Simulation(seed=30041, n_nodes=7, unlisted_leaders=False)
    try:
        sim.run()
    except InvariantViolation as exc:
        assert exc.invariant == ck.LIVENESS, exc
        raise


def test_the_learner_seed_passes_with_tls() -> None:
    assert Simulation(seed=30041, n_nodes=7, unlisted_leaders=True).run().seed == 30041


@pytest.mark.xfail(
    strict=True,
    raises=InvariantViolation,
    reason="plaintext gap: the only live listed peer is a newer incarnation (5 nodes, 31095)",
)
def test_plaintext_voter_whose_only_live_listed_peer_was_replaced_catches_up() -> None:
    # KNOWN GAP (open, docs/security.md), as seed 40 with a replaced peer instead of a wiped
    # one: 5 nodes, seed 31095, unlisted leaders off. Voter n3 lists n2 (bound to n2.1), n3
    # and n6 (retired); n2 was repaired since and runs as n2.2. n3 refuses n2.2's answers
    # (incarnation, 43) and the leader n1 (stranger, 217): nobody it takes can vouch for n1,
    # and n3 stays a pre-candidate at commit 101 for good. With TLS the seed passes.
    sim = Simulation(seed=31095, n_nodes=5, unlisted_leaders=False)
    try:
        sim.run()
    except InvariantViolation as exc:
        assert exc.invariant == ck.LIVENESS, exc
        raise


def test_the_replaced_peer_seed_passes_with_tls() -> None:
    assert Simulation(seed=31095, n_nodes=5, unlisted_leaders=True).run().seed == 31095


def test_a_slow_disk_landing_a_drop_decided_before_the_commit_passes() -> None:
    # 7 nodes, seed 42248 (TLS): n5 took the term-24 leader's (54, t24) over its uncommitted
    # (54, t17) at tick 618.5 on a slow disk; n6, leader of term 26, committed (54, t17)
    # without n5 about tick 645; the overwrite landed at tick 666. The checker judged the drop
    # when it landed and called it committed-durable; it is judged when decided now.
    assert Simulation(seed=42248, n_nodes=7).run().seed == 42248
