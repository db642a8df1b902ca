"""Members a configuration binds to no incarnation yet: held to the first incarnation taken.

A bootstrap configuration lists its members unbound until the leader's binding change
(runtime/membership.py ``record_incarnations``). In that window the configuration cannot tell a
member from a forger under its id, nor from a wiped (amnesiac) data dir of it: a leader used
to count acknowledgements, and a candidate votes, under such an id from any incarnation
(docs/security.md). The core now pins the first incarnation it takes a message from under an
unbound member's id (gate.py ``_maybe_pin``) and refuses the id at any other one. Each test
also runs the ``UnboundAnyIncarnation`` mutant (the pin ignored) and shows it takes the forgery.
"""

from __future__ import annotations

import random

import pytest
from senders_helpers import CFG, UNBOUND, ack, settle, vote

from univrs.raft import (
    AppendEntriesResponse,
    HeartbeatResponse,
    Membership,
    Message,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
    Status,
    bootstrap_state,
)
from univrs.raft.senders import listed_sender, sender_refusal
from univrs.sim.forger import FORGED_INCARNATION, Forger
from univrs.sim.mutants import UnboundAnyIncarnation


def candidate(cls: type[RaftNode] = RaftNode) -> RaftNode:
    """n1 of UNBOUND, a candidate of term 2 whose vote requests went out."""
    node = cls("n1", rng=random.Random(1), config=CFG, initial=bootstrap_state(UNBOUND))
    node.campaign()
    settle(node)
    assert node.status().role is Role.CANDIDATE
    return node


def leader(cls: type[RaftNode] = RaftNode) -> RaftNode:
    """n1 of UNBOUND, leader of term 2 with n2's vote (heard at incarnation inc2); its no-op
    (index 2) is durable on n1 and acknowledged by n2 at inc2, so committed."""
    node = candidate(cls)
    node.step(vote("n2", "inc2", granted=True))
    settle(node)
    assert node.status().role is Role.LEADER
    node.step(ack("n2", "inc2", 2))
    settle(node)
    assert node.status().commit == 2
    return node


@pytest.mark.parametrize("forged", ["forged.0", None])
def test_a_leader_counts_an_unbound_members_acks_from_one_incarnation_only(
    forged: str | None,
) -> None:
    # n3 is down: n1 and n2 are the quorum. A forger (or n2's wiped data dir) acknowledges
    # index 3, which n2 itself never received: counted, it commits an entry one copy holds.
    node = leader()
    assert node.status().pinned == (("n2", "inc2"),)
    _, index = node.propose(b"a write")
    settle(node)
    node.step(ack("n2", forged, index))
    settle(node)
    s = node.status()
    assert s.commit == 2
    assert dict(s.refused) == {"incarnation": 1}
    node.step(ack("n2", "inc2", index))  # the member itself: counted
    settle(node)
    assert node.status().commit == index
    # The mutant that ignores the pin commits on the forged acknowledgement.
    mutant = leader(UnboundAnyIncarnation)
    mutant.propose(b"a write")
    settle(mutant)
    mutant.step(ack("n2", forged, index))
    settle(mutant)
    assert mutant.status().commit == index and mutant.status().refused_messages == 0


def test_a_candidate_counts_an_unbound_voters_vote_from_one_incarnation_only() -> None:
    # n2 rejects (heard at inc2: pinned); a granted vote under n2's id from another incarnation
    # (a forger, or n2's wiped data dir, whose empty log grants anyone) must not elect n1.
    node = candidate()
    node.step(vote("n2", "inc2", granted=False))
    settle(node)
    node.step(vote("n2", "inc2.wiped", granted=True))
    settle(node)
    s = node.status()
    assert s.role is not Role.LEADER
    assert dict(s.refused) == {"incarnation": 1}
    mutant = candidate(UnboundAnyIncarnation)
    mutant.step(vote("n3", "inc3", granted=False))  # (the mutant's first answer: n3's)
    mutant.step(vote("n3", "inc3.wiped", granted=True))
    settle(mutant)
    # The mutant ignores the pin but counts one answer per id: n3's rejection stands. Under
    # n2's id, never answered before, the forged vote counts either way (the first incarnation
    # is the one pinned): the window this rule leaves (docs/security.md).
    assert mutant.status().role is Role.CANDIDATE
    mutant2 = candidate(UnboundAnyIncarnation)
    mutant2.step(HeartbeatResponse(term=2, src="n2", dst="n1", sender_incarnation="inc2"))
    mutant2.step(vote("n2", "inc2.wiped", granted=True))
    settle(mutant2)
    assert mutant2.status().role is Role.LEADER
    real = candidate()
    real.step(HeartbeatResponse(term=2, src="n2", dst="n1", sender_incarnation="inc2"))
    real.step(vote("n2", "inc2.wiped", granted=True))
    settle(real)
    assert real.status().role is Role.CANDIDATE
    assert real.status().pinned == (("n2", "inc2"),)


def test_pins_outlive_a_term_and_a_binding_takes_over() -> None:
    # The pin holds for the process, across terms (an amnesiac incarnation of n2 must not
    # vote in the next election either), until a configuration binds the id: then the
    # binding decides (a repaired n2, rebound to its new incarnation, is heard again).
    node = leader()
    node.step(
        RequestVote(
            term=5,
            src="n2",
            dst="n1",
            last_log_index=9,
            last_log_term=4,
            transfer=True,  # (past the leader's lease)
            sender_incarnation="inc2",
        )
    )
    settle(node)  # a higher-term vote request from n2 at inc2: n1 follows, term 5
    assert node.status().term == 5 and node.status().pinned == (("n2", "inc2"),)
    node.campaign()
    settle(node)
    term = node.status().term
    wiped = RequestVoteResponse(
        term=term, src="n2", dst="n1", granted=True, sender_incarnation="inc2.wiped"
    )
    node.step(wiped)
    settle(node)
    assert node.status().role is Role.CANDIDATE  # refused: not elected by an amnesiac vote
    rebound = Membership(voters=UNBOUND.voters, incarnations=(("n2", "inc2.wiped"),))
    assert listed_sender(wiped, current=rebound, committed=rebound, pinned={"n2": "inc2"})
    assert not listed_sender(wiped, current=UNBOUND, committed=UNBOUND, pinned={"n2": "inc2"})
    stale = RequestVoteResponse(
        term=term, src="n2", dst="n1", granted=True, sender_incarnation="inc2"
    )
    assert not listed_sender(stale, current=rebound, committed=rebound, pinned={"n2": "inc2"})


def test_the_rule_with_pins() -> None:
    def refusal(msg: Message, pinned: dict[str, str] | None, m: Membership = UNBOUND) -> str | None:
        return sender_refusal(msg, me="n1", current=m, committed=m, live_leader="n1", pinned=pinned)

    heard = ack("n2", "inc2", 2)
    other = ack("n2", "other", 2)
    none = ack("n2", None, 2)
    assert refusal(heard, None) is None and refusal(other, None) is None  # the old rule
    assert refusal(heard, {"n2": "inc2"}) is None
    assert refusal(other, {"n2": "inc2"}) == "incarnation"
    assert refusal(none, {"n2": "inc2"}) == "incarnation"  # once pinned, none attested is not it
    assert refusal(other, {"n3": "inc3"}) is None  # a pin holds only its own id
    bound = Membership(voters=UNBOUND.voters, incarnations=(("n2", "inc2"),))
    # A binding decides over a pin (and a pin never loosens it).
    assert refusal(other, {"n2": "other"}, bound) == "incarnation"
    assert refusal(none, {"n2": "other"}, bound) is None  # (the binding rule: none attested)


def test_only_listed_unbound_members_are_pinned() -> None:
    node = leader()
    node.step(HeartbeatResponse(term=2, src="n3", dst="n1"))  # nothing attested: no pin
    node.step(HeartbeatResponse(term=2, src="mallory", dst="n1", sender_incarnation="m.0"))
    settle(node)
    s = node.status()
    assert s.pinned == (("n2", "inc2"),)
    assert dict(s.refused) == {"stranger": 1}
    node.step(HeartbeatResponse(term=2, src="n3", dst="n1", sender_incarnation="inc3"))
    settle(node)
    assert node.status().pinned == (("n2", "inc2"), ("n3", "inc3"))
    bound = Membership(
        voters=UNBOUND.voters, incarnations=(("n1", "inc1"), ("n2", "inc2"), ("n3", "inc3"))
    )
    b = RaftNode("n1", rng=random.Random(1), config=CFG, initial=bootstrap_state(bound))
    b.step(
        RequestVote(
            term=2, src="n2", dst="n1", last_log_index=1, last_log_term=1, sender_incarnation="inc2"
        )
    )
    settle(b)
    assert b.status().pinned == ()  # bound members: the configuration's binding, no pin


class _CountsStatus(RaftNode):
    """The real core, counting the statuses built."""

    statuses = 0

    def status(self) -> Status:
        self.statuses += 1
        return super().status()


def test_the_forger_builds_a_status_only_for_an_answer_from_a_pinned_member() -> None:
    # The simulator's forger looks at every answer a leader takes (``maybe_forge_ack``): it
    # used to build the status first (about a tenth of a seed's time), whatever the sender.
    # It now asks the pin first, and draws from its RNG exactly as before.
    node = leader(_CountsStatus)
    assert isinstance(node, _CountsStatus)
    assert node.pinned_incarnation("n2") == "inc2" and node.pinned_incarnation("n3") is None
    forger = Forger(rng=random.Random(1), ack_rate=1.0)
    state = forger.rng.getstate()
    node.statuses = 0
    assert forger.maybe_forge_ack(node, ack("n3", "inc3", 2)) is None  # not pinned
    assert node.statuses == 0 and forger.rng.getstate() == state
    forged = forger.maybe_forge_ack(node, ack("n2", "inc2", 2))
    assert forged == AppendEntriesResponse(
        term=2, src="n2", dst="n1", success=True, index=2, sender_incarnation=FORGED_INCARNATION
    )
    assert node.statuses == 1 and forger.rng.getstate() != state
