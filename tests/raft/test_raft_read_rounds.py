"""Narrow ReadIndex rounds (``RaftConfig.narrow_read_rounds``; read_only.py, "Narrow rounds"):
a read's round goes to a quorum's worth of voters, widens a tick later, and a read is still
confirmed only by a quorum's answers to heartbeats sent after it arrived."""

from __future__ import annotations

import attrs
import pytest
from harness import Cluster

from univrs.raft import Heartbeat, HeartbeatResponse, RaftConfig, RaftNode, Role

NARROW = RaftConfig(heartbeat_ticks=3, narrow_read_rounds=True, check_quorum=False)


def ready_cluster(config: RaftConfig = NARROW) -> Cluster:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=config)
    c.elect("n1")
    c.tick_all(3, deliver=True)
    assert c.status("n1").commit == 2
    return c


def round_beats(c: Cluster) -> list[Heartbeat]:
    return [m for m in c.in_flight(src="n1", type=Heartbeat) if m.ctx > 0]


def test_a_read_round_goes_to_one_follower_of_two() -> None:
    c = ready_cluster()
    c.read_index("n1", 7)
    beats = round_beats(c)
    assert len(beats) == 1  # a quorum of 3 is the leader and one follower
    c.stabilize()
    assert c.read_ctxs("n1") == [7]


def test_broadcast_rounds_by_default() -> None:
    c = ready_cluster(attrs.evolve(NARROW, narrow_read_rounds=False))
    c.read_index("n1", 7)
    assert len(round_beats(c)) == 2


def test_the_follower_that_answered_last_is_chosen_next() -> None:
    c = ready_cluster()
    c.read_index("n1", 1)
    (first,) = round_beats(c)
    c.stabilize()
    c.read_index("n1", 2)
    (second,) = round_beats(c)
    assert second.dst == first.dst and second.ctx > first.ctx
    c.stabilize()
    assert c.read_ctxs("n1") == [1, 2]


def test_an_unanswered_round_widens_at_the_next_tick() -> None:
    c = ready_cluster()
    c.read_index("n1", 5)
    (beat,) = round_beats(c)
    other = "n3" if beat.dst == "n2" else "n2"
    c.isolate(beat.dst)  # the chosen follower is gone
    c.stabilize()
    assert c.reads["n1"] == []
    c.tick("n1")  # one tick later the round goes to the other voter too
    assert [m.ctx >= beat.ctx for m in round_beats(c) if m.dst == other] == [True]
    c.stabilize()
    assert c.read_ctxs("n1") == [5]


class AcksTheNewestRound(RaftNode):
    """A mutant: takes any heartbeat answer as an answer to the newest round handed out, so a
    read can be confirmed by a heartbeat sent before it arrived."""

    def _on_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        if msg.ctx and self._role is Role.LEADER:
            msg = attrs.evolve(msg, ctx=self._leader_reads.round)
        super()._on_heartbeat_response(msg)


@pytest.mark.parametrize("narrow", [True, False])
@pytest.mark.parametrize("mutant", [False, True])
def test_a_read_is_never_confirmed_by_a_round_sent_before_it_arrived(
    narrow: bool, mutant: bool
) -> None:
    """Read 2 arrives after a follower answered (but before the leader heard) a heartbeat of an
    earlier round; read 2's own round is lost; the other two nodes elect a new leader and
    commit a write. The late answer must not confirm read 2 (it would read index 2, missing the
    write). The mutant above does confirm it: the stale read this test is there to catch."""
    cfg = attrs.evolve(NARROW, narrow_read_rounds=narrow, pre_vote=False)
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=cfg)
    if mutant:
        c.classes["n1"] = AcksTheNewestRound
        c.crash("n1")
        c.restart("n1")
    c.elect("n1")
    c.tick_all(3, deliver=True)
    c.read_index("n1", 1)
    c.stabilize()
    assert c.read_ctxs("n1") == [1]
    # A periodic heartbeat carries round 1; n3 answers it, the answer is slow to arrive.
    while not c.in_flight(src="n1", dst="n3", type=Heartbeat):
        c.tick("n1")
    c.deliver(src="n1", dst="n3", type=Heartbeat)
    (late,) = c.in_flight(src="n3", dst="n1", type=HeartbeatResponse)
    assert late.ctx > 0
    c.drop(src="n1")  # anything else n1 sent: lost
    c.read_index("n1", 2)
    assert round_beats(c) and all(m.ctx > late.ctx for m in round_beats(c))
    c.drop(src="n1")  # read 2's round is lost
    # Meanwhile n2 and n3 elect n2 and commit a write that read 2 must see.
    c.partition({"n1"}, {"n2", "n3"})
    c.campaign("n2")
    c.stabilize()
    assert c.role("n2") is Role.LEADER
    c.propose("n2", b"w")
    c.stabilize()
    assert c.status("n2").commit > 2
    # The late answer arrives at n1, still leader of the old term in its own eyes.
    c.blocked.discard(("n3", "n1"))
    c.network.append(late)
    c.deliver(src="n3", dst="n1", type=HeartbeatResponse)
    stale = [r for r in c.reads["n1"] if r.ctx == 2]
    if mutant:
        assert stale and stale[0].index < c.status("n2").commit  # the stale read, caught
    else:
        assert stale == []


def test_a_narrow_round_starts_a_lease() -> None:
    """With leases, a quorum's answers to a narrow round start the lease from its send tick."""
    cfg = attrs.evolve(NARROW, check_quorum=True, read_lease=True)
    c = ready_cluster(cfg)
    # Let any lease from the set-up run out, answering nothing: no lease now.
    c.partition({"n1"}, {"n2", "n3"})
    c.tick("n1", cfg.lease_ticks + 1)
    c.drop(src="n1")
    c.heal()
    c.nodes["n1"].read_index(1, lease=True)
    c.process("n1")
    assert c.reads["n1"] == [] and len(round_beats(c)) == 1  # a ReadIndex read, narrow
    c.stabilize()
    assert c.read_ctxs("n1") == [1]
    c.nodes["n1"].read_index(2, lease=True)  # the narrow round's quorum started a lease
    c.process("n1")
    assert c.read_ctxs("n1") == [1, 2] and round_beats(c) == []
