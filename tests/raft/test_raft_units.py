"""Unit tests of flow control (progress.py), ReadIndex bookkeeping (read_only.py) and timers."""

from __future__ import annotations

import pytest
from harness import Cluster

from univrs.raft import Heartbeat, RaftConfig, RaftNode, Role, bootstrap_state
from univrs.raft.messages import Membership
from univrs.raft.progress import Inflights, Progress, ProgressState
from univrs.raft.read_only import (
    ApplyWait,
    ForwardedRead,
    ForwardedReads,
    LeaderReads,
    PendingRead,
)


def progress(match: int = 0, next: int = 1, cap: int = 3) -> Progress:
    return Progress(match=match, next=next, inflights=Inflights(capacity=cap))


def test_probe_pauses_after_one_send_until_an_answer() -> None:
    pr = progress(next=5)
    assert not pr.is_paused()
    pr.sent(7, 3)
    assert pr.is_paused() and pr.next == 5  # probing does not move next optimistically
    assert pr.maybe_update(7)
    pr.become_replicate()
    assert (pr.state, pr.next, pr.is_paused()) == (ProgressState.REPLICATE, 8, False)


def test_replicate_window_and_acks() -> None:
    pr = progress(match=4, next=5, cap=2)
    pr.become_replicate()
    pr.sent(6, 2)
    pr.sent(8, 2)
    assert pr.is_paused() and pr.next == 9 and len(pr.inflights) == 2
    pr.maybe_update(6)
    pr.inflights.free_to(6)
    assert not pr.is_paused() and len(pr.inflights) == 1
    pr.sent(8, 0)  # an empty append takes no slot
    assert len(pr.inflights) == 1


def test_rejections_stale_or_not() -> None:
    pr = progress(match=4, next=10)
    pr.become_replicate()  # next = 5
    pr.sent(9, 5)
    assert not pr.maybe_decr_to(3, 1)  # at or below match: stale
    assert pr.maybe_decr_to(7, 6)
    assert (pr.state, pr.next) == (ProgressState.PROBE, 6)
    assert not pr.maybe_decr_to(9, 2)  # in probe, only an answer to next - 1 counts
    assert pr.maybe_decr_to(5, 1)
    assert pr.next == 5  # never below match + 1


def test_inflights_order_and_bounds() -> None:
    inf = Inflights(capacity=2)
    inf.add(3)
    with pytest.raises(AssertionError):
        inf.add(3)
    inf.add(5)
    with pytest.raises(AssertionError):
        inf.add(9)
    inf.free_first()
    assert len(inf) == 1 and not inf.full()


def read(ctx: int, round: int, deadline: int = 100) -> PendingRead:
    return PendingRead(ctx=ctx, requester=None, index=7, round=round, deadline=deadline)


def test_leader_reads_rounds_and_quorum_confirmation() -> None:
    lr = LeaderReads()
    r1, new1 = lr.round_for_new_read()
    r1b, new1b = lr.round_for_new_read()
    assert (r1, new1, r1b, new1b) == (1, True, 1, False)  # same unsent round
    lr.add(read(1, r1))
    lr.round_unsent = False  # its heartbeats left
    r2, new2 = lr.round_for_new_read()
    assert (r2, new2) == (2, True)
    lr.add(read(2, r2))
    lr.ack("b", 1)
    lr.ack("b", 99)  # never handed out: ignored
    assert lr.acked_round("b") == 1
    assert [r.ctx for r in lr.pop_confirmed(1)] == [1]
    assert lr.pop_confirmed(1) == []
    assert [r.ctx for r in lr.pop_expired(100)] == [2]
    assert not lr.has_unconfirmed()


def test_forwarded_reads() -> None:
    fr = ForwardedReads()
    assert fr.add(101, ForwardedRead(ctx=1, term=2, leader="a", deadline=10)) is None
    assert fr.add(102, ForwardedRead(ctx=2, term=2, leader="a", deadline=12)) is None
    assert fr.add(103, ForwardedRead(ctx=1, term=2, leader="a", deadline=14)) == 1  # displaced
    assert fr.take(101, 2, "a") is None  # the displaced request's answer matches nothing
    assert fr.take(2, 2, "a") is None  # answers carry wire ids, never the caller's ctx
    assert fr.take(102, 3, "a") is None and fr.take(102, 2, "b") is None
    assert fr.take(102, 2, "a") == 2
    assert fr.take(102, 2, "a") is None  # a duplicate answer
    assert fr.pop_expired(13) == []
    assert fr.drop_stale(3, "a") == [1]
    assert len(fr) == 0


def test_apply_wait_releases_in_index_order() -> None:
    aw = ApplyWait()
    aw.add(1, 9)
    aw.add(2, 3)
    aw.add(3, 5)
    assert [r.ctx for r in aw.release(5)] == [2, 3]
    assert [r.ctx for r in aw.release(9)] == [1]


class FixedRng:
    """An injected RNG that records calls and always answers ``value``."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.calls: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.calls.append((a, b))
        return self.value


def test_election_timeout_comes_from_the_injected_rng() -> None:
    m = Membership(voters=frozenset({"a", "b", "c"}))
    cfg = RaftConfig(election_ticks_min=10, election_ticks_max=20)
    rng = FixedRng(13)
    node = RaftNode("a", rng=rng, config=cfg, initial=bootstrap_state(m))
    assert rng.calls == [(1, 1 << 62), (10, 20)]  # the read id base, the election timeout
    for _ in range(12):
        node.tick()
    assert node.status().role is Role.FOLLOWER
    node.tick()
    assert node.status().role is Role.PRE_CANDIDATE
    assert len(rng.calls) == 3  # the timer was reset (and redrawn) for the new role


def test_heartbeats_every_heartbeat_ticks_to_every_member() -> None:
    cfg = RaftConfig(heartbeat_ticks=3)
    c = Cluster.bootstrap(["n1", "n2", "n3"], learners=["n4"], config=cfg)
    c.elect("n1")
    c.tick("n1", 2)
    assert c.in_flight(type=Heartbeat) == []
    c.tick("n1")
    beats = c.in_flight(type=Heartbeat)
    assert sorted(m.dst for m in beats) == ["n2", "n3", "n4"]
    st = c.status("n1")
    match = {p.id: p.match for p in st.peers}
    assert all(m.commit == min(st.commit, match[m.dst]) for m in beats)


def test_restart_state_validation() -> None:
    from univrs.raft import HardState, InitialState
    from univrs.raft.messages import Entry

    m = Membership(voters=frozenset({"a"}))
    ents = (Entry(term=1, index=1), Entry(term=1, index=2))
    # Applied beyond the saved commit: commit follows (those entries were committed).
    hs = HardState(term=1, commit=1)
    init = InitialState(hard_state=hs, entries=ents, membership=m, applied=2)
    node = RaftNode("a", rng=FixedRng(10), initial=init)
    st = node.status()
    assert (st.commit, st.applied, st.persisted) == (2, 2, 2)
    assert not node.has_ready() or node.ready().committed == ()
    with pytest.raises(ValueError):
        RaftNode("a", rng=FixedRng(10), initial=InitialState(entries=ents, membership=m, applied=3))
    with pytest.raises(ValueError):
        bad = InitialState(hard_state=HardState(term=1, commit=5), entries=ents, membership=m)
        RaftNode("a", rng=FixedRng(10), initial=bad)


def test_new_leadership_starts_a_fresh_read_round() -> None:
    lr = LeaderReads()
    r, new = lr.round_for_new_read()
    lr.reset_acks()
    r2, new2 = lr.round_for_new_read()
    assert new and new2 and r2 == r + 1
