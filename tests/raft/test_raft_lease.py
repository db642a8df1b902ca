"""Lease reads (read_only.py, "Leases"): the leader's lease, its start, its end, and the
followers' vote refusal it rests on."""

from __future__ import annotations

import pytest
from harness import Cluster

from univrs.raft import (
    Heartbeat,
    HeartbeatResponse,
    RaftConfig,
    RaftNode,
    ReadState,
    RequestVote,
    Role,
    TimeoutNow,
)
from univrs.sim.mutants import LeaseFromAck, LeaseVoteWhileLed

LEASE = RaftConfig(election_ticks_min=10, election_ticks_max=20, read_lease=True)


def lease_cluster(config: RaftConfig = LEASE) -> Cluster:
    """n1 leads with its NOOP committed and a lease from the heartbeat round just answered."""
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=config)
    c.elect("n1")
    c.tick("n1")  # a heartbeat round
    c.stabilize()
    assert c.status("n1").commit == 2
    return c


def lease_read(c: Cluster, nid: str, ctx: int) -> None:
    c.nodes[nid].read_index(ctx, lease=True)
    c.process(nid)


def test_config_is_off_by_default_and_validated() -> None:
    assert RaftConfig().read_lease is False
    assert LEASE.lease_ticks == 8  # 10 - 1 - the default drift bound of 1 tick
    with pytest.raises(ValueError, match="needs check_quorum"):
        RaftConfig(read_lease=True, check_quorum=False)
    with pytest.raises(ValueError, match="leaves no lease"):
        RaftConfig(
            election_ticks_min=10, election_ticks_max=20, read_lease=True, lease_drift_ticks=9
        )
    with pytest.raises(ValueError, match="lease_drift_ticks must be >= 0"):
        RaftConfig(lease_drift_ticks=-1)


def test_lease_read_is_served_without_a_heartbeat_round() -> None:
    c = lease_cluster()
    assert c.status("n1").lease
    lease_read(c, "n1", 7)
    assert c.reads["n1"] == [ReadState(ctx=7, index=2)]
    assert c.in_flight(type=Heartbeat) == []


def test_lease_read_is_a_readindex_read_when_leases_are_off() -> None:
    c = lease_cluster(RaftConfig(election_ticks_min=10, election_ticks_max=20))
    assert not c.status("n1").lease
    lease_read(c, "n1", 7)
    assert c.reads["n1"] == []
    assert len(c.in_flight(src="n1", type=Heartbeat)) == 2  # a ReadIndex round
    c.stabilize()
    assert c.reads["n1"] == [ReadState(ctx=7, index=2)]


def test_lease_runs_from_the_send_of_the_answered_heartbeat_not_its_answer() -> None:
    c = lease_cluster()
    c.tick("n1", 8)  # the lease of the round answered above runs out...
    c.drop(type=Heartbeat)  # ...and no later round is answered
    assert not c.status("n1").lease
    c.tick("n1")  # round r goes out now (tick t)
    sent = c.in_flight(src="n1", type=Heartbeat)
    c.network = []
    for _ in range(5):  # five ticks pass before anyone answers (later rounds are lost)
        c.tick("n1")
        c.drop(type=Heartbeat)
    for m in sent:
        c.network.append(m)
    c.stabilize()  # round r is answered now, at t + 5
    assert c.status("n1").lease
    c.tick("n1", 2)
    c.drop(type=Heartbeat)
    assert c.status("n1").lease  # t + 7 < t + 8
    c.tick("n1")
    c.drop(type=Heartbeat)
    assert not c.status("n1").lease  # t + 8: over, though the answer came only 3 ticks ago
    lease_read(c, "n1", 9)
    assert c.reads["n1"] == []  # falls back to a ReadIndex round
    c.stabilize()
    assert c.reads["n1"] == [ReadState(ctx=9, index=2)]


def test_no_lease_until_an_entry_of_the_term_commits() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=LEASE)
    c.campaign("n1")
    c.deliver(type=RequestVote)  # pre-votes
    c.stabilize()
    assert c.role("n1") is Role.LEADER
    c.nodes["n1"].read_index(3, lease=True)
    c.process("n1")
    assert c.reads["n1"] == []
    c.stabilize()
    assert c.reads["n1"] == [ReadState(ctx=3, index=2)]


def test_timeout_now_ends_the_lease_for_the_rest_of_the_term() -> None:
    c = lease_cluster()
    c.nodes["n1"].transfer_leader("n2")
    c.process("n1")
    assert c.in_flight(src="n1", type=TimeoutNow)
    assert not c.status("n1").lease
    c.drop(type=TimeoutNow)  # lost: the transfer will be aborted
    c.tick("n1", 10)
    c.stabilize()
    assert c.role("n1") is Role.LEADER and c.status("n1").term == c.status("n2").term
    assert not c.status("n1").lease  # a delayed TimeoutNow could still elect n2 this term
    lease_read(c, "n1", 4)
    assert c.reads["n1"] == []
    c.stabilize()
    assert c.reads["n1"] == [ReadState(ctx=4, index=2)]  # by ReadIndex


def test_led_follower_refuses_votes_even_after_forgetting_its_leader() -> None:
    c = lease_cluster()
    c.campaign("n2")  # an explicit campaign clears n2's leader: it is a pre-candidate
    c.drop(src="n2")
    assert c.status("n2").leader is None
    term = c.status("n3").term
    c.nodes["n3"].campaign()  # n3 asks n2 (which forgot n1) for a pre-vote...
    c.process("n3")
    c.deliver(dst="n2", type=RequestVote)
    assert not any(getattr(m, "granted", False) for m in c.in_flight(src="n2", dst="n3"))
    c.stabilize()
    assert c.role("n1") is Role.LEADER and c.status("n3").term == term


def test_restarted_follower_refuses_votes_for_an_election_timeout() -> None:
    c = lease_cluster()
    c.crash("n2")
    c.restart("n2")
    c.crash("n1")  # n1 dies: n3 campaigns at once, n2 heard from nobody since it started
    c.nodes["n3"].campaign()
    c.process("n3")
    c.deliver(dst="n2", type=RequestVote)
    assert not any(getattr(m, "granted", False) for m in c.in_flight(src="n2"))
    c.network = []
    c.tick("n2", 10)  # the start-up hold is over
    c.nodes["n3"].campaign()
    c.process("n3")
    c.stabilize()
    assert c.role("n3") is Role.LEADER


# ---- the two rules a lease rests on, shown by the simulator's mutants ----------------------


def test_a_lease_measured_from_the_answer_serves_a_stale_read() -> None:
    # n1's heartbeat reaches n2 and n3 at once but their answers are delayed; n1 is then cut
    # off, n2 and n3 wait out their election timeouts and elect a leader that commits a write.
    # Answers arriving only now start no lease (they prove nothing after the send); a core
    # that starts the lease at the answer serves the old value.
    for cls, stale in ((RaftNode, False), (LeaseFromAck, True)):
        c = Cluster.bootstrap(["n1", "n2", "n3"], config=LEASE)
        c.classes["n1"] = cls
        c.crash("n1")
        c.restart("n1")  # now built from cls (term 1: no start-up hold)
        c.elect("n1")
        c.tick("n1")
        c.stabilize()
        c.tick("n1")  # a heartbeat round...
        c.deliver(src="n1", type=Heartbeat)  # ...arrives; its answers are held
        held = c.in_flight(dst="n1", type=HeartbeatResponse)
        assert len(held) == 2
        c.network = []
        c.isolate("n1")
        new = elect_without(c, "n1")
        c.propose(new, b"written")
        c.stabilize()
        written = c.status(new).commit
        assert c.role("n1") is Role.LEADER and c.status("n1").commit < written
        c.heal()
        c.network = list(held)
        c.deliver(dst="n1", type=HeartbeatResponse)
        c.network = []
        lease_read(c, "n1", 5)
        served = [r.index for r in c.reads["n1"]]
        assert (served != [] and served[0] < written) is stale, (cls, served, written)


def test_followers_voting_while_led_let_a_lease_serve_a_stale_read() -> None:
    # n3 no longer hears from n1 and campaigns; n2 heard from n1 a tick ago. Voting while led,
    # n2 elects n3, which commits a write while n1 (cut off from then on) still holds the lease
    # n2's answers gave it: n1's lease read misses the write. The real n2 refuses the votes.
    for cls, stale in ((RaftNode, False), (LeaseVoteWhileLed, True)):
        c = Cluster.bootstrap(["n1", "n2", "n3"], config=LEASE)
        c.classes["n2"] = cls
        c.crash("n2")
        c.restart("n2")
        c.elect("n1")
        c.tick("n1")
        c.stabilize()
        c.cut("n1", "n3")
        c.cut("n3", "n1")
        for _ in range(LEASE.election_ticks_max + 1):
            c.tick("n1")
            c.stabilize()  # n2 answers n1's heartbeat: n1's lease runs on
            c.tick("n2")
            c.tick("n3")
            if c.role("n3") is not Role.FOLLOWER:
                break
        assert c.role("n3") is not Role.FOLLOWER  # it campaigns
        c.isolate("n1")
        c.stabilize()
        assert c.role("n1") is Role.LEADER and c.status("n1").lease
        if not stale:
            assert c.role("n3") is not Role.LEADER  # n2 refused: n1's lease is safe
            continue
        assert c.role("n3") is Role.LEADER
        c.propose("n3", b"written")
        c.stabilize()
        written = c.status("n3").commit
        lease_read(c, "n1", 6)
        served = [r.index for r in c.reads["n1"]]
        assert served and served[0] < written, (served, written)


def elect_without(c: Cluster, out: str) -> str:
    """Tick every node (``out``'s clock runs too) for an election timeout, the least the
    others must wait after hearing from ``out``, then have one of the others campaign."""
    others = sorted(n for n in c.nodes if n != out)
    for _ in range(LEASE.election_ticks_min):
        for nid in sorted(c.nodes):
            c.tick(nid)
        c.stabilize()
    leaders = [n for n in others if c.role(n) is Role.LEADER]
    if not leaders:
        c.campaign(others[0])
        c.stabilize()
        leaders = [n for n in others if c.role(n) is Role.LEADER]
    assert leaders, "no leader elected"
    return leaders[0]
