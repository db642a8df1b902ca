"""Periodic heartbeats skipped for busy followers (issue 14, Round 15 s15-beat).

Under writes the leader sends every follower an AppendEntries (carrying its term and commit,
which resets the follower's election timer as a heartbeat does) and hears its acknowledgement
(which counts for CheckQuorum as a heartbeat answer does) many times per heartbeat interval: a
periodic heartbeat to such a follower tells it nothing, and its answer tells the leader nothing.
The leader skips it (``LeaderLayer._heartbeat_may_wait``) and owes it, sending it at the first
tick the reason no longer holds. These tests show the skip (they fail on ``NoSkip``) and that
it never suppresses a heartbeat that does work: to a probing follower whose probe was lost, to
a full pipeline, to a follower a ReadIndex round waits on, or any heartbeat with read leases.
"""

from __future__ import annotations

import attrs
from changed_core import led_by_a_class
from harness import Cluster

from univrs.raft import AppendEntries, Heartbeat, RaftConfig, RaftNode
from univrs.raft.messages import COMMIT_NOTICE_CTX, AppendEntriesResponse, NodeId
from univrs.raft.progress import Progress
from univrs.raft.ready import Role

# The timings, commit notices and heartbeat skipping nodes run (NodeConfig.raft_config:
# 150/300/500 ms in ticks of 50 ms).
CFG = RaftConfig(
    heartbeat_ticks=3,
    election_ticks_min=6,
    election_ticks_max=10,
    lazy_commit_notice_bytes=1024,
    skip_busy_heartbeats=True,
)
NODES = ("n1", "n2", "n3")


class NoSkip(RaftNode):
    """The leader before s15-beat: every periodic heartbeat goes to every peer."""

    def _heartbeat_may_wait(self, peer: NodeId, pr: Progress) -> bool:
        return False


class SkipAnyBusy(RaftNode):
    """A skip that looks only at the timing (an append sent, an answer heard, within the
    interval): not at the follower's flow-control state nor at pending reads."""

    def _heartbeat_may_wait(self, peer: NodeId, pr: Progress) -> bool:
        now, hb = self._now, self.config.heartbeat_ticks
        sent, heard = pr.append_sent_at, pr.heard_at
        return sent is not None and heard is not None and now - sent < hb and now - heard < hb


def cluster(leader_cls: type[RaftNode] = RaftNode, config: RaftConfig = CFG) -> Cluster:
    return led_by_a_class(NODES, config, leader_cls)


def periodic_heartbeats(c: Cluster, dst: str | None = None) -> int:
    """Heartbeats (not commit notices) the leader n1 has sent so far, to ``dst`` or to all."""
    return sum(
        1
        for rd in c.readies["n1"]
        for m in rd.messages
        if isinstance(m, Heartbeat) and m.ctx != COMMIT_NOTICE_CTX and (dst is None or m.dst == dst)
    )


def to_heartbeat_tick(c: Cluster) -> None:
    """Tick n1 (delivering everything) until the tick after it is a periodic heartbeat tick."""
    for _ in range(CFG.heartbeat_ticks):
        before = periodic_heartbeats(c)
        c.tick("n1")
        c.stabilize()
        if periodic_heartbeats(c) > before:
            c.tick("n1", CFG.heartbeat_ticks - 1)
            c.stabilize()
            return
    raise AssertionError("no heartbeat in a heartbeat interval")


def write_every_tick(c: Cluster, ticks: int) -> None:
    """A write proposed and fully replicated before each of ``ticks`` leader ticks (stops
    early if n1 no longer leads)."""
    for i in range(ticks):
        if c.status("n1").role is not Role.LEADER:
            return
        c.propose("n1", b"w%d" % i)
        c.stabilize()
        c.tick("n1")
        c.stabilize()


def test_busy_followers_get_no_periodic_heartbeats() -> None:
    # Fails on NoSkip: one heartbeat per follower per interval.
    c = cluster()
    ticks = 4 * CFG.election_ticks_max
    before = periodic_heartbeats(c)
    write_every_tick(c, ticks)
    assert periodic_heartbeats(c) == before
    # Nothing heartbeats did was lost: n1 still leads its term (CheckQuorum counted the
    # acknowledgements), no follower campaigned, and every follower knows every commit.
    assert c.status("n1").role is Role.LEADER
    assert {c.status(n).term for n in NODES} == {c.status("n1").term}
    commit = c.status("n1").commit
    assert [c.status(n).commit for n in NODES] == [commit] * 3
    assert c.applied_data("n2")[-1] == b"w%d" % (ticks - 1)

    base = cluster(NoSkip)
    before = periodic_heartbeats(base)
    write_every_tick(base, ticks)
    assert periodic_heartbeats(base) - before >= 2 * (ticks // CFG.heartbeat_ticks)


def test_an_owed_heartbeat_goes_once_the_writes_stop() -> None:
    # The follower hears from the leader at least every heartbeat interval, as before: the
    # heartbeat skipped at a tick right after an append goes ``heartbeat_ticks`` after that
    # append, not at the next periodic tick (which would leave almost two intervals).
    c = cluster()
    to_heartbeat_tick(c)
    c.tick("n1", CFG.heartbeat_ticks - 1)  # two ticks before the next periodic one
    c.stabilize()
    c.propose("n1", b"last")  # the last append, two ticks before the periodic tick
    c.stabilize()
    before = {n: periodic_heartbeats(c, n) for n in ("n2", "n3")}
    heard = {}
    for t in range(1, CFG.heartbeat_ticks + 1):
        c.tick("n1")  # t == 2: the periodic tick, skipped; t == 3: owed, sent
        c.stabilize()
        heard[t] = sum(periodic_heartbeats(c, n) - before[n] for n in ("n2", "n3"))
    assert heard == {1: 0, 2: 0, 3: 2}


class SkipUnheard(RaftNode):
    """A skip that asks only that an append went out this interval, not that the follower
    answered anything in it."""

    def _heartbeat_may_wait(self, peer: NodeId, pr: Progress) -> bool:
        sent = pr.append_sent_at
        return (
            sent is not None
            and self._now - sent < self.config.heartbeat_ticks
            and not pr.inflights.full()
        )


def test_followers_with_slow_disks_still_keep_the_leader_in_office() -> None:
    # Fails on SkipUnheard: the followers receive every append but cannot acknowledge it
    # (their writes are not durable yet), so only heartbeat answers show they are alive;
    # skipping those, CheckQuorum finds no quorum and the leader steps down.
    for cls, leads in ((RaftNode, True), (SkipUnheard, False)):
        c = cluster(cls)
        c.hold_disk("n2")
        c.hold_disk("n3")
        write_every_tick(c, 3 * CFG.election_ticks_min)
        assert (c.status("n1").role is Role.LEADER) is leads, cls
        if leads:
            c.release_disk("n2")
            c.release_disk("n3")
            c.stabilize()
            c.tick("n1")
            c.stabilize()
            assert c.applied_data("n3")[-1] == b"w%d" % (3 * CFG.election_ticks_min - 1)


def lose_the_probe_to_n3(c: Cluster) -> None:
    """n3 falls back to PROBE (an append to it is lost, the next one is rejected) and the
    probe the rejection draws is lost too: the leader waits for a heartbeat answer to unpause."""
    c.propose("n1", b"lost")
    c.drop(src="n1", dst="n3", type=AppendEntries)
    c.deliver(dst="n2")
    c.deliver(src="n2")
    c.propose("n1", b"rejected")
    c.deliver(src="n1", dst="n3", type=AppendEntries)  # rejected: a gap
    c.deliver(src="n3", type=AppendEntriesResponse)  # n1 probes n3 again ...
    assert c.drop(src="n1", dst="n3", type=AppendEntries) == 1  # ... and that probe is lost
    c.stabilize()


def test_a_probing_follower_whose_probe_was_lost_still_gets_its_heartbeat() -> None:
    # Fails on SkipAnyBusy: the probe went out and the rejection came in this interval, so
    # timing alone would skip the heartbeat whose answer lets the leader probe again.
    for cls, sent in ((RaftNode, True), (SkipAnyBusy, False)):
        c = cluster(cls)
        to_heartbeat_tick(c)
        lose_the_probe_to_n3(c)
        c.tick("n1")  # the periodic heartbeat tick
        assert bool(c.in_flight(src="n1", dst="n3", type=Heartbeat)) is sent, cls
        c.stabilize()
        if sent:  # answered, the probe is retried and n3 catches up at once
            assert c.status("n3").commit == c.status("n1").commit


def test_a_full_pipeline_still_gets_its_heartbeat() -> None:
    # Fails on SkipAnyBusy: the answer frees the window (``_on_heartbeat_response``) so the
    # lost appends are retried; skipping it stalls the follower for another interval.
    cfg = attrs.evolve(CFG, max_inflight=2)
    for cls, sent in ((RaftNode, True), (SkipAnyBusy, False)):
        c = cluster(cls, cfg)
        to_heartbeat_tick(c)
        c.propose("n1", b"a")
        c.stabilize()  # n3 acknowledged this interval
        c.propose("n1", b"b")
        c.propose("n1", b"c")
        assert c.drop(src="n1", dst="n3", type=AppendEntries) == 2  # its window is full, lost
        c.stabilize()
        c.tick("n1")
        assert bool(c.in_flight(src="n1", dst="n3", type=Heartbeat)) is sent, cls
        to_n2 = c.in_flight(src="n1", dst="n2", type=Heartbeat)
        # n2 is busy: skipped (a commit notice may go)
        assert not [m for m in to_n2 if m.ctx != COMMIT_NOTICE_CTX], cls


def test_a_read_round_whose_heartbeats_were_lost_is_confirmed_at_the_next_heartbeat() -> None:
    # Fails on SkipAnyBusy: while writes flow, the periodic heartbeat is the only retry of a
    # ReadIndex round whose heartbeats (or answers) were lost; skipped, the read waits until
    # the writes stop or times out.
    for cls, confirmed in ((RaftNode, True), (SkipAnyBusy, False)):
        c = cluster(cls)
        to_heartbeat_tick(c)
        c.propose("n1", b"x")
        c.stabilize()
        c.read_index("n1", 7)
        assert c.drop(src="n1", type=Heartbeat) == 2  # the round's heartbeats are lost
        write_every_tick(c, 1)  # the heartbeat tick, writes still flowing
        assert bool(c.reads["n1"]) is confirmed, cls


def test_with_read_leases_every_periodic_heartbeat_goes() -> None:
    # A lease runs from a heartbeat round a quorum answered; acknowledgements name no round, so
    # skipping would let the lease lapse under writes (_skips_heartbeats).
    c = cluster(config=attrs.evolve(CFG, read_lease=True))
    before = periodic_heartbeats(c)
    write_every_tick(c, 4 * CFG.heartbeat_ticks)
    assert periodic_heartbeats(c) - before == 2 * 4
    c.nodes["n1"].read_index(9, lease=True)
    c.process("n1")
    assert [r.ctx for r in c.reads["n1"]] == [9]  # served on the lease, no round needed
