"""ReadIndex scenarios (dissertation 6.4): leader reads, follower reads, leader changes."""

from __future__ import annotations

from harness import Cluster

from univrs.raft import (
    AppendEntries,
    Heartbeat,
    HeartbeatResponse,
    RaftConfig,
    RaftNode,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    RequestVote,
    RequestVoteResponse,
    Role,
)


def ready_cluster(config: RaftConfig | None = None) -> Cluster:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=config)
    c.elect("n1")
    c.tick_all(2, deliver=True)
    assert c.status("n1").commit == 2
    return c


def test_leader_read_needs_a_quorum_heartbeat_round() -> None:
    c = ready_cluster()
    c.read_index("n1", 11)
    assert c.reads["n1"] == []
    rounds = c.in_flight(src="n1", type=Heartbeat)
    assert len(rounds) == 2 and rounds[0].ctx > 0
    c.deliver_one(dst="n2", type=Heartbeat)
    assert c.reads["n1"] == []  # the answer has not arrived yet
    c.deliver_one(src="n2", type=HeartbeatResponse)
    assert c.reads["n1"] == [ReadState(ctx=11, index=2)]


def test_reads_issued_together_share_one_round() -> None:
    c = ready_cluster()
    c.nodes["n1"].read_index(1)
    c.nodes["n1"].read_index(2)
    c.process("n1")
    assert len(c.in_flight(src="n1", type=Heartbeat)) == 2  # one round: one per follower
    c.stabilize()
    assert c.read_ctxs("n1") == [1, 2]


def test_read_waits_until_the_leader_commits_in_its_term() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.campaign("n1")
    for _ in range(4):
        c.deliver(type=(RequestVote, RequestVoteResponse))
    assert c.role("n1") is Role.LEADER and c.status("n1").commit == 0
    c.read_index("n1", 5)
    assert c.in_flight(type=Heartbeat) == []  # no round before its NOOP commits
    c.stabilize()  # appends and acks: the NOOP commits, the read starts its round
    assert c.status("n1").commit == 2
    assert c.reads["n1"] == [ReadState(ctx=5, index=2)]


def test_single_voter_read_is_confirmed_at_once() -> None:
    c = Cluster.bootstrap(["n1"])
    c.campaign("n1")
    c.read_index("n1", 9)
    assert c.reads["n1"] == [ReadState(ctx=9, index=2)]
    assert c.network == []


def test_read_released_only_when_applied_reaches_the_read_index() -> None:
    c = ready_cluster()
    c.hold_disk("n1")
    c.propose("n1", b"x")
    c.stabilize()  # n2 and n3 ack: commit 3, but n1 has not made (and applied) index 3 yet
    assert c.status("n1").commit == 3 and c.status("n1").applied == 2
    c.read_index("n1", 4)
    c.stabilize()
    assert c.reads["n1"] == []  # confirmed, waiting for apply
    c.persist("n1")
    assert c.reads["n1"] == [ReadState(ctx=4, index=3)]


def test_old_leader_reads_are_dropped_never_released_without_quorum() -> None:
    c = ready_cluster(config=RaftConfig(check_quorum=False))
    c.partition({"n1"}, {"n2", "n3"})
    c.read_index("n1", 1)
    c.stabilize()
    # Meanwhile the majority elects n2 and writes.
    for _ in range(5 * RaftConfig().election_ticks_max):
        c.tick_all(1, deliver=True)
        if any(c.role(n) is Role.LEADER for n in ["n2", "n3"]):
            break
    new = next(n for n in ["n2", "n3"] if c.role(n) is Role.LEADER)
    c.propose(new, b"w")
    c.tick_all(2, deliver=True)
    assert c.reads["n1"] == []
    c.heal()
    c.tick_all(2, deliver=True)
    assert c.role("n1") is Role.FOLLOWER
    assert c.dropped_reads["n1"] == [1]
    assert c.reads["n1"] == []


def test_a_core_that_skips_the_check_serves_stale_reads() -> None:
    # The counterpart of the test above: it catches a leader that skips the quorum round.
    class NoQuorumCheck(RaftNode):
        def _read_needs_quorum_check(self) -> bool:
            return False

    c = Cluster.bootstrap(["n1", "n2", "n3"], config=RaftConfig(check_quorum=False))
    c.classes["n1"] = NoQuorumCheck
    c.crash("n1")
    c.restart("n1")
    c.elect("n1")
    c.tick_all(2, deliver=True)
    c.partition({"n1"}, {"n2", "n3"})
    c.read_index("n1", 1)
    assert c.read_ctxs("n1") == [1]  # released without proving leadership


def test_leader_read_dropped_on_check_quorum_step_down() -> None:
    cfg = RaftConfig()
    c = ready_cluster(config=cfg)
    c.partition({"n1"}, {"n2", "n3"})
    c.read_index("n1", 3)
    c.tick("n1", 2 * cfg.election_ticks_min)
    assert c.role("n1") is Role.FOLLOWER
    assert c.dropped_reads["n1"] == [3] and c.reads["n1"] == []


def test_follower_read_index_through_the_leader() -> None:
    c = ready_cluster()
    c.hold_disk("n2")
    c.propose("n1", b"x")
    c.stabilize()
    assert c.status("n1").commit == 3  # with n3; n2 has x but not durably
    c.read_index("n2", 7)
    assert [type(m) for m in c.in_flight(src="n2")] == [ReadIndexRequest]
    c.stabilize()
    answers = c.sent("n1", ReadIndexResponse)
    (req,) = c.sent("n2", ReadIndexRequest)
    assert [(m.ctx, m.index, m.ok) for m in answers] == [(req.ctx, 3, True)]
    assert req.ctx != 7  # the follower's own request id, not the caller's ctx
    assert c.reads["n2"] == []  # n2 has applied only up to 2
    c.persist("n2")
    c.tick("n1")  # heartbeat brings n2 the commit index
    c.stabilize()
    assert c.reads["n2"] == [ReadState(ctx=7, index=3)]


def test_follower_read_without_a_leader_is_dropped_at_once() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.read_index("n2", 1)
    assert c.dropped_reads["n2"] == [1]


def test_follower_read_dropped_when_the_leader_changes() -> None:
    c = ready_cluster(config=RaftConfig(check_quorum=False))
    c.read_index("n3", 8)
    c.drop(type=ReadIndexRequest)  # lost on its way to n1
    c.isolate("n1")
    c.tick_all(RaftConfig().election_ticks_max + 1, deliver=True)
    assert c.status("n3").term > 2
    assert c.dropped_reads["n3"] == [8]
    assert c.reads["n3"] == []


def test_follower_read_to_a_non_leader_is_refused() -> None:
    c = ready_cluster()
    c.nodes["n2"].step(ReadIndexRequest(term=2, src="n3", dst="n2", ctx=4))
    c.process("n2")
    assert [(m.ctx, m.ok) for m in c.sent("n2", ReadIndexResponse)] == [(4, False)]


def test_unanswered_follower_read_times_out() -> None:
    cfg = RaftConfig(check_quorum=False)
    c = ready_cluster(config=cfg)
    c.read_index("n2", 6)
    c.drop(type=ReadIndexRequest)
    c.tick("n2", 2 * cfg.election_ticks_max)
    assert c.dropped_reads["n2"] == [6]


def test_read_answer_from_another_term_is_ignored() -> None:
    c = ready_cluster()
    c.read_index("n2", 6)
    c.drop(type=ReadIndexRequest)
    c.nodes["n2"].step(ReadIndexResponse(term=2, src="n3", dst="n2", ctx=6, index=1, ok=True))
    c.process("n2")
    assert c.reads["n2"] == []


def test_appends_do_not_confirm_reads() -> None:
    # Only heartbeat answers carry the round: a flood of appends does not release a read early.
    c = ready_cluster()
    c.read_index("n1", 1)
    c.drop(type=Heartbeat)
    c.propose("n1", b"a")
    c.deliver(type=AppendEntries)
    c.deliver(src="n2")
    c.deliver(src="n3")
    assert c.reads["n1"] == []
