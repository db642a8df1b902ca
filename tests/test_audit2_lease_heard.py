"""s13-audit2: with read leases on, a follower dates a leader's message by the time it is
stepped, not by the last tick its driver fed the core.

A follower refuses votes and pre-votes for ``election_ticks_min`` ticks after it last heard
from a leader (election.py ``_in_lease``): the leader's read lease counts on it, from the send
of a heartbeat. The driver fed the core the ticks it missed (``LeaseClock.catch_up``) only at
a tick event or a lease read: a follower whose process stalled stepped the leader's heartbeat
that arrived during the stall with the clock of *before* the stall, so it dated its last
contact with the leader before the leader had even sent that heartbeat, and granted a
pre-vote (and then a vote) while the leader still served reads from its lease. Every message
is now stepped on a caught-up clock when leases are on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs
import trio
import trio.testing

from tests.runtime.memcluster import MemoryStore
from tests.runtime.test_lease import LEASE
from univrs.raft import Membership, RaftNode, bootstrap_state
from univrs.raft.messages import Heartbeat, Message, RequestVote, RequestVoteResponse
from univrs.runtime.driver import RaftRuntime
from univrs.sm.state import ClusterStateMachine

TICK = 0.05


@attrs.define(eq=False)
class Sink:
    """A transport that keeps what the node sends (its peers are played by the test)."""

    sent: list[Message] = attrs.field(factory=list)

    def send_now(self, msgs: Sequence[Message]) -> None:
        for msg in msgs:
            self.send(msg)

    def send(self, msg: Message) -> None:
        self.sent.append(msg)


async def test_a_stalled_follower_dates_the_leaders_heartbeat_after_the_stall(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    sink = Sink()
    membership = Membership(voters=frozenset({"a", "b", "c"}))
    core = RaftNode("b", rng=random.Random(7), config=LEASE, initial=bootstrap_state(membership))
    node = RaftRuntime(
        core=core,
        sm=ClusterStateMachine(),
        storage=MemoryStore(),
        transport=sink,
        tick_seconds=TICK,
        write_in_thread=False,
    )
    await nursery.start(node.run)

    async def ticks(n: int) -> None:
        for _ in range(n):
            mock_clock.jump(TICK)
            await trio.testing.wait_all_tasks_blocked()

    def deliver(msg: Message) -> None:
        node.inbox.sender.send_nowait(msg)

    await ticks(2)
    status = node.status()
    term = status.term + 1
    deliver(Heartbeat(term=term, src="a", dst="b", commit=status.commit))
    await trio.testing.wait_all_tasks_blocked()
    assert node.status().leader == "a"

    # The follower's process stalls for 20 ticks; the first thing it steps after the stall is
    # a heartbeat the leader sent during it (before its ticker's event).
    mock_clock.jump(20 * TICK)
    deliver(Heartbeat(term=term, src="a", dst="b", commit=status.commit))
    await trio.testing.wait_all_tasks_blocked()

    # Two ticks after that heartbeat (well inside its election_ticks_min of 6), a pre-vote
    # from c with a log as up to date as b's.
    await ticks(2)
    status = node.status()
    deliver(
        RequestVote(
            term=term + 1,
            src="c",
            dst="b",
            last_log_index=status.last_index,
            last_log_term=term,
            pre_vote=True,
        )
    )
    await trio.testing.wait_all_tasks_blocked()
    granted = [m for m in sink.sent if isinstance(m, RequestVoteResponse) and m.granted]
    assert granted == [], "a pre-vote granted inside the lease of the heartbeat just heard"
