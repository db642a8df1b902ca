"""Membership: CONFIG entries take effect when appended, revert on truncation, one at a time."""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import pytest
from harness import Cluster

from univrs.errors import ProposalDropped
from univrs.raft import (
    AppendEntries,
    Entry,
    EntryKind,
    HardState,
    InitialState,
    Membership,
    RaftConfig,
    RaftNode,
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


class _TracksOnlyItsConfiguration(RaftNode):
    """A new leader that sends the log only to its configuration's members (the old core)."""

    def _tracked_at_election(self) -> frozenset[str]:
        return self._configs.current.members


def pending_removal(removed: str, *, old: bool) -> Cluster:
    """n1..n3, each log holding the committed bootstrap and an uncommitted removal of
    ``removed`` at index 2; ``old``: every node runs ``_TracksOnlyItsConfiguration``."""
    c0 = members({"n1", "n2", "n3"})
    log = (config_entry(c0, 1, 1), config_entry(members(c0.voters - {removed}), 2, 2))
    classes: dict[str, type[RaftNode]] = (
        dict.fromkeys(c0.voters, _TracksOnlyItsConfiguration) if old else {}
    )
    return Cluster(
        {
            n: InitialState(hard_state=HardState(term=2, commit=1), entries=log, membership=c0)
            for n in c0.voters
        },
        classes=classes,
    )


def test_a_new_leader_sends_the_log_to_a_member_its_uncommitted_change_removes() -> None:
    # n1 and n2 use {n1, n2}: the removal of n3 (index 2) is not committed. n1, elected by n2,
    # still sends n3 the log until the removal commits and a heartbeat told n3 so, as the
    # leader that appended the removal does (_leader_config_change): n3 learns its removal is
    # final and stops campaigning. The old core left n3 out: it heard no leader, never learned
    # the commit, and campaigned for ever.
    for old in (False, True):
        c = pending_removal("n3", old=old)
        c.elect("n1")
        c.tick_all(30, deliver=True)
        assert c.status("n1").commit >= 3  # its no-op: the removal is committed
        n3 = c.status("n3")
        if old:
            assert n3.commit == 1 and n3.leader is None  # never heard from n1
            assert c.sent("n1", AppendEntries) and all(
                m.dst == "n2" for m in c.sent("n1", AppendEntries)
            )
            continue
        assert n3.commit >= 2 and n3.role is Role.LEARNER  # its removal, committed
        assert "n3" not in {p.id for p in c.status("n1").peers}  # told, then forgotten
        term = c.status("n1").term
        c.tick_all(100, deliver=True)
        assert c.leader() == "n1" and c.status("n1").term == term


@pytest.mark.parametrize("check_quorum", [False, True])
def test_plaintext_member_behind_the_leaders_addition_catches_up_through_the_removed_member(
    check_quorum: bool,
) -> None:
    # The shape of simulator seed 40194 (3 nodes, plaintext). Committed: {n2, n3, n4} (n4
    # added, n1 removed, index 3); n2 and n4 hold n2's removal (index 4, uncommitted), so they
    # use {n3, n4}. n3 holds only the bootstrap {n1, n2, n3}; n1 is gone. n4 needs n3's vote
    # and gets it (a leaderless member judges a stranger's vote request by the election
    # rules), but n3 refuses n4's appends: without TLS it hears an unlisted leader only when
    # a member it lists vouches for it, and n2, the only one alive, followed no leader, since
    # n4 sent the member its change removes nothing. The old core stays there for good. Now
    # n4 sends n2 the log, and n3 catches up one of two ways: n2 follows n4 and rejects n3's
    # pre-vote naming n4, the vouch (n4 leads on: without CheckQuorum); or n4 loses its quorum
    # by CheckQuorum first, and n2, which holds n4's log and is a voter of the committed
    # configuration, wins n3's and n4's votes and leads n3, which lists it. Either way the
    # removal commits.
    plaintext = RaftConfig(unlisted_leaders=False, check_quorum=check_quorum)
    c0 = members({"n1", "n2", "n3"})
    added = members({"n1", "n2", "n3", "n4"})
    committed = members({"n2", "n3", "n4"})
    log = (
        config_entry(c0, 1, 1),
        config_entry(added, 2, 2),
        config_entry(committed, 3, 2),
        config_entry(members({"n3", "n4"}), 4, 2),
    )
    for old in (False, True):
        init = {
            "n1": InitialState(hard_state=HardState(term=2, commit=1), entries=log[:1]),
            "n2": InitialState(hard_state=HardState(term=2, commit=3), entries=log),
            "n3": InitialState(hard_state=HardState(term=2, commit=1), entries=log[:1]),
            "n4": InitialState(hard_state=HardState(term=2, commit=3), entries=log),
        }
        classes: dict[str, type[RaftNode]] = (
            dict.fromkeys(init, _TracksOnlyItsConfiguration) if old else {}
        )
        c = Cluster(init, config=plaintext, classes=classes)
        c.crash("n1")
        c.elect("n4")
        for _ in range(300):
            c.tick_all(deliver=True)
            if all(c.status(n).commit >= 5 for n in ("n2", "n3", "n4")):
                break
        n3 = c.status("n3")
        assert dict(n3.refused).get("stranger", 0) > 0  # n4's appends, at first at least
        if old:
            assert n3.commit == 1 and n3.membership == c0  # behind for good
            continue
        assert n3.commit >= 5 and n3.membership == members({"n3", "n4"})
        assert c.role("n2") is Role.LEARNER  # its removal committed
        if not check_quorum:
            assert c.leaders == {3: "n4"} and n3.leader == "n4"  # the vouch
        else:
            assert c.leaders[4] == "n2"
