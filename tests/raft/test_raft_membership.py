"""Membership: CONFIG entries take effect when appended, revert on truncation, one at a time."""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import pytest
from harness import Cluster

from univrs.errors import ProposalDropped
from univrs.raft import (
    Entry,
    EntryKind,
    HardState,
    InitialState,
    Membership,
    RaftConfig,
    Role,
    bootstrap_state,
    decode_membership,
    encode_membership,
)

M3 = Membership(voters=frozenset({"n1", "n2", "n3"}))


def cluster_with_spare(*spares: str, config: RaftConfig | None = None) -> Cluster:
    """n1..n3 bootstrapped; spares start empty, waiting to be joined."""
    init = {n: bootstrap_state(M3) for n in M3.voters}
    init.update({s: InitialState() for s in spares})
    c = Cluster(init, config=config)
    c.elect("n1")
    c.tick_all(2, deliver=True)
    return c


def members(voters: AbstractSet[str], learners: AbstractSet[str] = frozenset()) -> Membership:
    return Membership(voters=frozenset(voters), learners=frozenset(learners))


def test_bootstrap_state_is_identical_everywhere() -> None:
    st = bootstrap_state(M3)
    assert st.hard_state.term == 1
    (entry,) = st.entries
    assert (entry.index, entry.term, entry.kind) == (1, 1, EntryKind.CONFIG)
    assert decode_membership(entry.data) == M3
    assert bootstrap_state(M3) == st


def test_add_learner_then_promote_it() -> None:
    c = cluster_with_spare("n4")
    assert c.role("n4") is Role.LEARNER and c.status("n4").membership.voters == frozenset()
    _, idx = c.nodes["n1"].propose_membership(members({"n1", "n2", "n3"}, {"n4"}))
    c.process("n1")
    # In effect on the leader as soon as appended: it replicates to n4 already.
    assert "n4" in [p.id for p in c.status("n1").peers]
    c.tick_all(3, deliver=True)
    assert c.status("n4").membership.learners == {"n4"}
    assert c.status("n4").commit >= idx and c.role("n4") is Role.LEARNER
    c.nodes["n1"].propose_membership(members({"n1", "n2", "n3", "n4"}))
    c.process("n1")
    c.tick_all(3, deliver=True)
    assert c.role("n4") is Role.FOLLOWER
    # Four voters: commit needs three of them.
    c.partition({"n1", "n2"}, {"n3", "n4"})
    c.propose("n1", b"x")
    c.stabilize()
    assert c.status("n1").commit < c.status("n1").last_index
    c.heal()
    c.tick_all(2, deliver=True)
    assert c.applied_data("n4") == [b"x"]


def test_one_uncommitted_configuration_at_a_time() -> None:
    c = cluster_with_spare("n4", "n5")
    c.isolate("n2")
    c.isolate("n3")  # nothing commits
    c.nodes["n1"].propose_membership(members({"n1", "n2", "n3"}, {"n4"}))
    with pytest.raises(ProposalDropped, match="not committed"):
        c.nodes["n1"].propose_membership(members({"n1", "n2", "n3"}, {"n4", "n5"}))
    c.heal()
    c.process("n1")
    c.tick_all(3, deliver=True)
    c.nodes["n1"].propose_membership(members({"n1", "n2", "n3"}, {"n4", "n5"}))  # now fine


def test_more_than_one_voter_change_is_refused() -> None:
    c = cluster_with_spare("n4", "n5")
    with pytest.raises(ProposalDropped, match="one voter"):
        c.nodes["n1"].propose_membership(members({"n1", "n2", "n3", "n4", "n5"}))
    with pytest.raises(ProposalDropped, match="no voter"):
        c.nodes["n1"].propose_membership(members(set()))


def test_configuration_reverts_when_its_entry_is_truncated() -> None:
    voters = {"n1", "n2", "n3", "n4", "n5"}
    c = Cluster.bootstrap(sorted(voters), config=RaftConfig(check_quorum=False))
    c.elect("n1")
    c.tick_all(2, deliver=True)
    c.partition({"n1", "n2"}, {"n3", "n4", "n5"})
    c.nodes["n1"].propose_membership(members(voters, {"n6"}))
    c.process("n1")
    c.stabilize()
    assert c.status("n2").membership.learners == {"n6"}  # appended: in effect, uncommitted
    c.tick_all(RaftConfig().election_ticks_max * 2, deliver=True)
    new = next(n for n in ["n3", "n4", "n5"] if c.role(n) is Role.LEADER)
    c.propose(new, b"y")
    c.heal()
    c.tick_all(3, deliver=True)
    for n in sorted(voters):
        assert c.status(n).membership == members(voters), n  # the learner entry was undone
        assert c.applied_data(n) == [b"y"], n


def test_removed_leader_steps_down_once_the_change_commits() -> None:
    c = cluster_with_spare()
    c.hold_disk("n1")  # the leader no longer counts itself anyway
    _, idx = c.nodes["n1"].propose_membership(members({"n2", "n3"}))
    c.process("n1")
    assert c.role("n1") is Role.LEADER  # still leads until the change commits
    c.stabilize()
    assert c.status("n1").commit >= idx  # committed by n2 and n3 alone
    assert c.role("n1") is Role.LEARNER and c.status("n1").leader is None
    c.release_disk("n1")
    for _ in range(100):
        c.tick_all(deliver=True)
        if c.leader() in ("n2", "n3"):
            break
    assert c.leader() in ("n2", "n3")
    c.tick_all(50, deliver=True)
    assert c.role("n1") is Role.LEARNER  # never campaigns again


def test_removed_node_does_not_disrupt() -> None:
    c = cluster_with_spare()
    c.nodes["n1"].propose_membership(members({"n1", "n2"}))
    c.process("n1")
    c.tick_all(3, deliver=True)
    assert c.role("n3") is Role.LEARNER
    term = c.status("n1").term
    c.tick_all(100, deliver=True)
    assert c.leader() == "n1" and c.status("n1").term == term


def config_entry(m: Membership, index: int, term: int) -> Entry:
    return Entry(term=term, index=index, kind=EntryKind.CONFIG, data=encode_membership(m))


def test_uncommitted_demotions_do_not_deadlock_elections() -> None:
    # Found by the randomized test: n1 holds the newest log, but its last entries demote it
    # (uncommitted); n3 was demoted by an earlier leader (uncommitted, another branch); n2 is
    # behind everyone. If only voters of their *latest* configuration could campaign, n1 and
    # n3 never would, and n2 can never win. A voter of the latest *committed* configuration
    # may campaign too: n1 wins, commits its demotion, and steps down.
    c0 = members({"n1", "n2", "n3"})
    demote_n3 = members({"n1", "n2"}, {"n3"})
    demote_n1 = members({"n2", "n3"}, {"n1"})
    base = config_entry(c0, 1, 1)
    logs = {
        "n1": (base, Entry(term=3, index=2), config_entry(demote_n1, 3, 3), Entry(term=3, index=4)),
        "n2": (base,),
        "n3": (base, config_entry(demote_n3, 2, 2)),
    }
    c = Cluster(
        {
            n: InitialState(hard_state=HardState(term=3, commit=1), entries=e, membership=c0)
            for n, e in logs.items()
        }
    )
    assert c.role("n1") is Role.FOLLOWER  # a voter of the committed configuration
    for _ in range(300):
        c.tick_all(deliver=True)
        if c.leader() in ("n2", "n3") and all(c.status(n).commit >= 3 for n in logs):
            break
    assert c.leader() in ("n2", "n3")
    assert c.status("n1").membership == demote_n1
    assert c.role("n1") is Role.LEARNER  # its demotion is committed now
    assert "n1" in c.leaders.values()  # it did lead, to commit the change
