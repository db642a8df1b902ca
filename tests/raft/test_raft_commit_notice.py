"""How followers learn the commit index: messages per write (issue 14, round 7).

Every AppendEntries carries the leader's commit index, so with ``lazy_commit_notice_bytes`` (what
nodes run) the leader announces a small commit on its own only to a follower that nothing else
will tell: at the next tick, or at once to a follower waiting to serve a read the leader
answered. A large commit is told at once. The old leader sent every follower a commit-only
Heartbeat at every commit (and each follower answered it): one more message each way per
follower per write when clients write one at a time, and under load each answer to one of them
drew an empty AppendEntries (``_on_heartbeat_response``: the follower's match is below the
leader's last index while appends are in flight) and its answer. ``EagerCommitNotice`` is that
old behaviour (``lazy_commit_notice_bytes`` 0, kept as the core's default for its transcripts
and the simulator's pinned seeds); the counts below fail on it.
"""

from __future__ import annotations

import collections

import attrs
from changed_core import led_by_a_class
from harness import Cluster

from univrs.raft import AppendEntries, Heartbeat, HeartbeatResponse, RaftConfig, RaftNode
from univrs.raft.base import NodeBase
from univrs.raft.messages import COMMIT_NOTICE_CTX, NodeId

# A heartbeat every 3 ticks, so a tick that is not a heartbeat tick is visible; the commit
# notices nodes run (``NodeConfig.raft_config``).
CFG = RaftConfig(
    heartbeat_ticks=3, election_ticks_min=6, election_ticks_max=10, lazy_commit_notice_bytes=1024
)
EAGER = attrs.evolve(CFG, lazy_commit_notice_bytes=0)
NODES = ("n1", "n2", "n3")


class NoReadNotice(RaftNode):
    """A leader that does not tell a follower whose read it answered the commit index."""

    def _confirmed_read(self, ctx: int, requester: NodeId | None, index: int) -> None:
        NodeBase._confirmed_read(self, ctx, requester, index)


def cluster(leader_cls: type[RaftNode] = RaftNode, config: RaftConfig = CFG) -> Cluster:
    return led_by_a_class(NODES, config, leader_cls)


def sent_per_write(c: Cluster, writes: int, run: object) -> dict[str, collections.Counter[str]]:
    """Messages each node sent while ``run()`` did ``writes`` writes, by kind."""

    def counts() -> dict[str, collections.Counter[str]]:
        out: dict[str, collections.Counter[str]] = {n: collections.Counter() for n in NODES}
        for n in NODES:
            for rd in c.readies[n]:
                for m in (*rd.messages, *rd.messages_after_persist):
                    kind = type(m).__name__
                    if isinstance(m, AppendEntries) and not m.entries:
                        kind += "(empty)"
                    out[n][kind] += 1
        return out

    before = counts()
    assert callable(run)
    run()
    after = counts()
    for n in NODES:
        after[n].subtract(before[n])
        after[n] = collections.Counter({k: v for k, v in after[n].items() if v})
    return after


def one_at_a_time(c: Cluster, writes: int) -> dict[str, collections.Counter[str]]:
    def run() -> None:
        for i in range(writes):
            c.propose("n1", b"w%d" % i)
            c.stabilize()

    return sent_per_write(c, writes, run)


def pipelined(c: Cluster, writes: int) -> dict[str, collections.Counter[str]]:
    """Four proposals per round, each round delivering only what was in flight (appends and
    acks overlap, as under load)."""

    def run() -> None:
        for i in range(writes // 4):
            c.propose_many("n1", [b"p%d" % i] * 4)
            c.deliver()
        c.stabilize()

    return sent_per_write(c, writes, run)


def test_one_write_at_a_time_costs_one_append_and_one_ack_per_follower() -> None:
    c = cluster()
    sent = one_at_a_time(c, 20)
    assert sent["n1"] == {"AppendEntries": 40}
    assert sent["n2"] == sent["n3"] == {"AppendEntriesResponse": 20}
    # The followers know every commit but the last, which the next tick tells.
    assert c.status("n2").commit == c.status("n1").commit - 1
    c.tick("n1")
    c.stabilize()
    for n in NODES:
        assert c.applied_data(n)[-1] == b"w19", n


def test_the_count_fails_on_a_commit_notice_per_commit() -> None:
    sent = one_at_a_time(cluster(config=EAGER), 20)
    assert sent["n1"] == {"AppendEntries": 40, "Heartbeat": 40}
    # Eager notices are answered, as before session 15 (``_commit_notice_ctx``).
    assert sent["n2"] == {"AppendEntriesResponse": 20, "HeartbeatResponse": 20}


def large_batches(c: Cluster, rounds: int) -> dict[str, collections.Counter[str]]:
    """Batches whose commit is told at once (larger than ``lazy_commit_notice_bytes``), the next
    batch proposed while the notices are on their way, as under load at 64 clients."""

    def run() -> None:
        for i in range(rounds):
            c.propose_many("n1", [b"%d" % i * 300] * 4)
            c.deliver()  # the appends
            c.deliver()  # the acks: n1 commits and sends its notices
        c.stabilize()

    return sent_per_write(c, rounds, run)


def test_a_commit_notice_is_not_answered() -> None:
    # Each batch's commit notice used to come back as a HeartbeatResponse, and its answer,
    # arriving while the next batch was in flight (match below the last index), drew an empty
    # AppendEntries and its answer: per follower per batch three messages more than the
    # append and its ack, on every node's links (issue 14, docs/performance.md, "Round 15
    # (s15-repl)").
    c = cluster()
    sent = large_batches(c, 20)
    assert sent["n1"]["Heartbeat"] >= 2 * 19, sent["n1"]  # told at once
    assert "AppendEntries(empty)" not in sent["n1"], sent["n1"]
    assert sent["n2"] == sent["n3"] == {"AppendEntriesResponse": 20}, sent
    for n in ("n2", "n3"):  # every commit told: the followers applied every batch
        assert c.status(n).commit == c.status("n1").commit, n
        assert len(c.applied_data(n)) == len(c.applied_data("n1")), n
    # A notice carries the sentinel; the periodic heartbeat does not, and is answered.
    c.propose_many("n1", [b"z" * 300] * 4)
    c.deliver()
    c.deliver()
    assert {m.ctx for m in c.in_flight(type=Heartbeat)} == {COMMIT_NOTICE_CTX}
    c.stabilize()
    tick_to_a_heartbeat_answered(c)


def tick_to_a_heartbeat_answered(c: Cluster) -> None:
    for _ in range(CFG.heartbeat_ticks):
        c.tick("n1")
        beats = c.in_flight(src="n1", type=Heartbeat)
        c.deliver()
        if beats:
            answers = c.in_flight(type=HeartbeatResponse)
            assert sorted(m.src for m in answers) == ["n2", "n3"]
            assert all(m.ctx != COMMIT_NOTICE_CTX for m in answers)
            c.stabilize()
            return
    raise AssertionError("no heartbeat in a heartbeat interval")


def test_an_older_followers_answer_to_a_notice_confirms_no_read() -> None:
    # An older follower answers a notice with HeartbeatResponse(ctx=COMMIT_NOTICE_CTX); the
    # leader must not take it for an acknowledgement of a ReadIndex round (none reaches it).
    c = cluster()
    c.read_index("n1", 5)
    assert c.reads["n1"] == []
    beats = c.in_flight(src="n1", type=Heartbeat)
    assert len(beats) == 2 and all(0 < m.ctx < COMMIT_NOTICE_CTX for m in beats)
    c.drop(src="n1")  # the round's heartbeats are lost
    term = c.status("n1").term
    for f in ("n2", "n3"):
        c.network.append(HeartbeatResponse(term=term, src=f, dst="n1", ctx=COMMIT_NOTICE_CTX))
    c.stabilize()
    assert c.reads["n1"] == []
    c.tick("n1", CFG.heartbeat_ticks)  # the next round's heartbeats are answered: confirmed
    c.stabilize()
    assert [r.ctx for r in c.reads["n1"]] == [5]


def test_pipelined_writes_send_no_empty_appends_and_no_commit_heartbeats() -> None:
    c = cluster()
    sent = pipelined(c, 200)
    assert set(sent["n1"]) == {"AppendEntries"}, sent["n1"]
    assert sent["n1"]["AppendEntries"] == 2 * 50  # one per follower per round of four
    assert sent["n2"] == sent["n3"] == {"AppendEntriesResponse": 50}
    old = pipelined(cluster(config=EAGER), 200)
    assert old["n1"]["Heartbeat"] > 0 and old["n1"]["AppendEntries(empty)"] > 0, old["n1"]


def test_an_idle_follower_learns_a_commit_at_the_next_tick_not_the_next_heartbeat() -> None:
    c = cluster()  # its tick leaves the heartbeat 2 ticks away
    _, index = c.propose("n1", b"x")
    c.stabilize()
    assert c.status("n1").commit == index
    assert c.status("n2").commit == c.status("n3").commit == index - 1
    c.tick("n1")
    # A commit notice, though no heartbeat is due.
    notice = (index, COMMIT_NOTICE_CTX)
    assert [(m.commit, m.ctx) for m in c.in_flight(type=Heartbeat)] == [notice, notice]
    c.stabilize()
    for n in ("n2", "n3"):
        assert c.status(n).commit == index
        assert c.applied_data(n)[-1] == b"x"


def follower_read_after_write(leader_cls: type[RaftNode], *, lagging: bool) -> Cluster:
    """n2 reads right after a write it does not know committed (``lagging``: n2 does not even
    hold the write when the leader answers its read). No tick happens."""
    c = cluster(leader_cls)
    _, index = c.propose("n1", b"x")
    if lagging:
        # Everything but the append to n2: n1 and n3 commit x without it.
        while c.deliver(where=lambda m: not (isinstance(m, AppendEntries) and m.dst == "n2")):
            pass
        assert c.status("n2").last_index < index
    else:
        c.stabilize()
    assert c.status("n1").commit == index and c.status("n2").commit < index
    c.read_index("n2", 7)
    c.stabilize()
    return c


def test_a_follower_read_is_served_without_waiting_for_a_tick() -> None:
    for lagging in (False, True):
        c = follower_read_after_write(RaftNode, lagging=lagging)
        assert [(r.ctx, r.index) for r in c.reads["n2"]] == [(7, c.status("n1").commit)]
        assert c.applied_data("n2")[-1] == b"x"
    # The read's heartbeat round tells a follower that holds the write; one that acknowledges
    # the write only later needs the notice that its ack then triggers, or waits for a tick.
    slow = follower_read_after_write(NoReadNotice, lagging=True)
    assert slow.reads["n2"] == []
    slow.tick("n1")
    slow.stabilize()
    assert [r.ctx for r in slow.reads["n2"]] == [7]


def test_a_large_commit_is_told_at_once() -> None:
    # The follower applies it while the leader applies its own copy, not when the next batch
    # arrives (where applying it would delay the follower's acknowledgement of that batch).
    c = cluster()
    _, index = c.propose_many("n1", [b"x" * 600, b"y" * 600])
    c.stabilize()
    for n in ("n2", "n3"):
        assert c.status(n).commit == index + 1, n
    assert c.applied_data("n2")[-2:] == [b"x" * 600, b"y" * 600]


class HeartbeatsWithoutCommit(RaftNode):
    """A leader whose periodic heartbeats carry no commit index (only appends and commit
    notices do): a lost notice is never told again."""

    def _broadcast_heartbeat(self, *, periodic: bool = False) -> None:
        for peer in self._progress:
            self._send(Heartbeat(term=self._term, src=self.id, dst=peer, commit=0, ctx=0))


def tick_to_a_heartbeat(c: Cluster) -> None:
    """Tick the idle leader until it broadcasts its periodic heartbeat (an idle leader sends no
    other Heartbeat), so that its next one is ``heartbeat_ticks`` ticks away."""
    for _ in range(CFG.heartbeat_ticks):
        c.tick("n1")
        sent = c.in_flight(src="n1", type=Heartbeat)
        c.stabilize()
        if sent:
            return
    raise AssertionError("no heartbeat in a heartbeat interval")


def ticks_until_followers_know(c: Cluster, index: int) -> int | None:
    """Tick the leader (its last heartbeat a multiple of ``heartbeat_ticks`` ticks ago) until
    both followers know ``index`` is committed, each tick delivering everything but the
    commit-only notices of the ticks that are no heartbeat tick: every notice is lost, and no
    new entry comes. None if they still do not know after three heartbeat intervals."""
    hb = CFG.heartbeat_ticks
    for t in range(1, 3 * hb + 1):
        c.tick("n1")
        if t % hb:
            c.drop(src="n1", type=Heartbeat)  # the lazy notices of a non-heartbeat tick
        c.stabilize()
        if all(c.status(n).commit >= index for n in ("n2", "n3")):
            return t
    return None


def test_a_follower_learns_a_commit_within_a_heartbeat_interval_when_notices_are_lost() -> None:
    # Lazy notices defer a small commit to the next append or tick; when no append comes and the
    # tick's notice is lost, the periodic heartbeat must carry the commit (min(commit, match)),
    # so a follower learns it within one heartbeat interval, however long no write comes.
    # ``lose_acks``: the acknowledgements of the write were lost too; the heartbeats' answers
    # draw empty appends (``_on_heartbeat_response``), whose answers let the leader commit.
    for lose_acks in (False, True):
        c = cluster()
        tick_to_a_heartbeat(c)
        _, index = c.propose("n1", b"x")
        c.deliver(src="n1", type=AppendEntries)
        if lose_acks:
            c.drop(src="n2")
            c.drop(src="n3")
            assert c.status("n1").commit < index  # nothing acknowledged: n1 does not know either
            c.tick("n1", CFG.heartbeat_ticks)  # its heartbeats draw empty appends, acked
            c.stabilize()
        c.stabilize()
        assert c.status("n1").commit == index
        assert c.status("n2").commit == c.status("n3").commit == index - 1
        took = ticks_until_followers_know(c, index)
        assert took is not None and took <= CFG.heartbeat_ticks, (lose_acks, took)
        for n in ("n2", "n3"):
            assert c.applied_data(n)[-1] == b"x", n
    # A leader whose heartbeats carry no commit index leaves them behind for good.
    c = cluster(HeartbeatsWithoutCommit)
    tick_to_a_heartbeat(c)
    _, index = c.propose("n1", b"x")
    c.stabilize()
    assert c.status("n2").commit == index - 1
    assert ticks_until_followers_know(c, index) is None
