"""Pins are durable: a restarted core still holds an unbound member to the incarnation it took.

A member the configuration binds to no incarnation yet (a bootstrap configuration, until the
leader's binding change) is pinned by each node to the first incarnation it takes a message
from under the member's id (gate.py ``_maybe_pin``; tests/raft/test_raft_unbound.py). The pins
used to live in memory only, so a restart forgot them and the node took the next incarnation
it heard under the id (a wiped member's new data dir, whose empty log grants any vote, or a
forger) as the member (docs/security.md). They now travel in the hard state
(``HardState.pins``), are made durable before anything that followed them leaves the node, and
are loaded at start. Each restart test also runs the ``ForgetPinsAtRestart`` mutant (the old
behaviour) and shows it takes the other incarnation.
"""

from __future__ import annotations

import random

import attrs
from senders_helpers import CFG, UNBOUND, ack, first_append, settle, vote

from univrs.raft import (
    AppendEntriesResponse,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InitialState,
    Message,
    RaftNode,
    Ready,
    Role,
    bootstrap_state,
)
from univrs.sim.mutants import ForgetPinsAtRestart


@attrs.define
class Disk:
    """One node's durable image: what its completed writes hold."""

    hard_state: HardState = HardState()
    entries: list[Entry] = attrs.field(factory=list)

    def store(self, rd: Ready) -> None:
        if rd.truncate_from is not None:
            del self.entries[rd.truncate_from - 1 :]
        if rd.entries:
            del self.entries[rd.entries[0].index - 1 :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def initial(self) -> InitialState:
        return InitialState(
            hard_state=self.hard_state, entries=tuple(self.entries), membership=UNBOUND
        )


def campaigning(disk: Disk, cls: type[RaftNode] = RaftNode) -> RaftNode:
    """n1 started from what ``disk`` holds (a fresh bootstrap, or a restart: a crash leaves
    only the disk), campaigning at its next term, its Ready written to ``disk``."""
    if not disk.entries:
        boot = bootstrap_state(UNBOUND)
        disk.hard_state, disk.entries = boot.hard_state, list(boot.entries)
    node = cls("n1", rng=random.Random(1), config=CFG, initial=disk.initial())
    node.campaign()
    settle(node, disk)
    return node


def deliver(node: RaftNode, disk: Disk, *messages: Message) -> None:
    """Each of ``messages`` stepped into ``node`` in turn, and its Ready written to ``disk``."""
    for msg in messages:
        node.step(msg)
        settle(node, disk)


def pinned_then_restarted(cls: type[RaftNode]) -> RaftNode:
    """n1 campaigns at term 2, hears n2 at its own incarnation ``inc2`` (a rejection: pinned),
    crashes and restarts from its disk, and campaigns again, at term 3."""
    disk = Disk()
    node = campaigning(disk)
    deliver(node, disk, vote("n2", "inc2", granted=False))
    assert node.status().pinned == (("n2", "inc2"),)
    assert disk.hard_state.pins == (("n2", "inc2"),)  # durable with the hard state
    node = campaigning(disk, cls)  # a crash: only the disk is left
    assert node.status().role is Role.CANDIDATE and node.status().term == 3
    return node


def test_a_restarted_candidate_still_refuses_another_incarnation_of_a_pinned_voter() -> None:
    node = pinned_then_restarted(RaftNode)
    assert node.status().pinned == (("n2", "inc2"),)
    # n2's wiped data dir (an empty log: it grants anyone), or a forger, under n2's id.
    deliver(node, Disk(), vote("n2", "inc2.wiped", granted=True, term=3))
    s = node.status()
    assert s.role is Role.CANDIDATE
    assert dict(s.refused) == {"incarnation": 1}
    deliver(node, Disk(), vote("n2", "inc2", granted=True, term=3))  # the member itself: counted
    assert node.status().role is Role.LEADER
    # A core that forgets its pins at a restart (the code before they were durable) is
    # elected by the amnesiac vote.
    mutant = pinned_then_restarted(ForgetPinsAtRestart)
    assert mutant.status().pinned == ()
    deliver(mutant, Disk(), vote("n2", "inc2.wiped", granted=True, term=3))
    assert mutant.status().role is Role.LEADER and mutant.status().refused_messages == 0


def test_a_message_that_names_no_incarnation_pins_nothing() -> None:
    """The transport attests ``""`` for a connection whose hello named no incarnation: no pin
    (it would hold the member to no incarnation, and the store refuses an empty one at the
    next start); the member's own next message pins it."""
    disk = Disk()
    node = campaigning(disk)
    deliver(node, disk, vote("n2", "", granted=False))
    assert node.status().pinned == () and disk.hard_state.pins == ()
    deliver(node, disk, vote("n3", "inc3", granted=False))
    assert node.status().pinned == (("n3", "inc3"),)


def leader_after_restart(cls: type[RaftNode]) -> tuple[RaftNode, Disk]:
    """n1 leads term 2 with n2 (inc2) and commits its no-op with n2's ack, crashes, restarts
    and leads term 3 with n2's vote (inc2); its term-3 no-op (index 3) is durable on n1."""
    disk = Disk()
    node = campaigning(disk)
    deliver(node, disk, vote("n2", "inc2", granted=True), ack("n2", "inc2", 2))
    assert node.status().commit == 2
    node = campaigning(disk, cls)
    deliver(node, disk, vote("n2", "inc2", granted=True, term=3))
    assert node.status().role is Role.LEADER and node.status().last_index == 3
    return node, disk


def test_a_restarted_leader_counts_acks_of_the_pinned_incarnation_only() -> None:
    node, disk = leader_after_restart(RaftNode)
    # Index 3 is on n1 alone: counted, this acknowledgement would commit it.
    deliver(node, disk, ack("n2", "inc2.wiped", 3, term=3))
    assert node.status().commit == 2
    assert dict(node.status().refused) == {"incarnation": 1}
    deliver(node, disk, ack("n2", "inc2", 3, term=3))
    assert node.status().commit == 3
    assert node.status().pinned == (("n2", "inc2"),)


def test_a_new_pin_holds_messages_and_committed_entries_until_it_is_durable() -> None:
    # n2 of UNBOUND takes n1's first AppendEntries (term 2, at incarnation inc1): the pin is in
    # the Ready's hard state, and nothing of what n2 does after it leaves (not even the
    # heartbeat answer, which claims nothing durable) nor is applied before that write is.
    node = RaftNode("n2", rng=random.Random(2), config=CFG, initial=bootstrap_state(UNBOUND))
    node.step(first_append())
    node.step(Heartbeat(term=2, src="n1", dst="n2", commit=2, ctx=7, sender_incarnation="inc1"))
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.pins == (("n1", "inc1"),)
    assert rd.messages == ()
    assert {type(m) for m in rd.messages_after_persist} == {
        AppendEntriesResponse,
        HeartbeatResponse,
    }
    node.persisted(2, 2)  # the entries are durable, the pin not yet known to be
    assert not node.ready().committed
    node.persisted_hard_state(rd.hard_state)
    assert [e.index for e in node.ready().committed] == [1, 2]
    # Pinned and durable: a heartbeat's answer goes at once again.
    node.step(Heartbeat(term=2, src="n1", dst="n2", commit=2, ctx=8, sender_incarnation="inc1"))
    rd = node.ready()
    assert [type(m) for m in rd.messages] == [HeartbeatResponse]
    assert rd.hard_state is None


def test_every_later_hard_state_carries_the_pins() -> None:
    disk = Disk()
    node = campaigning(disk)
    deliver(node, disk, vote("n2", "inc2", granted=False), vote("n3", "inc3", granted=True))
    assert node.status().role is Role.LEADER
    assert disk.hard_state.pins == (("n2", "inc2"), ("n3", "inc3"))
    # A hard state that moves only the commit keeps every pin.
    deliver(node, disk, ack("n3", "inc3", 2))
    assert disk.hard_state == HardState(
        term=2, vote="n1", commit=2, pins=(("n2", "inc2"), ("n3", "inc3"))
    )
