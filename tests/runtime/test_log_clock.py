"""s14-owner: the time a leader stamps into its entries is the log's clock (univrs/runtime/
stamps.py), advanced by the monotonic clock from the last stamp, never by the wall clock.

Until s14 a leader stamped ``time.time()``: a wall clock stepped forward by more than the
session TTL expired every session at the next entry (keyed retries in flight lost exactly-once),
and stepped back it froze the sessions' time until it caught up."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from tests.runtime.memcluster import MemCluster, create, wait_leader, wait_until
from univrs.runtime.stamps import LogClock
from univrs.sm import Created, Envelope, OpenSession, SessionPolicy, state_digest
from univrs.sm.responses import ErrorCode, Failure

IDS = ["a", "b", "c"]
TTL_MS = 5_000


def test_the_reading_advances_by_the_monotonic_clock_and_learns_newer_stamps() -> None:
    clock = LogClock.starting(0, 100.0, wall_ms=1_000_000)  # a new cluster: the wall clock once
    assert clock.read(100.0) == 1_000_000 and clock.read(101.5) == 1_001_500
    assert clock.observe(1_001_000, 101.5)  # the first stamp applied: the wall clock is gone
    assert not clock.observe(1_000_900, 101.5)  # behind the reading: nothing learned
    assert clock.read(102.0) == 1_001_500
    assert clock.observe(5_000_000, 102.0)  # a newer stamp (another leader's): jump to it
    assert clock.read(103.0) == 5_001_000
    assert not clock.observe(0, 104.0)  # no stamp: nothing
    joiner = LogClock.starting(0, 0.0, wall_ms=10**15)  # a new member's wall clock, far ahead
    assert joiner.observe(5_000, 1.0)  # its first stamp replaces it, though behind
    assert joiner.read(2.0) == 6_000
    restarted = LogClock.starting(7_000, 0.0, wall_ms=10**15)  # the state's clock wins
    assert restarted.read(2.0) == 9_000
    assert restarted.read(-1.0) == 7_000  # never before its anchor


async def cluster_with_sessions(nursery: trio.Nursery) -> MemCluster:
    cluster = MemCluster.build(nursery, IDS)
    cluster.sm_policy = SessionPolicy(ttl_ms=TTL_MS)
    await cluster.start_all()
    return cluster


def wall_clock_at(monkeypatch: pytest.MonkeyPatch, offset_s: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + offset_s)


async def test_a_wall_clock_jump_of_ten_ttls_expires_no_session(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the code before s14-owner: the next entry carried the jumped wall clock and
    the session, active a moment ago, expired (``session-expired``)."""
    cluster = await cluster_with_sessions(nursery)
    leader = await wait_leader(cluster)
    opened = await leader.propose(Envelope(command=OpenSession(owner="token:t")))
    assert isinstance(opened, Created)
    wall_clock_at(monkeypatch, 10 * TTL_MS / 1000)
    await trio.sleep(1.0)
    done = await leader.propose(Envelope(command=create("w").command, client_id=opened.id, seq=1))
    assert isinstance(done, Created), done
    assert leader.sm.has_session(opened.id)
    # A new leader continues from the log's stamps, not from its (jumped) wall clock.
    stamp = leader.sm.clock_ms
    await cluster.stop(leader.node_id)
    new = await wait_leader(cluster, [i for i in IDS if i != leader.node_id])
    done = await new.propose(Envelope(command=create("v").command, client_id=opened.id, seq=2))
    assert isinstance(done, Created), done
    assert stamp < new.sm.clock_ms < stamp + TTL_MS
    await cluster.start(leader.node_id)
    await wait_until(
        lambda: len({rt.applied_index for rt in cluster.runtimes.values()}) == 1,
        "every replica to apply everything",
    )
    assert len({state_digest(rt.sm) for rt in cluster.runtimes.values()}) == 1


async def test_a_wall_clock_stepped_back_does_not_keep_sessions_alive(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the code before s14-owner: stamps below the applied clock left it where it
    was, so the session outlived its TTL by as long as the wall clock was behind."""
    cluster = await cluster_with_sessions(nursery)
    leader = await wait_leader(cluster)
    opened = await leader.propose(Envelope(command=OpenSession(owner="token:t")))
    assert isinstance(opened, Created)
    wall_clock_at(monkeypatch, -10 * TTL_MS / 1000)
    await trio.sleep(2 * TTL_MS / 1000)
    late = await leader.propose(Envelope(command=create("w").command, client_id=opened.id, seq=1))
    assert isinstance(late, Failure) and late.code is ErrorCode.SESSION_EXPIRED, late


async def test_a_new_leader_counts_the_idle_time_since_the_last_stamp(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: Any
) -> None:
    """An idle cluster, then a leader change: the new leader's first stamp counts the idle
    time since it applied the last one (a follower's reading keeps counting), so a session
    idle for longer than its TTL expires at the new leader's first entry."""
    cluster = await cluster_with_sessions(nursery)
    leader = await wait_leader(cluster)
    opened = await leader.propose(Envelope(command=OpenSession(owner="token:t")))
    assert isinstance(opened, Created)
    await wait_until(
        lambda: len({rt.applied_index for rt in cluster.runtimes.values()}) == 1,
        "every replica to apply the open",
    )
    wall_clock_at(monkeypatch, -3600.0)  # and every wall clock far behind: not read
    await trio.sleep(2 * TTL_MS / 1000)
    await cluster.stop(leader.node_id)
    new = await wait_leader(cluster, [i for i in IDS if i != leader.node_id])
    late = await new.propose(Envelope(command=create("w").command, client_id=opened.id, seq=1))
    assert isinstance(late, Failure) and late.code is ErrorCode.SESSION_EXPIRED, late
