"""A vote request from an older term is answered with ours when the voter runs without PreVote
(session 26 sweep: 3 nodes, ``--rollback checked``, seed 272137).

Raft's RequestVote answers ``currentTerm``; the core dropped a real request from an older term
(etcd's choice), answering only stale pre-votes. Without PreVote that left a candidate below a
stale voter's term for ever: the voter, whose configuration predates the candidate, campaigned
among its own listed peers at ever higher terms and never sent the candidate anything, and the
candidate, which needed its vote, never learned the term to campaign above. With PreVote the
candidate's next pre-vote is refused in the voter's term and it adopts that, so there a stale
real request is still dropped (as before).
"""

from __future__ import annotations

import random

import pytest

from univrs.raft.messages import HardState, Membership, RequestVote, RequestVoteResponse
from univrs.raft.node import RaftNode
from univrs.raft.ready import InitialState, RaftConfig, Role
from univrs.sim import checker as ck
from univrs.sim import runner
from univrs.sim.runner import run_seed

MEMBERS = Membership(voters=frozenset({"n1", "n2", "n3"}))


def voter(term: int, *, pre_vote: bool, check_quorum: bool = False) -> RaftNode:
    init = InitialState(hard_state=HardState(term=term), membership=MEMBERS)
    cfg = RaftConfig(pre_vote=pre_vote, check_quorum=check_quorum)
    return RaftNode("n2", rng=random.Random(1), config=cfg, initial=init)


def asked(node: RaftNode, *, term: int, pre_vote: bool) -> tuple[object, ...]:
    node.step(
        RequestVote(
            term=term, src="n1", dst="n2", last_log_index=9, last_log_term=term, pre_vote=pre_vote
        )
    )
    rd = node.ready()
    return rd.messages + rd.messages_after_persist


def test_without_pre_vote_an_older_terms_request_is_refused_in_ours() -> None:
    for check_quorum in (False, True):
        n2 = voter(7, pre_vote=False, check_quorum=check_quorum)
        out = asked(n2, term=5, pre_vote=False)
        assert out == (
            RequestVoteResponse(term=7, src="n2", dst="n1", granted=False, pre_vote=False),
        )
        st = n2.status()
        assert (st.term, st.vote, st.role) == (7, None, Role.FOLLOWER)  # nothing else moved


def test_with_pre_vote_a_stale_real_request_is_dropped_and_a_stale_pre_vote_refused() -> None:
    n2 = voter(7, pre_vote=True)
    assert asked(n2, term=5, pre_vote=False) == ()
    assert asked(n2, term=6, pre_vote=True) == (
        RequestVoteResponse(term=7, src="n2", dst="n1", granted=False, pre_vote=True),
    )


def test_the_candidate_adopts_the_term_of_the_refusal() -> None:
    init = InitialState(hard_state=HardState(term=4), membership=MEMBERS)
    n1 = RaftNode("n1", rng=random.Random(1), config=RaftConfig(pre_vote=False), initial=init)
    n1.campaign()
    assert n1.status().role is Role.CANDIDATE and n1.status().term == 5
    n1.step(RequestVoteResponse(term=7, src="n2", dst="n1", granted=False))
    st = n1.status()
    assert (st.role, st.term) == (Role.FOLLOWER, 7)


class DropsStaleVotes(RaftNode):
    """The core before session 26: an older term's real vote request is not answered."""

    def _answer_stale(self, msg: object) -> None:
        if isinstance(msg, RequestVote) and not msg.pre_vote:
            return
        super()._answer_stale(msg)  # type: ignore[arg-type]


def test_the_sweeps_seed_passes_and_fails_with_the_old_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = run_seed(272137, nodes=3, rollback="checked")
    assert r.ok, f"{r.invariant}: {r.detail}\n{r.replay}"

    monkeypatch.setattr(runner, "node_factory", lambda mutant: DropsStaleVotes)
    old = run_seed(272137, nodes=3, rollback="checked")
    assert old.invariant == ck.LIVENESS, old.detail
    # The stale voter n2 and the candidate n4 (the only live voters of the committed
    # configuration, n1 being a fenced older copy) campaign apart for ever.
    assert "n2 (voter): candidate" in (old.detail or "")
    assert "n4 (voter): candidate" in (old.detail or "")
