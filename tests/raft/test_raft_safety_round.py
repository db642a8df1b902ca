"""The core's half of the safety round (issue 10): each test replays the situation a confirmed
bug needed, on the real core and on the simulator's mutant that reverts the fix, so the test
shows both that the rule holds and that the scenario would catch its absence."""

from __future__ import annotations

import random

import pytest
from harness import Cluster

from univrs.errors import ProposalDropped
from univrs.raft import (
    MAX_TERM,
    AppendEntriesResponse,
    InitialState,
    Membership,
    RaftConfig,
    RaftNode,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
    bootstrap_state,
)
from univrs.raft import node as node_module
from univrs.sim.mutants import (
    ChangeBeforeTermCommit,
    ReadIdsRestart,
    SendBeforeTermDurable,
    StaleProgress,
)

PLAIN = RaftConfig(pre_vote=False, check_quorum=False)


def members(voters: str, learners: str = "", **incs: str) -> Membership:
    return Membership(
        voters=frozenset(f"n{c}" for c in voters),
        learners=frozenset(f"n{c}" for c in learners),
        incarnations=tuple(sorted(incs.items())),
    )


# ---- bug 1: a membership change before the leader committed in its term -------------------------


def divergent_changes(cls: type[RaftNode]) -> Cluster:
    """n1 leads {n1..n4} and adds voter n5, an entry only n5 receives. n2 wins term 3 with the
    votes of n3 and n4, then n4 is cut off before any entry of term 3 reaches it; n2 at once
    removes n1 ({n2,n3,n4}: a majority is n2+n3) and commits x there. Then n1, n4 and n5 meet:
    {n1,n4,n5} is a majority of n1's {n1..n5}, and n4's log is no newer than n1's."""
    m4 = members("1234")
    init = {n: bootstrap_state(m4) for n in m4.voters}
    init["n5"] = InitialState()
    c = Cluster(init, config=PLAIN, classes={"n2": cls})
    c.elect("n1")
    c.tick_all(2, deliver=True)  # every voter holds n1's no-op of term 2
    c.partition({"n1", "n5"}, {"n2", "n3", "n4"})
    c.nodes["n1"].propose_membership(members("12345"))
    c.process("n1")
    c.stabilize()
    assert c.status("n5").last_index == c.status("n1").last_index  # n5 caught up, uncommitted
    c.campaign("n2")
    c.deliver(type=RequestVote)  # n4 votes (the vote crosses before the cut) ...
    c.deliver(type=RequestVoteResponse)
    assert c.role("n2") is Role.LEADER
    c.partition({"n1", "n5"}, {"n2", "n3"}, {"n4"})
    c.stabilize()  # ... and hears nothing of term 3
    try:
        c.nodes["n2"].propose_membership(members("234"))
    except ProposalDropped as exc:
        assert "not committed an entry of its term" in str(exc)
        assert cls is RaftNode
        return c
    c.process("n2")
    c.stabilize()
    c.propose("n2", b"x")
    c.stabilize()
    c.partition({"n1", "n4", "n5"}, {"n2", "n3"})
    c.crash("n1")
    c.restart("n1")  # no longer leading; it and n5 hold the newest log on their side
    c.tick_all(4 * PLAIN.election_ticks_max, deliver=True)
    c.heal()
    c.tick_all(3, deliver=True)
    return c


def test_a_new_leader_changes_membership_only_after_committing_in_its_term() -> None:
    c = divergent_changes(RaftNode)
    # Refused until n2's no-op commits, which needs n4 (3 of {n1..n4}); once n4 holds an entry
    # of term 3 it can no longer help n1, whose log ends in term 2, win.
    c.heal()
    c.tick_all(3, deliver=True)
    n2 = c.nodes["n2"]
    assert c.role("n2") is Role.LEADER
    n2.propose_membership(members("234"))
    c.process("n2")
    c.tick_all(3, deliver=True)
    assert c.status("n2").membership == members("234")
    assert c.status("n4").last_term == c.status("n2").term


def test_without_the_rule_a_committed_entry_is_overwritten() -> None:
    with pytest.raises(AssertionError, match=r"State Machine Safety|two leaders"):
        divergent_changes(ChangeBeforeTermCommit)


# ---- bug 2: a leader sends at a term that is not yet durable -----------------------------------


def lone_voter_forgets_its_term(cls: type[RaftNode]) -> Cluster:
    """n1 is the only voter, n2 its learner. n1's disk stalls as it wins term 2 at once and
    proposes x; it crashes before anything is durable, wins term 2 again and proposes y."""
    m = members("1", "2")
    c = Cluster({n: bootstrap_state(m) for n in m.members}, classes={"n1": cls})
    c.hold_disk("n1")
    c.campaign("n1")
    assert c.role("n1") is Role.LEADER and c.status("n1").term == 2
    c.propose("n1", b"x")
    c.stabilize()  # whatever n1 may send now reaches n2
    c.crash("n1")
    c.held.discard("n1")
    c.restart("n1")
    c.campaign("n1")
    assert c.status("n1").term == 2  # the same term again: term 2 was never durable
    c.propose("n1", b"y")
    c.tick_all(3, deliver=True)
    return c


def test_nothing_carrying_a_term_leaves_before_the_term_is_durable() -> None:
    c = lone_voter_forgets_its_term(RaftNode)
    assert c.applied_data("n2") == [b"y"] == c.applied_data("n1")


def test_without_the_rule_a_learner_keeps_an_entry_of_a_forgotten_term() -> None:
    with pytest.raises(AssertionError, match="State Machine Safety"):
        lone_voter_forgets_its_term(SendBeforeTermDurable)


def test_a_follower_answers_a_new_term_only_once_it_is_durable() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=PLAIN)
    c.elect("n1")
    c.tick_all(2, deliver=True)
    c.hold_disk("n3")
    c.campaign("n2")  # term 3
    c.deliver(type=RequestVote, dst="n3")
    # n3 adopted term 3 in memory; its vote and everything else of term 3 wait for the disk.
    assert c.status("n3").term == 3
    assert not [m for m in c.network if m.src == "n3" and m.term >= 3]
    c.release_disk("n3")
    assert [m for m in c.network if m.src == "n3" and isinstance(m, RequestVoteResponse)]


def test_pre_vote_traffic_is_not_held() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    c.tick_all(2, deliver=True)
    c.hold_disk("n2")
    c.isolate("n1")
    c.tick("n2", RaftConfig().election_ticks_max + 1)
    pre = [m for m in c.network if isinstance(m, RequestVote) and m.src == "n2"]
    assert pre and all(m.pre_vote for m in pre)  # out at once although n2's disk stalls


# ---- bug 4: a member re-entering the configuration keeps its old progress -----------------------


def learner_caught_up(cls: type[RaftNode]) -> Cluster:
    m = members("123", "4", n4="a")
    c = Cluster({n: bootstrap_state(m) for n in m.members}, classes={"n1": cls})
    c.elect("n1")
    for i in range(5):
        c.propose("n1", f"w{i}".encode())
    c.tick_all(2, deliver=True)
    assert c.status("n4").last_index == c.status("n1").last_index
    return c


def wipe(c: Cluster, nid: str) -> None:
    """``nid`` comes back with an empty data dir (no log, no configuration)."""
    c.crash(nid)
    c.initial[nid] = InitialState()
    c.disks[nid].entries.clear()
    c.disks[nid].hard_state = InitialState().hard_state
    c.disks[nid].snapshot = None
    c.restart(nid, give_snapshot=False)


def peer(c: Cluster, leader: str, nid: str) -> tuple[int, int]:
    (p,) = [p for p in c.status(leader).peers if p.id == nid]
    return p.match, c.status(nid).last_index


@pytest.mark.parametrize("cls", [RaftNode, StaleProgress])
def test_a_replaced_incarnation_starts_from_fresh_progress(cls: type[RaftNode]) -> None:
    c = learner_caught_up(cls)
    wipe(c, "n4")
    c.nodes["n1"].propose_membership(members("123", "4", n4="b"))
    c.process("n1")
    if cls is not RaftNode:  # appends and rejects forever, the leader showing it caught up
        with pytest.raises(AssertionError, match="did not settle"):
            c.tick_all(4, deliver=True)
        match, last = peer(c, "n1", "n4")
        assert match > last
        return
    c.tick_all(4, deliver=True)
    match, last = peer(c, "n1", "n4")
    assert match == last == c.status("n1").last_index  # caught up for real


@pytest.mark.parametrize("cls", [RaftNode, StaleProgress])
def test_a_removed_and_re_added_member_starts_from_fresh_progress(cls: type[RaftNode]) -> None:
    c = learner_caught_up(cls)
    c.nodes["n1"].propose_membership(members("123"))  # n4 removed ...
    c.process("n1")
    c.deliver(dst="n2")
    c.deliver(src="n2")  # ... committed by n1+n2, while n1 still tracks n4 (not yet pruned)
    wipe(c, "n4")
    c.nodes["n1"].propose_membership(members("123", "4"))  # ... and re-added, wiped
    c.process("n1")
    if cls is not RaftNode:
        with pytest.raises(AssertionError, match="did not settle"):
            c.tick_all(4, deliver=True)
        match, last = peer(c, "n1", "n4")
        assert match > last
        return
    c.tick_all(4, deliver=True)
    match, last = peer(c, "n1", "n4")
    assert match == last == c.status("n1").last_index


@pytest.mark.parametrize("cls", [RaftNode, StaleProgress])
def test_a_log_that_went_backwards_is_noticed(cls: type[RaftNode]) -> None:
    c = learner_caught_up(cls)
    wipe(c, "n4")  # same id, same configuration: only its answers show the loss
    c.propose("n1", b"after")
    if cls is not RaftNode:
        with pytest.raises(AssertionError, match="did not settle"):
            c.tick_all(4, deliver=True)
        match, last = peer(c, "n1", "n4")
        assert match > last  # stuck above its real end, rejecting every append
        return
    c.tick_all(4, deliver=True)
    match, last = peer(c, "n1", "n4")
    assert match == last == c.status("n1").last_index
    rejects = [
        m
        for rd in c.readies["n4"]
        for m in (*rd.messages, *rd.messages_after_persist)
        if isinstance(m, AppendEntriesResponse) and not m.success
    ]
    assert 1 <= len(rejects) <= 3


# ---- bug 3: an answer to a read of an earlier process releases a new read ----------------------


def read_across_a_restart(cls: type[RaftNode]) -> tuple[Cluster, int]:
    """n2 forwards read 1; the leader's answer is delayed while n2 restarts and a write
    commits; the restarted n2 issues read 1 again and then the old answer arrives. Returns the
    cluster and the write's index."""
    m = members("123")
    c = Cluster({n: bootstrap_state(m) for n in m.voters}, classes={"n2": cls})
    c.elect("n1")
    c.tick_all(2, deliver=True)
    c.read_index("n2", 1)
    for _ in range(20):
        c.deliver(where=lambda m: not isinstance(m, ReadIndexResponse))
    (old,) = [m for m in c.network if isinstance(m, ReadIndexResponse)]
    c.network.remove(old)
    c.crash("n2")
    c.restart("n2")
    _, w = c.propose("n1", b"w")
    c.tick_all(2, deliver=True)  # n2 applies w and learns its leader again
    assert c.status("n2").leader == "n1" and c.status("n2").applied >= w
    before = len(c.reads["n2"])
    c.read_index("n2", 1)
    c.nodes["n2"].step(old)
    c.process("n2")
    c.reads["n2"] = c.reads["n2"][before:]
    return c, w


def test_a_read_answer_from_before_a_restart_releases_nothing() -> None:
    c, w = read_across_a_restart(RaftNode)
    assert c.reads["n2"] == []
    c.stabilize()
    assert [(r.ctx, r.index >= w) for r in c.reads["n2"]] == [(1, True)]


def test_with_read_ids_that_start_over_the_old_answer_serves_a_stale_read() -> None:
    c, w = read_across_a_restart(ReadIdsRestart)
    assert [(r.ctx, r.index < w) for r in c.reads["n2"]] == [(1, True)]  # misses w


# ---- a forged term (issue 12, defence in depth) ------------------------------------------------


@pytest.mark.parametrize("term", [MAX_TERM + 1, (1 << 64) - 1])
def test_a_term_beyond_the_bound_is_refused_and_counted(term: int) -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    c.tick_all(2, deliver=True)
    before = c.status("n2")
    n2 = c.nodes["n2"]
    n2.step(RequestVote(term=term, src="n3", dst="n2", last_log_index=99, last_log_term=term))
    n2.step(TimeoutNow(term=term, src="n1", dst="n2"))
    c.process("n2")
    after = c.status("n2")
    assert (after.term, after.role, after.leader) == (before.term, before.role, "n1")
    assert after.refused_messages == 2
    c.propose("n1", b"still")
    c.tick_all(2, deliver=True)
    assert c.applied_data("n2")[-1:] == [b"still"]


# ---- a node knows its own incarnation ------------------------------------------------------------


def test_a_node_never_campaigns_where_its_id_is_bound_to_another_incarnation() -> None:
    # A wiped n1 (incarnation b) holding an old one-voter configuration that binds n1 to its
    # old incarnation a: campaigning there would elect it alone with a log lacking what a
    # committed. It waits to be told (replaced) instead.
    m = Membership(voters=frozenset({"n1"}), incarnations=(("n1", "a"),))
    for inc, role in (("b", Role.LEARNER), ("a", Role.LEADER), (None, Role.LEADER)):
        node = RaftNode("n1", rng=random.Random(1), initial=bootstrap_state(m), incarnation=inc)
        node.campaign()
        for _ in range(3):
            rd = node.ready()
            if rd.hard_state is not None:
                node.persisted_hard_state(rd.hard_state)
        assert node.status().role is role, inc
    unbound = Membership(voters=frozenset({"n1"}))
    node = RaftNode("n1", rng=random.Random(1), initial=bootstrap_state(unbound), incarnation="b")
    node.campaign()
    assert node.status().role is Role.LEADER  # unbound (bootstrap): taken as ours


def test_a_leader_whose_id_is_rebound_steps_down(monkeypatch: pytest.MonkeyPatch) -> None:
    m = members("123", n1="a", n2="x", n3="y")
    c = Cluster({n: bootstrap_state(m) for n in m.voters})
    c.nodes["n1"].incarnation = "a"
    c.elect("n1")
    c.tick_all(2, deliver=True)
    rebound = members("123", n1="z", n2="x", n3="y")
    # A voter rebound in place is two changes (s14-audit V1): the core refuses it now...
    with pytest.raises(ProposalDropped, match="at most one voter"):
        c.nodes["n1"].propose_membership(rebound)
    # ...and should such an entry still reach its log (the id-only count of before), a
    # leader whose id it rebinds steps down.
    monkeypatch.setattr(node_module, "voter_changes", lambda a, b: len(a.voters ^ b.voters))
    c.nodes["n1"].propose_membership(rebound)
    c.process("n1")
    c.tick_all(2, deliver=True)
    assert c.role("n1") is not Role.LEADER
