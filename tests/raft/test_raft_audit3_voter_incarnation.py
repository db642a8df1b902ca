"""s14-audit: a change that keeps a voter's id but binds it to another incarnation replaces a
voter: the core must count it as a removal and an addition (dissertation 4.2's single-server
rule is about members, and a member is an id *and* an incarnation)."""

from __future__ import annotations

import attrs
import pytest
from harness import Cluster

from univrs.errors import ProposalDropped
from univrs.raft import Membership, bootstrap_state
from univrs.raft.membership import voter_changes

M3 = Membership(voters=frozenset({"n1", "n2", "n3"}))
BOUND = attrs.evolve(M3, incarnations=(("n1", "i1"), ("n2", "i2"), ("n3", "i3")))


def _leader_with(membership: Membership) -> Cluster:
    c = Cluster({n: bootstrap_state(M3) for n in M3.voters})
    c.elect("n1")
    c.tick_all(2, deliver=True)
    if membership != M3:
        c.nodes["n1"].propose_membership(membership)
        c.tick_all(3, deliver=True)
        status = c.status("n1")
        assert status.membership == membership and status.commit == status.last_index
    return c


def test_binding_unbound_voters_changes_no_voter() -> None:
    # The bootstrap's binding change (runtime/membership.py ``bind_incarnations``): every
    # unbound voter bound in one change, as before.
    assert voter_changes(M3, BOUND) == 0
    c = _leader_with(M3)
    c.nodes["n1"].propose_membership(BOUND)


def test_rebinding_a_voter_in_place_is_two_changes() -> None:
    rebound = attrs.evolve(BOUND, incarnations=(("n1", "i1"), ("n2", "i2"), ("n3", "i3b")))
    assert voter_changes(BOUND, rebound) == 2
    c = _leader_with(BOUND)
    with pytest.raises(ProposalDropped):
        c.nodes["n1"].propose_membership(rebound)


def test_rebinding_a_voter_while_adding_one_is_refused() -> None:
    # Old majorities {n2, n3@i3}; new ones (3 of 4) {n1, n3@i3b, n4}: disjoint when n3's old
    # incarnation still runs (a machine replaced while the old one was only cut off).
    grown = Membership(
        voters=frozenset({"n1", "n2", "n3", "n4"}),
        incarnations=(("n1", "i1"), ("n2", "i2"), ("n3", "i3b"), ("n4", "i4")),
    )
    assert voter_changes(BOUND, grown) == 3
    c = _leader_with(BOUND)
    with pytest.raises(ProposalDropped):
        c.nodes["n1"].propose_membership(grown)


def test_the_replace_path_stays_one_change() -> None:
    # runtime/membership.py ``_replace``: the voter becomes a learner of its new incarnation.
    replaced = Membership(
        voters=frozenset({"n1", "n2"}),
        learners=frozenset({"n3"}),
        incarnations=(("n1", "i1"), ("n2", "i2"), ("n3", "i3b")),
    )
    assert voter_changes(BOUND, replaced) == 1
    c = _leader_with(BOUND)
    c.nodes["n1"].propose_membership(replaced)
