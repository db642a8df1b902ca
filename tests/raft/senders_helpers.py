"""Shared set-up of the sender-rule tests (test_raft_senders.py, test_raft_vouches.py): a healthy
member n2 following n1, forged messages, and the rule called directly."""

from __future__ import annotations

import random
import zlib

from univrs.raft import (
    AppendEntries,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    Membership,
    Message,
    RaftConfig,
    RaftNode,
    SnapshotMeta,
    Status,
    bootstrap_state,
)
from univrs.raft.senders import sender_refusal

M = Membership(
    voters=frozenset({"n1", "n2", "n3"}),
    incarnations=(("n1", "inc1"), ("n2", "inc2"), ("n3", "inc3")),
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
    node.step(
        AppendEntries(
            term=2,
            src="n1",
            dst="n2",
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(term=2, index=2, kind=EntryKind.NOOP),),
            commit=2,
            sender_incarnation="inc1",
        )
    )
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
