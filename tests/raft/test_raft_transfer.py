"""Leader transfer (dissertation 3.10): catch the target up, TimeoutNow, abort on timeout."""

from __future__ import annotations

import pytest
from harness import Cluster

from univrs.errors import NotLeader, ProposalDropped
from univrs.raft import AppendEntries, RaftConfig, RequestVote, Role, TimeoutNow


def ready_cluster() -> Cluster:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    c.tick_all(2, deliver=True)
    return c


def test_transfer_to_an_up_to_date_voter() -> None:
    c = ready_cluster()
    c.nodes["n1"].transfer_leader("n2")
    c.process("n1")
    assert [m.dst for m in c.in_flight(type=TimeoutNow)] == ["n2"]
    with pytest.raises(ProposalDropped):
        c.propose("n1", b"x")
    c.stabilize()
    assert c.role("n2") is Role.LEADER and c.status("n2").term == 3
    assert c.role("n1") is Role.FOLLOWER
    # The campaign was a transfer: it skipped pre-vote and passed n3's lease.
    votes = c.sent("n2", RequestVote)
    assert votes and all(m.transfer and not m.pre_vote for m in votes)
    c.propose("n2", b"after")
    c.tick_all(2, deliver=True)
    assert c.applied_data("n1") == [b"after"]


def test_transfer_first_brings_the_target_up_to_date() -> None:
    c = ready_cluster()
    c.isolate("n3")
    for i in range(5):
        c.propose("n1", b"%d" % i)
    c.stabilize()
    c.heal()
    c.nodes["n1"].transfer_leader("n3")
    c.process("n1")
    assert c.in_flight(type=TimeoutNow) == []  # n3 lags: catch it up first
    c.tick("n1")  # a heartbeat round finds out how far n3 is
    for _ in range(100):
        if c.in_flight(type=TimeoutNow):
            break
        assert c.deliver(limit=1) == 1
    n3 = next(p for p in c.status("n1").peers if p.id == "n3")
    assert n3.match == c.status("n1").last_index  # TimeoutNow only once n3 has everything
    assert c.sent("n1", AppendEntries)
    c.stabilize()
    assert c.role("n3") is Role.LEADER
    assert c.status("n3").last_index >= c.status("n1").last_index


def test_transfer_aborts_after_an_election_timeout() -> None:
    cfg = RaftConfig()
    c = ready_cluster()
    c.isolate("n2")
    c.nodes["n1"].transfer_leader("n2")
    c.process("n1")
    c.stabilize()
    with pytest.raises(ProposalDropped):
        c.propose("n1", b"x")
    c.tick("n1", cfg.election_ticks_min)
    assert c.role("n1") is Role.LEADER and c.status("n1").term == 2
    c.propose("n1", b"x")  # accepted again
    c.heal()
    c.tick_all(2, deliver=True)
    assert c.leader() == "n1"
    assert all(c.applied_data(n) == [b"x"] for n in ["n1", "n2", "n3"])


def test_transfer_preconditions() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], learners=["n4"])
    c.elect("n1")
    with pytest.raises(NotLeader) as exc:
        c.nodes["n2"].transfer_leader("n3")
    assert exc.value.leader_hint == "n1"
    with pytest.raises(ProposalDropped):
        c.nodes["n1"].transfer_leader("n4")  # a learner cannot lead
    c.nodes["n1"].transfer_leader("n1")  # to itself: nothing to do
    c.process("n1")
    c.propose("n1", b"ok")


def test_timeout_now_to_a_learner_is_ignored() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], learners=["n4"])
    c.elect("n1")
    c.nodes["n4"].step(TimeoutNow(term=2, src="n1", dst="n4"))
    c.process("n4")
    assert c.role("n4") is Role.LEARNER and c.status("n4").term == 2
