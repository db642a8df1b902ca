"""``RaftNode.append_response_may_wait``: an acknowledgement it says may wait changes nothing
the leader does until its next input (issue 14, round 19: the runtime then leaves it for the
driver's next step, before that step's input, instead of waking the driver for it:
univrs/runtime/step.py ``_may_leave``).

Two halves. Each case where an acknowledgement matters (it commits, frees a full pipeline
with more to send, ends a probe, finishes a leader transfer, is a learner's, makes a commit
notice due, pins its sender) is answered "no" and, stepped, does something; the case it exists
for (the second follower's acknowledgement of a committed write, lazy notices) is answered
"yes". And at every acknowledgement delivered in randomized fault runs (elections, partitions,
crashes, snapshots, a joining member; eager and lazy notices), a "yes" is checked: stepping it
changes neither whether the core has a Ready nor anything of its status but the sender's
progress. A core whose rule always says "yes" fails that check.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import attrs
import harness
import pytest
from harness import Cluster
from test_raft_random import run

from univrs.errors import NotLeader, ProposalDropped
from univrs.raft import RaftConfig, RaftNode
from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    HardState,
    Heartbeat,
    Membership,
    Message,
    TimeoutNow,
)
from univrs.raft.ready import InitialState

LAZY = RaftConfig(lazy_commit_notice_bytes=1024, skip_busy_heartbeats=True)


def _one_write(c: Cluster, data: bytes = b"w") -> list[AppendEntriesResponse]:
    """Propose on n1, deliver its appends, make every disk durable; return the two acks
    (n2's first), not delivered."""
    c.propose("n1", data)
    c.deliver(type=AppendEntries)
    for n in ("n1", "n2", "n3"):
        c.persist(n)
    acks = c.in_flight(dst="n1", type=AppendEntriesResponse)
    assert len(acks) == 2, acks
    return sorted(acks, key=lambda m: m.src)


def _step(c: Cluster, m: Message) -> None:
    c.network.remove(m)
    c._deliver(m)


def test_the_second_ack_of_a_committed_write_may_wait() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=LAZY)
    c.elect("n1")
    first, second = _one_write(c)
    leader = c.nodes["n1"]
    assert not leader.append_response_may_wait(first)  # it commits
    commit = c.status("n1").commit
    _step(c, first)
    assert c.status("n1").commit == commit + 1
    assert leader.append_response_may_wait(second)
    before = c.status("n1")
    leader.step(second)
    assert not leader.has_ready()
    assert c.status("n1").commit == before.commit
    assert [p.match for p in c.status("n1").peers] == [before.last_index] * 2


def test_an_ack_that_commits_matters() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=LAZY)
    c.elect("n1")
    first, _ = _one_write(c)
    assert not c.nodes["n1"].append_response_may_wait(first)
    before = c.status("n1").commit
    _step(c, first)
    assert c.status("n1").commit > before


def test_an_ack_that_frees_a_full_pipeline_with_more_to_send_matters() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=attrs.evolve(LAZY, max_inflight=1))
    c.elect("n1")
    first, second = _one_write(c, b"a")
    _step(c, first)  # commits "a"
    c.propose("n1", b"b")  # n3's window (1) is full with "a": "b" waits for its ack
    assert not c.in_flight(src="n1", dst="n3", type=AppendEntries)
    assert not c.nodes["n1"].append_response_may_wait(second)
    _step(c, second)
    assert c.in_flight(src="n1", dst="n3", type=AppendEntries)


def test_a_probe_answer_matters() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=LAZY)
    c.campaign("n1")
    for _ in range(20):  # the election, with no append delivered: both peers stay probed
        c.deliver(where=lambda m: not isinstance(m, AppendEntries | AppendEntriesResponse))
        for n in ("n1", "n2", "n3"):
            c.persist(n)
    assert c.status("n1").role.value == "leader"
    c.deliver(type=AppendEntries)
    for n in ("n2", "n3"):
        c.persist(n)
    acks = sorted(c.in_flight(dst="n1", type=AppendEntriesResponse), key=lambda m: m.src)
    assert [p.state for p in c.status("n1").peers] == ["probe", "probe"]
    _step(c, acks[0])  # commits the NOOP; n2 replicates
    assert [p.state for p in c.status("n1").peers] == ["replicate", "probe"]
    assert not c.nodes["n1"].append_response_may_wait(acks[1])
    _step(c, acks[1])
    assert [p.state for p in c.status("n1").peers] == ["replicate", "replicate"]


def test_an_ack_that_finishes_a_leader_transfer_matters() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=LAZY)
    c.elect("n1")
    first, second = _one_write(c)
    _step(c, first)
    c.nodes["n1"].transfer_leader("n3")  # n3 is one entry behind: the transfer waits
    c.process("n1")
    assert not c.in_flight(type=TimeoutNow)
    assert not c.nodes["n1"].append_response_may_wait(second)
    _step(c, second)
    assert c.in_flight(src="n1", dst="n3", type=TimeoutNow)


def test_a_learners_ack_matters() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], ["n4"], config=LAZY)
    c.elect("n1")
    c.propose("n1", b"w")
    c.deliver(type=AppendEntries)
    for n in ("n1", "n2", "n3", "n4"):
        c.persist(n)
    acks = {m.src: m for m in c.in_flight(dst="n1", type=AppendEntriesResponse)}
    _step(c, acks["n2"])
    _step(c, acks["n3"])
    # The learner's progress is what its promotion reads (runtime/membership.py ``promote``).
    assert not c.nodes["n1"].append_response_may_wait(acks["n4"])


def test_an_ack_that_makes_a_commit_notice_due_matters() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])  # eager notices (the core's default)
    c.elect("n1")
    first, second = _one_write(c)
    _step(c, first)
    assert not c.nodes["n1"].append_response_may_wait(second)
    _step(c, second)
    assert c.in_flight(src="n1", dst="n3", type=Heartbeat)


def test_an_ack_that_pins_its_sender_matters() -> None:
    # An unbound bootstrap configuration: the first incarnation heard is pinned (a hard state).
    m = Membership(voters=frozenset({"n1", "n2", "n3"}))
    init = InitialState(hard_state=HardState(term=0), membership=m)
    c = Cluster({n: init for n in ("n1", "n2", "n3")}, config=LAZY)
    c.elect("n1")
    first, second = _one_write(c)
    _step(c, first)
    leader = c.nodes["n1"]
    assert leader.append_response_may_wait(second)  # no incarnation attested: no pin
    attested = attrs.evolve(second, sender_incarnation="inc-n3")
    assert not leader.append_response_may_wait(attested)
    leader.step(attested)
    assert leader.has_ready() and dict(c.status("n1").pinned).get("n3") == "inc-n3"


# ---- the rule checked at every acknowledgement of randomized runs ------------------------------


def _checked_deliver(counts: dict[str, int]) -> Any:
    deliver = Cluster._deliver

    def checked(self: Cluster, m: Message) -> None:
        node = self.nodes.get(m.dst)
        live = node is not None and m.dst not in self.crashed and (m.src, m.dst) not in self.blocked
        if not live or not isinstance(m, AppendEntriesResponse):
            deliver(self, m)
            return
        assert node is not None
        may_wait = node.append_response_may_wait(m)
        had_ready, before = node.has_ready(), node.status()
        node.step(m)
        after = node.status()
        if not may_wait:
            counts["matters"] += 1
        else:
            counts["may wait"] += 1
            assert node.has_ready() == had_ready, (m, before)
            others = [p for p in after.peers if p.id != m.src]
            assert others == [p for p in before.peers if p.id != m.src], (m, before)
            assert attrs.evolve(after, peers=()) == attrs.evolve(before, peers=()), m
        self.process(m.dst)

    return checked


def _lazy_runs(seed: int, steps: int = 600) -> None:
    """One client's writes through a 3- or 5-node cluster with lazy notices and skipped
    heartbeats (what nodes run), messages delivered in random order, slow disks, ticks."""
    rng = random.Random(seed)
    nodes = ["n1", "n2", "n3", "n4", "n5"][: rng.choice([3, 5])]
    cfg = attrs.evolve(LAZY, max_inflight=rng.choice([1, 2, 64]), election_ticks_min=8)
    c = Cluster.bootstrap(nodes, config=cfg, seed=seed)
    c.elect("n1")
    for step in range(steps):
        r = rng.random()
        node = rng.choice(nodes)
        if r < 0.1:
            c.hold_disk(node)
        elif r < 0.3:
            c.release_disk(node)
        elif r < 0.45:
            leader = c.leader()
            if leader is not None:
                with contextlib.suppress(ProposalDropped, NotLeader):
                    c.propose(leader, b"w%d" % step)
        elif r < 0.47:
            leader = c.leader()
            if leader is not None:
                with contextlib.suppress(NotLeader):
                    c.nodes[leader].transfer_leader(rng.choice([n for n in nodes if n != leader]))
                c.process(leader)
        elif r < 0.95 and c.network:
            m = c.network.pop(rng.randrange(len(c.network)))
            c._deliver(m)
        else:
            c.tick(node)


def _check_runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"may wait": 0, "matters": 0}
    monkeypatch.setattr(harness.Cluster, "_deliver", _checked_deliver(counts))
    for seed in range(6):
        run(seed, steps=800)
    for seed in range(10):
        _lazy_runs(seed)
    return counts


def test_an_ack_that_may_wait_changes_nothing_until_the_next_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = _check_runs(monkeypatch)
    assert counts["may wait"] > 100 and counts["matters"] > 100, counts


class _AlwaysWaits(RaftNode):
    """A broken rule: every success of our term to us as leader may wait."""

    def _append_success_may_wait(self, msg: AppendEntriesResponse) -> bool:
        return True


def test_a_rule_that_always_says_wait_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "RaftNode", _AlwaysWaits)
    with pytest.raises(AssertionError):
        _check_runs(monkeypatch)
