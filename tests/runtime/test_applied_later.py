"""A follower's apply loop leaves its report for the driver's next step (issue 14, rounds 16
and 19).

The apply loop's report of what a follower applied (``Applied``) is not an inbox event of its
own: the driver takes it in at its next step, before that step's input (step.py
``_applied_later``), one driver step less per commit. Round 16 did so while the storage writer
had a write in progress (``StorageWriter.reports_soon``); round 19 whenever (the next input:
an append, a commit notice, a tick). The ``wait_applied`` waiters are woken at once. Not on a
leader (its batches wait on the report), nor with a ReadIndex read in flight (the core
releases it on the report), nor with a new applied membership to announce. Nor does the
writer's report itself wake the driver when it changes nothing the core does before its next
input (``RaftNode.persist_report_may_wait``; the rule is checked in
tests/raft/test_raft_persist_report.py)."""

from __future__ import annotations

import time

import attrs
import pytest
import trio
import trio.testing

from tests.runtime import memcluster
from tests.runtime.memcluster import CONFIG, create, start_cluster, wait_until
from univrs.runtime.events import Applied
from univrs.runtime.inline_steps import WAKE
from univrs.runtime.step import APPLY_ON_STEP_BYTES
from univrs.runtime.waiter import Waiter
from univrs.sm.commands import CreateWorkload, Envelope
from univrs.sm.model import WorkloadSpec


class _Events:
    """Stands in for an apply loop's channel to its driver: counts the ``Applied`` events."""

    def __init__(self, inner: trio.MemorySendChannel[object]) -> None:
        self.inner, self.applied = inner, 0

    async def send(self, ev: object) -> None:
        self.applied += isinstance(ev, Applied)
        await self.inner.send(ev)

    def send_nowait(self, ev: object) -> None:
        self.inner.send_nowait(ev)
        self.applied += isinstance(ev, Applied)


class _Wakes:
    """Stands in for a driver's inbox sender: counts the storage writer's wake-ups."""

    def __init__(self, inner: trio.MemorySendChannel[object]) -> None:
        self.inner, self.wakes = inner, 0

    def send_nowait(self, ev: object) -> None:
        self.inner.send_nowait(ev)
        self.wakes += ev is WAKE

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _big(name: str) -> Envelope:
    # Too large to apply on the driver's step: it goes through the apply loop everywhere
    # (refused by the state machine, the image being too long, and applied all the same).
    image = "i" * (APPLY_ON_STEP_BYTES + 1)
    return Envelope(command=CreateWorkload(id=name, spec=WorkloadSpec(name=name, image=image)))


async def test_the_rule_a_follower_takes_the_report_at_its_next_step(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    await leader.propose(create("w"))
    await wait_until(
        lambda: all(r.status().applied == leader.applied_index for r in cluster.runtimes.values()),
        "every core knows the write applied",
    )
    follower = next(r for r in cluster.runtimes.values() if r is not leader)
    index = follower.status().applied
    writer = follower._writer
    assert not writer.reports_soon  # no write in progress: the report waits all the same
    assert not leader._applied_later(index + 1)  # a leader: always an event

    # (No await from here to the end of the block: nothing else runs meanwhile.)
    read: Waiter[int] = Waiter()
    follower._reads[-1] = read  # a ReadIndex read in flight: the core must hear at once
    assert not follower._applied_later(index + 1)
    del follower._reads[-1]
    follower.view.applied_membership = attrs.evolve(follower.view.applied_membership)
    assert not follower._applied_later(index + 1)  # a membership applied: announce it now
    follower.view.refresh()
    waited = trio.Event()

    async def wait_applied() -> None:
        await follower.view.wait_applied(index + 1)
        waited.set()

    nursery.start_soon(wait_applied)
    await trio.testing.wait_all_tasks_blocked()
    assert not waited.is_set()
    follower._applier.applied_index = index + 1  # as the apply loop would have, first
    follower.core._handed = index + 1  # (the core handed it out: what the loop applied)
    assert follower._applied_later(index + 1)
    assert follower.status().applied == index  # the core not told yet: no event, no step
    await waited.wait()  # the waiters are woken at once
    assert follower.status().applied == index
    # The driver's next step (here a tick's, as when no write is in progress) takes it.
    await wait_until(lambda: follower.status().applied == index + 1, "the core told")


async def test_a_followers_driver_wakes_for_neither_report_while_it_keeps_up(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Commits of these large entries ride on the next append, as a node's small ones do
    # (``lazy_commit_notice_bytes``): the follower learns one with the append whose write it
    # starts in the same step, the usual case at one client.
    monkeypatch.setattr(
        memcluster, "CONFIG", attrs.evolve(CONFIG, lazy_commit_notice_bytes=1 << 20)
    )
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    await leader.propose(create("w"))
    follower, other = [r for r in cluster.runtimes.values() if r is not leader]
    cluster.cut.add(other.node_id)  # every commit waits for ``follower``: it never lags
    # A disk that takes 20 ms per synced write, in the writer's thread as in a node: the apply
    # loop runs (the round after the step that started the write) while the write is in flight.
    writer, append = follower._writer, follower._writer.write

    def slow_append(**parts):  # type: ignore[no-untyped-def]
        time.sleep(0.02)  # the fsync's time (in the writer's thread: no test sync)
        append(**parts)

    writer.write = slow_append
    writer.in_thread = True
    wakes = _Wakes(follower.inbox.sender)
    follower.inbox.sender = wakes  # type: ignore[assignment]
    applier = follower._applier
    events = _Events(applier.events)
    applier.events = events  # type: ignore[assignment]
    later: list[int] = []
    inner = applier.applied_later

    def offer(index: int) -> bool:
        taken = inner(index)
        if taken:
            later.append(index)
        return taken

    applier.applied_later = offer
    for i in range(30):  # one at a time, as one client writes
        await leader.propose(_big(f"big{i}"))
    last = leader.status().last_index
    await wait_until(lambda: follower.applied_index == last - 1, "the follower applied")
    # The apply reports were left for the driver's next step (none on the old loop) ...
    assert len(later) >= 25, (later, events.applied)
    # ... and so were the writer's (``persist_report_may_wait``): the old driver woke for
    # each write's (30 writes, 30 wake-ups or more).
    assert wakes.wakes <= 5, wakes.wakes
    # Every report is taken in: the core learns what is durable and applied.
    await leader.propose(create("last"))  # (the follower learns the commit of the 30th)
    await wait_until(
        lambda: follower.status().applied >= last and follower.status().persisted == last + 1,
        "the core told",
    )
