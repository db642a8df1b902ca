"""Election scenarios: basic election, split vote, PreVote, CheckQuorum, stale leaders, learners."""

from __future__ import annotations

from harness import Cluster

from univrs.raft import (
    AppendEntries,
    Heartbeat,
    RaftConfig,
    RequestVote,
    RequestVoteResponse,
    Role,
)

FAST = RaftConfig(heartbeat_ticks=1, election_ticks_min=10, election_ticks_max=20)


def tick_until_leader(c: Cluster, *, max_ticks: int = 200) -> str:
    for _ in range(max_ticks):
        c.tick_all(deliver=True)
        leader = c.leader()
        if leader is not None:
            return leader
    raise AssertionError(f"no leader after {max_ticks} ticks")


def test_three_nodes_elect_and_commit_the_noop() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    assert c.status("n1").term == 2
    c.tick_all(deliver=True)  # heartbeat carries the commit index
    for n in ["n1", "n2", "n3"]:
        st = c.status(n)
        assert st.leader == "n1"
        assert st.commit == 2  # the bootstrap CONFIG entry and the leader's NOOP
        assert [e.index for e in c.applied[n]] == [1, 2]
    assert c.role("n2") is Role.FOLLOWER


def test_election_by_timeout_without_explicit_campaign() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], seed=7)
    leader = tick_until_leader(c)
    assert c.status(leader).term == 2
    assert all(c.status(n).leader == leader for n in ["n1", "n2", "n3"])


def test_split_vote_resolves_in_a_later_term() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3", "n4"], config=RaftConfig(pre_vote=False))
    c.campaign("n1")
    c.campaign("n2")
    # n3 hears n1 first, n4 hears n2 first: 2 votes each, 3 needed.
    c.deliver_one(src="n1", dst="n3", type=RequestVote)
    c.deliver_one(src="n2", dst="n4", type=RequestVote)
    c.stabilize()
    assert c.leader() is None
    assert c.status("n1").term == c.status("n2").term == 2
    leader = tick_until_leader(c)
    assert c.status(leader).term >= 3
    assert 2 not in c.leaders


def test_prevote_keeps_a_partitioned_node_from_raising_terms() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    c.isolate("n3")
    for _ in range(100):
        c.tick_all(deliver=True)
    assert c.status("n3").term == 2  # it pre-campaigned, never campaigned
    assert c.role("n3") in (Role.PRE_CANDIDATE, Role.FOLLOWER)
    c.heal()
    c.tick_all(3, deliver=True)
    assert c.leader() == "n1"
    assert c.status("n1").term == 2
    assert c.status("n3").leader == "n1" and c.role("n3") is Role.FOLLOWER


def test_without_prevote_the_rejoining_node_disrupts_the_leader() -> None:
    # The counterpart of the test above: shows that test can fail.
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=RaftConfig(pre_vote=False))
    c.elect("n1")
    c.isolate("n3")
    for _ in range(100):
        c.tick_all(deliver=True)
    assert c.status("n3").term > 2
    c.heal()
    c.tick_all(3, deliver=True)
    assert c.status("n1").term > 2  # the old leader was deposed by the higher term


def test_prevote_is_refused_while_the_leader_is_alive() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    c.campaign("n3")  # e.g. a node whose timer fired while heartbeats were delayed
    c.stabilize()
    assert c.role("n3") is Role.PRE_CANDIDATE
    assert c.leader() == "n1" and c.status("n3").term == 2
    grants = [m for m in c.sent("n2", RequestVoteResponse) if m.granted and m.dst == "n3"]
    assert grants == []


def test_check_quorum_leader_steps_down_when_cut_off() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=FAST)
    c.elect("n1")
    c.partition({"n1"}, {"n2", "n3"})
    # Answers heard before the cut count for the current CheckQuorum period: the leader steps
    # down at the end of the next one, within two periods.
    c.tick("n1", FAST.election_ticks_min)
    assert c.role("n1") is Role.LEADER
    c.tick("n1", FAST.election_ticks_min)
    assert c.role("n1") is Role.FOLLOWER
    assert c.status("n1").leader is None
    leader = tick_until_leader(c)
    assert leader in ("n2", "n3")
    assert c.status(leader).term == 3


def test_check_quorum_leader_with_a_quorum_stays() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=FAST)
    c.elect("n1")
    c.isolate("n3")
    for _ in range(5 * FAST.election_ticks_max):
        c.tick_all(deliver=True)
    assert c.leader() == "n1" and c.status("n1").term == 2


def test_follower_lease_ignores_vote_requests() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=RaftConfig(pre_vote=False))
    c.elect("n1")
    c.isolate("n3")
    c.campaign("n3")  # term 3, no pre-vote
    c.heal()
    c.deliver(src="n3", type=RequestVote)
    # n1 and n2 heard from their leader recently: the vote requests are ignored.
    assert c.status("n2").term == 2 and c.leader() == "n1"
    assert [m for m in c.sent("n2", RequestVoteResponse) if m.dst == "n3"] == []


def test_stale_leader_rejoins_steps_down_and_loses_uncommitted_entries() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=RaftConfig(check_quorum=False))
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize()
    c.partition({"n1"}, {"n2", "n3"})
    c.propose("n1", b"stale-1")
    c.propose("n1", b"stale-2")
    c.stabilize()
    c.campaign("n2")
    c.stabilize()
    # n2 needs the lease to expire on n3 first when PreVote is on.
    c.tick_all(FAST.election_ticks_max, deliver=True)
    leader = c.leader()
    assert leader in ("n2", "n3") and c.status(leader).term >= 3
    c.propose(leader, b"new")
    c.tick_all(2, deliver=True)
    assert c.role("n1") is Role.LEADER  # still believes it leads its old term
    c.heal()
    c.tick("n1")  # its heartbeat reaches the others, who answer with their higher term
    c.deliver(src="n1", type=Heartbeat)
    c.stabilize()
    assert c.role("n1") is Role.FOLLOWER
    assert c.status("n1").term == c.status(leader).term
    c.tick_all(3, deliver=True)
    for n in ["n1", "n2", "n3"]:
        assert c.applied_data(n) == [b"a", b"new"], n
    assert b"stale-1" not in [e.data for e in c.disk_log("n1")]


def test_learners_never_vote_nor_count() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], learners=["n4"])
    assert c.role("n4") is Role.LEARNER
    c.elect("n1")
    assert [m for m in c.sent("n1", RequestVote) if m.dst == "n4"] == []
    c.tick_all(2, deliver=True)
    assert c.status("n4").commit == 2 and c.status("n4").leader == "n1"
    # A learner never campaigns, however long it waits.
    c.isolate("n4")
    c.tick_all(100, deliver=True)
    assert c.role("n4") is Role.LEARNER and c.status("n4").term == 2
    assert c.sent("n4", RequestVote) == []
    # With only the learner reachable, the leader commits nothing.
    c.partition({"n1", "n4"}, {"n2", "n3"})
    c.propose("n1", b"x")
    c.stabilize()
    st = c.status("n1")
    assert st.commit == 2
    assert {p.id: p.match for p in st.peers}["n4"] == 3
    assert not next(p for p in st.peers if p.id == "n4").voter


def test_candidate_asks_for_votes_only_after_persisting_its_own() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=RaftConfig(pre_vote=False))
    c.hold_disk("n1")
    c.campaign("n1")
    assert c.in_flight(type=RequestVote) == []
    c.persist("n1")
    assert len(c.in_flight(src="n1", type=RequestVote)) == 2


def test_vote_grant_waits_for_persist() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=RaftConfig(pre_vote=False))
    c.hold_disk("n2")
    c.hold_disk("n3")
    c.campaign("n1")
    c.deliver(type=RequestVote)
    assert c.in_flight(type=RequestVoteResponse) == []
    assert c.status("n2").vote == "n1"
    c.persist("n2")
    assert [m.src for m in c.in_flight(type=RequestVoteResponse)] == ["n2"]
    assert c.disks["n2"].hard_state.vote == "n1"
    c.stabilize()
    assert c.role("n1") is Role.LEADER
    # The new leader's appends go out at once, the followers' answers only after persist.
    assert c.in_flight(type=AppendEntries) == []
