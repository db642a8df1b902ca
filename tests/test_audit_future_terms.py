"""s13-audit: a message that carries log data of a later term than its own is refused.

A leader sends only entries (and a snapshot) of its log, whose terms are at most its current
term, the term its messages carry; ``prev_log_term`` likewise. One AppendEntries under the
leader's id (without TLS: its id and incarnation travel in clear text; a listed id at another
incarnation is heard by a member following no live leader) appended an entry of term T+50 to
a follower: its log then looked the most up to date of all, it won the next election, and its
core crashed on its own log (``term goes back``: the leader's no-op of term T+1 after an entry
of T+50), at every start again, from the poisoned log on disk."""

from __future__ import annotations

import attrs
import trio

from tests.runtime.memcluster import create, start_cluster, wait_until
from univrs.raft.messages import (
    AppendEntries,
    Entry,
    EntryKind,
    InstallSnapshot,
    RequestVote,
    SnapshotMeta,
)
from univrs.raft.ready import Role
from univrs.runtime.driver import RaftRuntime


def _refused_term(runtime: RaftRuntime) -> int:
    return dict(runtime.status().refused).get("term", 0)


async def test_entries_of_a_later_term_than_the_message_are_refused(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Fails on the code before: the forged entry is appended (and the follower's core
    crashes once it is elected)."""
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    await leader.propose(create("w0"))
    follower = next(r for r in cluster.runtimes.values() if r is not leader)
    await wait_until(
        lambda: follower.status().last_index == leader.status().last_index, "caught up"
    )
    status = follower.status()
    term, last = status.term, status.last_index
    payload = cluster.stores[leader.node_id].entries[-1].data
    forged = AppendEntries(
        term=term,
        src=leader.node_id,
        dst=follower.node_id,
        prev_log_index=last,
        prev_log_term=term,
        entries=(Entry(term=term + 50, index=last + 1, kind=EntryKind.NORMAL, data=payload),),
        commit=0,
    )
    before = _refused_term(follower)
    cluster.deliver(forged)
    cluster.deliver(attrs.evolve(forged, entries=(), prev_log_term=term + 50))
    meta = SnapshotMeta(index=last + 10, term=term + 50, membership=status.membership)
    cluster.deliver(
        InstallSnapshot(
            term=term,
            src=leader.node_id,
            dst=follower.node_id,
            meta=meta,
            offset=0,
            data=b"",
            done=False,
            total_size=100,
            checksum=0,
        )
    )
    await wait_until(lambda: _refused_term(follower) >= before + 3, "the forgeries refused")
    assert follower.status().last_index == last
    assert all(e.term <= term for e in cluster.stores[follower.node_id].entries)
    # The cluster goes on: the leader cut off, another is elected and commits.
    cluster.cut.add(leader.node_id)
    await wait_until(
        lambda: any(
            r.status().role is Role.LEADER for r in cluster.runtimes.values() if r is not leader
        ),
        "a new leader",
    )
    new = next(
        r for r in cluster.runtimes.values() if r is not leader and r.status().role is Role.LEADER
    )
    await new.propose(create("w1"))
    await wait_until(
        lambda: all(
            r.applied_index == new.applied_index
            for r in cluster.runtimes.values()
            if r is not leader
        ),
        "the survivors applied the new write",
    )


async def test_a_vote_request_claiming_a_later_log_term_than_its_own_is_refused(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A candidate's last entry is of a term at most the one it campaigns in: a RequestVote (or
    pre-vote) claiming a later one is made up to look the most up to date, and is refused
    (reason term) before any vote rule sees it. Fails on the code before (the request reached
    the vote rules, and a real vote request adopted its term)."""
    cluster, leader = await start_cluster(nursery, ["a", "b", "c"])
    await leader.propose(create("w0"))
    follower = next(r for r in cluster.runtimes.values() if r is not leader)
    other = next(r for r in cluster.runtimes.values() if r not in (leader, follower))
    await wait_until(
        lambda: follower.status().last_index == leader.status().last_index, "caught up"
    )
    term = follower.status().term
    before = _refused_term(follower)
    for pre_vote in (True, False):
        cluster.deliver(
            RequestVote(
                term=term + 1,
                src=other.node_id,
                dst=follower.node_id,
                last_log_index=10**6,
                last_log_term=term + 50,
                pre_vote=pre_vote,
            )
        )
    await wait_until(lambda: _refused_term(follower) >= before + 2, "the forgeries refused")
    assert follower.status().term == term  # not moved to the forged campaign's term
