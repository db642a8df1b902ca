"""The apply loop yields every ``APPLY_CHUNK`` commands, however they are packed into entries.

A node that catches up (a member that joined, right after its snapshot install; a restart
replaying its log) gets hundreds of committed batch entries at once. The old loop reported
``Applied`` (its only checkpoint) every 512 *entries*: with batch entries of up to 256
commands that was one stretch of seconds at the scale of docs/state-at-scale.md ("Ninth
increment": the joined node answered no ping for 2 s and every member dropped its link).
These tests fail on that loop: the follower applied its whole backlog in one chunk.
"""

from __future__ import annotations

import trio
import trio.testing

from tests.runtime.memcluster import create, start_cluster, wait_until
from univrs.runtime.applier import APPLY_CHUNK
from univrs.runtime.events import Applied
from univrs.runtime.packing import Packing

IDS = ["a", "b", "c"]
PER_ENTRY = 64  # commands in each batch entry
ENTRIES = 24  # 1,536 commands: six chunks of APPLY_CHUNK


class _Reports:
    """Stands in for the apply loop's channel to the driver: keeps its ``Applied`` reports
    (one per chunk) and sets ``first`` at the first."""

    def __init__(
        self, inner: trio.MemorySendChannel[object], reports: list[int], first: trio.Event
    ) -> None:
        self.inner, self.reports, self.first = inner, reports, first

    async def send(self, ev: object) -> None:
        if isinstance(ev, Applied):
            self.reports.append(ev.index)
            self.first.set()
        await self.inner.send(ev)

    def send_nowait(self, ev: object) -> None:
        self.inner.send_nowait(ev)  # may raise WouldBlock: the loop then awaits ``send``
        if isinstance(ev, Applied):
            self.reports.append(ev.index)
            self.first.set()


async def test_a_backlog_of_batch_entries_applies_in_chunks_that_each_yield(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cluster, leader = await start_cluster(
        nursery, IDS, packing=Packing(enabled=True, max_commands=PER_ENTRY)
    )
    await leader.propose(create("first"))
    await wait_until(
        lambda: all(r.applied_index == leader.applied_index for r in cluster.runtimes.values()),
        "every node applied the first write",
    )
    behind = cluster.runtimes["c"]
    cluster.deaf.add("c")  # c hears nothing: the others commit without it
    start = leader.applied_index
    for round_ in range(ENTRIES):
        waiters = await leader.propose_together(
            [create(f"w{round_}-{i}") for i in range(PER_ENTRY)]
        )
        for waiter in waiters:
            await waiter.wait()
    last = leader.applied_index
    assert last - start == ENTRIES, "one batch entry per round"
    assert behind.applied_index == start

    # c catches up: its backlog of 24 entries x 64 commands is committed at once.
    reports: list[int] = []
    first = trio.Event()
    applier = behind._applier
    applier.events = _Reports(applier.events, reports, first)  # type: ignore[assignment]
    offer = applier.applied_later

    def later(index: int) -> bool:
        # The last chunk's report may be left for the driver's next step (step.py
        # ``_applied_later``): a report all the same, only not an event.
        taken = offer(index)
        if taken:
            reports.append(index)
        return taken

    applier.applied_later = later
    seen: list[int] = []

    async def probe() -> None:
        # From the first chunk's report on (the backlog is queued then, so the busy loop
        # holds up nothing the apply loop waits for; before it, the mock clock must be free
        # to jump to the leader's next heartbeat), one look at every scheduling round.
        await first.wait()
        for _ in range(100_000):
            seen.append(behind.applied_index)
            if seen[-1] == last:
                return
            await trio.lowlevel.checkpoint()

    nursery.start_soon(probe)
    cluster.deaf.discard("c")
    await wait_until(lambda: behind.applied_index == last, "c to catch up")

    entries_per_chunk = APPLY_CHUNK // PER_ENTRY
    assert reports, "the backlog went through the apply loop"
    steps = [b - a for a, b in zip([start, *reports], reports, strict=False)]
    # Each report (a checkpoint) follows at most APPLY_CHUNK commands: 4 entries of 64.
    assert max(steps) <= entries_per_chunk, steps
    assert reports[-1] == last
    # Other tasks ran between the chunks: the probe saw states between them (not each one:
    # trio runs the tasks of a scheduling round in any order).
    between = {i for i in seen if start < i < last}
    assert len(between) >= 2, sorted(between)
    assert all(behind.sm.get_workload(f"w{r}-{i}") for r in range(ENTRIES) for i in (0, 63))
