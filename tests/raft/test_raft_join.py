"""Membership changes as the runtime drives them: join as a learner, catch up (through a
snapshot), promote when the caller decides, remove a follower, remove the leader."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from harness import Cluster

from univrs.errors import ProposalDropped
from univrs.raft import (
    InitialState,
    InstallSnapshot,
    Membership,
    PeerStatus,
    RaftConfig,
    RaftNode,
    Role,
    TimeoutNow,
    bootstrap_state,
)

CFG = RaftConfig(snapshot_chunk_bytes=128, snapshot_window=2)
ADDRS = (("n1", "10.0.0.1:7000"), ("n2", "10.0.0.2:7000"), ("n3", "10.0.0.3:7000"))
M3 = Membership(voters=frozenset({"n1", "n2", "n3"}), addresses=ADDRS)


def cluster(*spares: str, classes: dict[str, type[RaftNode]] | None = None) -> Cluster:
    """n1..n3 bootstrapped with n1 leading; spares start empty (no membership), like a node
    started on an empty data dir waiting to be joined."""
    init = {n: bootstrap_state(M3) for n in M3.voters}
    init.update({s: InitialState() for s in spares})
    c = Cluster(init, config=CFG, classes=classes)
    c.elect("n1")
    c.tick_all(2, deliver=True)
    return c


def peer(c: Cluster, leader: str, nid: str) -> PeerStatus:
    (p,) = [p for p in c.status(leader).peers if p.id == nid]
    return p


def with_learner(m: Membership, nid: str, address: str) -> Membership:
    return Membership(
        voters=m.voters,
        learners=m.learners | {nid},
        addresses=tuple(sorted({*m.addresses, (nid, address)})),
    )


def promoted(m: Membership, nid: str) -> Membership:
    return Membership(voters=m.voters | {nid}, learners=m.learners - {nid}, addresses=m.addresses)


def removed(m: Membership, nid: str) -> Membership:
    return Membership(
        voters=m.voters - {nid},
        learners=m.learners - {nid},
        addresses=tuple(p for p in m.addresses if p[0] != nid),
    )


def settle(c: Cluster, done: Callable[[], bool], rounds: int = 200) -> None:
    """Tick and deliver until ``done()`` (bounded)."""
    for _ in range(rounds):
        if done():
            return
        c.tick_all(deliver=True)
    assert done(), c.transcript[-5:]


def test_learner_joins_catches_up_through_a_snapshot_and_is_promoted() -> None:
    c = cluster("n4")
    c.isolate("n4")  # it cannot be reached yet
    for i in range(40):
        c.propose("n1", f"w{i}".encode())
    c.tick_all(2, deliver=True)
    # Add it as a learner (with its address), write more, snapshot: the configuration with
    # the learner is inside the snapshot.
    m4 = with_learner(M3, "n4", "10.0.0.4:7000")
    _, cfg_index = c.nodes["n1"].propose_membership(m4)
    c.process("n1")
    c.propose("n1", b"more")
    c.tick_all(2, deliver=True)
    c.snapshot("n1")
    snap_index = c.status("n1").snapshot_index
    assert snap_index > cfg_index
    # The caller watches the learner's progress in the leader's status.
    p = peer(c, "n1", "n4")
    assert not p.voter and p.match == 0
    c.heal()
    settle(c, lambda: peer(c, "n1", "n4").match == c.status("n1").last_index)
    assert [m.index for m in c.installed["n4"]] == [snap_index]
    assert c.status("n4").membership == m4  # from the snapshot's meta
    assert c.role("n4") is Role.LEARNER and c.applied_data("n4") == c.applied_data("n1")
    assert len(c.sent("n1", InstallSnapshot)) > 1  # several chunks
    # The caller decides it is close enough: promote.
    c.nodes["n1"].propose_membership(promoted(m4, "n4"))
    c.process("n1")
    settle(c, lambda: c.role("n4") is Role.FOLLOWER)
    assert peer(c, "n1", "n4").voter
    c.propose("n1", b"as voter")
    settle(c, lambda: c.applied_data("n4")[-1:] == [b"as voter"])


def test_a_learner_never_counts_toward_quorum() -> None:
    # Two learners and the leader would be a majority of five members, not of three voters.
    c = cluster("n4", "n5")
    c.nodes["n1"].propose_membership(with_learner(with_learner(M3, "n4", "a"), "n5", "b"))
    c.process("n1")
    c.tick_all(3, deliver=True)
    c.partition({"n1", "n4", "n5"}, {"n2", "n3"})
    _, idx = c.propose("n1", b"x")
    c.stabilize()
    assert peer(c, "n1", "n4").match >= idx and peer(c, "n1", "n5").match >= idx
    assert c.status("n1").commit < idx  # the leader alone is no quorum of 3 voters
    c.tick_all(CFG.election_ticks_min * 2 + 1, deliver=True)
    assert c.role("n1") is not Role.LEADER  # CheckQuorum does not count the learner either
    c.heal()
    settle(c, lambda: c.leader() is not None and c.status("n5").applied >= idx)


def test_remove_a_follower() -> None:
    c = cluster()
    _, idx = c.nodes["n1"].propose_membership(removed(M3, "n3"))
    c.process("n1")
    settle(
        c, lambda: c.status("n1").commit >= idx and "n3" not in [p.id for p in c.status("n1").peers]
    )
    assert c.role("n3") is Role.LEARNER  # it learnt of its removal and never campaigns
    c.isolate("n3")
    _, w = c.propose("n1", b"two voters")
    c.tick_all(2, deliver=True)
    assert c.status("n1").commit >= w and c.applied_data("n2")[-1] == b"two voters"
    c.tick_all(3 * CFG.election_ticks_max, deliver=True)
    assert c.leader() == "n1"


def test_a_removed_follower_that_misses_the_commit_round_still_learns_it() -> None:
    # n3 hears nothing while n1 and n2 commit its removal and the next heartbeat round goes
    # out (that round tells it a commit below the removing entry, and it is lost). The leader
    # used to forget n3 right then, so n3 never learned its removal was final.
    c = cluster()
    c.cut("n1", "n3")
    _, idx = c.nodes["n1"].propose_membership(removed(M3, "n3"))
    c.process("n1")
    settle(c, lambda: c.status("n1").commit >= idx)
    c.tick_all(CFG.heartbeat_ticks, deliver=True)  # a heartbeat round after the commit
    assert c.status("n3").commit < idx
    c.heal()
    settle(c, lambda: "n3" not in [p.id for p in c.status("n1").peers])
    assert c.status("n3").commit >= idx
    assert c.role("n3") is Role.LEARNER  # it learnt of its removal and never campaigns


def test_a_removed_member_that_never_answers_is_forgotten_after_a_bound() -> None:
    c = cluster()
    c.isolate("n3")
    _, idx = c.nodes["n1"].propose_membership(removed(M3, "n3"))
    c.process("n1")
    settle(c, lambda: c.status("n1").commit >= idx)
    settle(c, lambda: "n3" not in [p.id for p in c.status("n1").peers], rounds=4 * 20 + 10)


def test_remove_a_learner() -> None:
    c = cluster("n4")
    m4 = with_learner(M3, "n4", "a")
    c.nodes["n1"].propose_membership(m4)
    c.process("n1")
    c.tick_all(3, deliver=True)
    _, idx = c.nodes["n1"].propose_membership(removed(m4, "n4"))
    c.process("n1")
    settle(c, lambda: "n4" not in [p.id for p in c.status("n1").peers])
    assert c.status("n1").membership == M3 and c.status("n1").commit >= idx


@pytest.mark.parametrize("write_during", [False, True])
def test_removed_leader_steps_down_after_commit_and_hands_over_at_once(
    write_during: bool,
) -> None:
    # With a write after the change, no voter holds the leader's whole log when the change
    # commits: the leader first catches the best one up (as in a leader transfer).
    c = cluster()
    c.propose("n1", b"before")
    c.tick_all(2, deliver=True)
    _, idx = c.nodes["n1"].propose_membership(removed(M3, "n1"))
    c.process("n1")
    assert c.role("n1") is Role.LEADER  # still leads until the change commits
    expected = [b"before"]
    if write_during:
        c.propose("n1", b"during")  # and still takes writes
        expected.append(b"during")
    c.stabilize()  # no ticks: the handover needs no election timeout
    assert c.status("n1").commit >= idx and c.role("n1") is Role.LEARNER
    (timeout_now,) = c.sent("n1", TimeoutNow)
    new = timeout_now.dst
    assert new in ("n2", "n3") and c.leader() == new
    c.propose(new, b"after")
    c.tick_all(2, deliver=True)
    for n in ("n2", "n3"):
        assert c.applied_data(n)[-len(expected) - 1 :] == [*expected, b"after"], n
    c.tick_all(3 * CFG.election_ticks_max, deliver=True)
    assert c.leader() == new and c.role("n1") is Role.LEARNER


class TwoChangesAtOnce(RaftNode):
    """The membership mutant: lets a second change in while the first is uncommitted."""

    def _max_inflight_config_changes(self) -> int:
        return 2


def test_one_change_at_a_time_is_what_the_hook_enforces() -> None:
    for cls, refused in ((RaftNode, True), (TwoChangesAtOnce, False)):
        c = cluster("n4", "n5", classes={"n1": cls})
        c.isolate("n1")  # nothing commits
        m4 = with_learner(M3, "n4", "a")
        c.nodes["n1"].propose_membership(m4)
        if refused:
            with pytest.raises(ProposalDropped, match=r"previous one .* is not committed yet"):
                c.nodes["n1"].propose_membership(with_learner(m4, "n5", "b"))
        else:
            c.nodes["n1"].propose_membership(with_learner(m4, "n5", "b"))
