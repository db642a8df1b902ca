"""An acknowledgement that changes nothing waits for the leader's next step (issue 14, round
19; step.py ``_may_leave``, the inbox's ``leave``).

The transport's reader offers each message to the inbox's ``leave`` before it puts it on the
channel; the runtime keeps it for the driver's next step, without waking the driver, only when
the driver waits idle with nothing else pending and the core says stepping it changes nothing
before its next input (``RaftNode.append_response_may_wait``, checked case by case in
tests/raft/test_raft_ack_may_wait.py). The driver steps it at the start of its next step,
before that step's input. An acknowledgement that commits goes on the channel and wakes the
driver, as before. (MemCluster delivers through ``leave`` too, so every runtime test runs the
path whenever the scheduling makes an acknowledgement wait.)
"""

from __future__ import annotations

import trio
import trio.testing

from tests.runtime.memcluster import create, start_cluster, wait_until
from univrs.raft.messages import AppendEntriesResponse, Message


async def test_the_second_ack_waits_for_the_next_step_and_the_first_wakes_the_driver() -> None:
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
        await leader.propose(create("w0"))
        await wait_until(
            lambda: all(
                r.applied_index == leader.status().last_index for r in cluster.runtimes.values()
            ),
            "every node applied the leader's log",
        )
        lid = leader.core.id
        before = leader.status().last_index  # w1 goes after it
        acks: list[Message] = []
        cluster.hold = lambda m: isinstance(m, AppendEntriesResponse) and m.dst == lid
        cluster.held = acks
        left: list[bool] = []
        may_leave = leader.inbox.may_leave

        def counted(msg: Message) -> bool:
            answer = may_leave(msg)
            if isinstance(msg, AppendEntriesResponse) and msg.index > before:
                # (w1's acknowledgements only: heartbeat answers are offered too, as many as
                # the ticks that pass while the test waits; never left: not appends' answers)
                left.append(answer)
            return answer

        leader.inbox.may_leave = counted
        write = nursery.start_soon  # the write waits for its commit: in the background
        done = trio.Event()

        async def one_write() -> None:
            await leader.propose(create("w1"))
            done.set()

        write(one_write)

        def w1_acks() -> dict[str, Message]:
            # Each follower's acknowledgement of w1. Another one held meanwhile (an answer to
            # a probe or an earlier append, late on a loaded machine) is dropped below, as a
            # network may: waiting for exactly two held messages missed the moment when one
            # such came with them (CI, s19-ports' suite run at load 3 to 5).
            return {
                m.src: m
                for m in acks
                if isinstance(m, AppendEntriesResponse) and m.success and m.index > before
            }

        await wait_until(lambda: len(w1_acks()) == 2, "both followers acknowledged w1")
        cluster.hold = None
        first, second = sorted(w1_acks().values(), key=lambda m: m.src)
        await trio.testing.wait_all_tasks_blocked()
        cluster.deliver(first)  # it commits: on the channel, the driver wakes
        assert left == [False] and not leader.inbox.later
        await done.wait()
        await trio.testing.wait_all_tasks_blocked()
        receiver = leader.inbox.receiver.statistics()
        assert receiver.tasks_waiting_receive == 1 and receiver.current_buffer_used == 0
        cluster.deliver(second)  # it changes nothing: kept for the next step, no wake-up
        assert left == [False, True] and [m for m, _ in leader.inbox.later] == [second]
        receiver = leader.inbox.receiver.statistics()
        assert receiver.tasks_waiting_receive == 1 and receiver.current_buffer_used == 0
        peer = {p.id: p for p in leader.core.status().peers}[second.src]
        assert isinstance(second, AppendEntriesResponse) and peer.match < second.index
        await leader.propose(create("w2"))  # its step takes the kept ack first
        assert second not in [m for m, _ in leader.inbox.later]  # (w2's second may wait now)
        peer = {p.id: p for p in leader.core.status().peers}[second.src]
        assert peer.match >= second.index
        nursery.cancel_scope.cancel()
