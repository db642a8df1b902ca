"""Shared set-up of the sender-rule tests (test_raft_senders.py, test_raft_vouches.py,
test_raft_unbound.py, test_raft_pins_restart.py): a healthy member n2 following n1, forged
messages, the rule called directly, and the unbound bootstrap configuration with its votes,
acknowledgements and Ready handling."""

from __future__ import annotations

import random
import zlib
from typing import Protocol

from univrs.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    Membership,
    Message,
    RaftConfig,
    RaftNode,
    Ready,
    RequestVoteResponse,
    SnapshotMeta,
    Status,
    bootstrap_state,
)
from univrs.raft.senders import sender_refusal

M = Membership(
    voters=frozenset({"n1", "n2", "n3"}),
    incarnations=(("n1", "inc1"), ("n2", "inc2"), ("n3", "inc3")),
)


UNBOUND = Membership(voters=frozenset({"n1", "n2", "n3"}))
"""A bootstrap configuration: three voters, none bound to an incarnation yet."""

CFG = RaftConfig(pre_vote=False, check_quorum=True)


class Store(Protocol):
    """Where ``settle`` writes each Ready (a test's durable image of the node)."""

    def store(self, rd: Ready) -> None: ...


def settle(node: RaftNode, disk: Store | None = None) -> list[Message]:
    """Take the node's Ready (written to ``disk`` if given), make everything durable and
    applied; the messages it sent."""
    out: list[Message] = []
    while node.has_ready():
        rd = node.ready()
        if disk is not None:
            disk.store(rd)
        if rd.hard_state is not None:
            node.persisted_hard_state(rd.hard_state)
        if rd.entries:
            node.persisted(rd.entries[-1].index, rd.entries[-1].term)
        if rd.committed:
            node.applied(rd.committed[-1].index)
        out += [*rd.messages, *rd.messages_after_persist]
    return out


def vote(src: str, incarnation: str | None, *, granted: bool, term: int = 2) -> RequestVoteResponse:
    """``src``'s answer to n1's vote request of ``term``, attested at ``incarnation``."""
    return RequestVoteResponse(
        term=term, src=src, dst="n1", granted=granted, sender_incarnation=incarnation
    )


def ack(src: str, incarnation: str | None, index: int, *, term: int = 2) -> AppendEntriesResponse:
    """``src``'s successful answer to n1's append of ``term`` up to ``index``."""
    return AppendEntriesResponse(
        term=term, src=src, dst="n1", success=True, index=index, sender_incarnation=incarnation
    )


def first_append(dst: str = "n2") -> AppendEntries:
    """n1's first append as leader of term 2 (its no-op at index 2, committing it), from
    incarnation inc1."""
    return AppendEntries(
        term=2,
        src="n1",
        dst=dst,
        prev_log_index=1,
        prev_log_term=1,
        entries=(Entry(term=2, index=2, kind=EntryKind.NOOP),),
        commit=2,
        sender_incarnation="inc1",
    )


def follower(
    cls: type[RaftNode] = RaftNode,
    config: RaftConfig | None = None,
    membership: Membership = M,
    **kw: object,
) -> RaftNode:
    """n2 of ``membership`` (M), following n1 (term 2, heard at incarnation inc1) and just
    heard from it: a healthy member."""
    initial = bootstrap_state(membership)
    node = cls("n2", rng=random.Random(1), initial=initial, config=config, **kw)  # type: ignore[arg-type]
    node.step(first_append())
    rd = node.ready()
    if rd.hard_state is not None:
        node.persisted_hard_state(rd.hard_state)
    node.persisted(2, 2)
    node.ready()
    node.applied(2)
    return node


def view(s: Status) -> tuple[object, ...]:
    return (s.term, s.vote, s.leader, s.role, s.commit, s.last_index, s.last_term, s.applied)


def forged_append(src: str, term: int, *, incarnation: str | None = None) -> AppendEntries:
    """Appends a credit mint at index 3 and commits it."""
    mint = Entry(term=term, index=3, data=b"mint 1000000 credits")
    return AppendEntries(
        term=term,
        src=src,
        dst="n2",
        prev_log_index=2,
        prev_log_term=2,
        entries=(mint,),
        commit=3,
        sender_incarnation=incarnation,
    )


def forged_snapshot(src: str, data: bytes = b"{}", total: int | None = None) -> InstallSnapshot:
    meta = SnapshotMeta(index=50, term=3, membership=M)
    return InstallSnapshot(
        term=3,
        src=src,
        dst="n2",
        meta=meta,
        offset=0,
        data=data,
        done=True,
        total_size=len(data) if total is None else total,
        checksum=zlib.crc32(data),
    )


def rule(
    msg: Message,
    current: Membership,
    *,
    me: str = "n2",
    live: str | None = "n1",
    live_inc: str | None = "inc1",
) -> object:
    return sender_refusal(
        msg, me=me, current=current, committed=current, live_leader=live, live_incarnation=live_inc
    )


def hb(src: str) -> Heartbeat:
    return Heartbeat(term=3, src=src, dst="n2", commit=0)
