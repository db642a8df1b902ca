"""Whose snapshot chunks a follower takes: only the leader it follows in its current term.

``snapshot_check_due`` / ``snapshot_to_check`` are what the runtime asks before it checks a
snapshot's last chunk in a worker thread (univrs/runtime/checking.py ``SnapshotChecks.begin``);
they used to ignore the term and the sender, so a stale term's last chunk was restored (and
held) although ``step`` then only answered it with the current term. Each test here fails on
that code.
"""

from __future__ import annotations

import zlib

import attrs
from senders_helpers import M, follower, settle

from univrs.raft import (
    AppendEntriesResponse,
    Heartbeat,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RaftNode,
    SnapshotMeta,
)

DATA = b"0123456789" * 3
META = SnapshotMeta(index=50, term=2, membership=M)


def chunks(src: str = "n1", term: int = 2, incarnation: str = "inc1") -> list[InstallSnapshot]:
    """A 30-byte snapshot at index 50 in two chunks (20 + 10 bytes) from ``src``."""
    parts = [(0, DATA[:20], False), (20, DATA[20:], True)]
    return [
        InstallSnapshot(
            term=term,
            src=src,
            dst="n2",
            meta=META,
            offset=offset,
            data=data,
            done=done,
            total_size=len(DATA),
            checksum=zlib.crc32(DATA),
            sender_incarnation=incarnation,
        )
        for offset, data, done in parts
    ]


def checking() -> tuple[RaftNode, list[bytes]]:
    """n2 following n1 in term 2 (senders_helpers), with a check recording what it checks."""
    checked: list[bytes] = []

    def check(meta: SnapshotMeta, data: bytes) -> str | None:
        checked.append(data)
        return None

    return follower(snapshot_check=check), checked


def snapshot_answers(out: list[Message]) -> list[tuple[str, int, bool]]:
    return [(m.dst, m.offset, m.success) for m in out if isinstance(m, InstallSnapshotResponse)]


def test_the_followed_leader_of_the_term_completes_and_checks_its_stream() -> None:
    node, checked = checking()
    first, last = chunks()
    assert not node.snapshot_check_due(first)  # completes nothing
    node.step(first)
    assert node.snapshot_check_due(last) and node.snapshot_to_check(last) == DATA
    node.step(last)
    rd = node.ready()
    assert checked == [DATA] and rd.snapshot is not None and rd.snapshot.meta == META


def test_a_stale_terms_last_chunk_is_never_checked() -> None:
    """n1 streamed half of a snapshot in term 2; n2 then follows n3 in term 3. n1's last
    chunk (term 2) is stale: the runtime's question says no check is due, and ``step`` only
    answers it with the current term, as any stale message."""
    node, checked = checking()
    first, last = chunks()
    node.step(first)
    settle(node)
    node.step(Heartbeat(term=3, src="n3", dst="n2", commit=0, sender_incarnation="inc3"))
    settle(node)
    assert (node.status().term, node.status().leader) == (3, "n3")
    assert not node.snapshot_check_due(last)
    assert node.snapshot_to_check(last) is None
    node.step(last)
    out = settle(node)
    assert checked == []
    assert node.status().snapshot_index == 0 and node.status().commit == 2
    assert snapshot_answers(out) == []
    assert [(m.dst, m.term) for m in out if isinstance(m, AppendEntriesResponse)] == [("n1", 3)]


def test_a_chunk_from_a_sender_not_followed_in_the_term_is_not_taken() -> None:
    """A one-chunk snapshot from n3 in n1's term (n2 follows n1): no check is due, and
    ``step`` follows n3 (the term's leader, as for an append) but takes none of the chunk's
    data; it answers with what it holds (0). n3's resend, now from the followed leader, is
    taken and checked."""
    node, checked = checking()
    one = attrs.evolve(chunks()[0], src="n3", sender_incarnation="inc3", data=DATA, done=True)
    assert not node.snapshot_check_due(one)
    assert node.snapshot_to_check(one) is None
    node.step(one)
    out = settle(node)
    assert checked == [] and node.status().snapshot_index == 0
    assert node.status().leader == "n3"
    assert snapshot_answers(out) == [("n3", 0, False)]
    assert node.snapshot_check_due(one)  # the resend: n3 is the leader n2 follows now
    node.step(one)
    out = settle(node)
    assert checked == [DATA] and node.status().snapshot_index == 50
    assert snapshot_answers(out) == [("n3", len(DATA), True)]


def test_a_new_terms_first_chunk_is_not_taken_but_a_partial_copy_is_kept() -> None:
    """n1 streamed half of a snapshot in term 2; n3, leader of term 3, sends the same
    snapshot's last chunk as its first word to n2: n2 follows n3 and answers with the 20
    bytes it holds, taking none of the chunk; the resend completes the partial copy."""
    node, checked = checking()
    first, last = chunks()
    node.step(first)
    settle(node)
    newer = attrs.evolve(last, term=3, src="n3", sender_incarnation="inc3")
    assert not node.snapshot_check_due(newer)
    node.step(newer)
    out = settle(node)
    assert checked == [] and (node.status().term, node.status().leader) == (3, "n3")
    assert snapshot_answers(out) == [("n3", 20, False)]
    assert node.snapshot_check_due(newer)
    node.step(newer)
    settle(node)
    assert checked == [DATA] and node.status().snapshot_index == 50


def test_a_last_chunk_the_gate_refuses_is_never_checked() -> None:
    """The followed leader's id at another incarnation than n2 hears it at: ``step`` refuses
    it (senders.py), so no check is due either."""
    node, checked = checking()
    first, last = chunks()
    node.step(first)
    settle(node)
    forged = attrs.evolve(last, sender_incarnation="forged")
    assert not node.snapshot_check_due(forged)
    assert node.snapshot_to_check(forged) is None
    node.step(forged)
    settle(node)
    assert checked == [] and node.status().refused == (("incarnation", 1),)


def test_a_held_last_chunk_is_moot_once_it_can_complete_nothing() -> None:
    """``snapshot_check_moot`` (s13-scale: the runtime stops the check of a last chunk it
    holds back, and drops the chunk): not while the chunk would still complete the snapshot;
    yes once the term moved on, once the partial snapshot was replaced by another's, or once
    the commit reached the snapshot's index. Fails on the code before: no such question, the
    check ran to its end (35 to 80 s at 1M) whatever happened meanwhile."""
    node, _ = checking()
    first, last = chunks()
    node.step(first)
    settle(node)
    assert node.snapshot_check_due(last) and not node.snapshot_check_moot(last)
    node.step(Heartbeat(term=2, src="n1", dst="n2", commit=2, sender_incarnation="inc1"))
    settle(node)
    assert not node.snapshot_check_moot(last)  # the leader's heartbeats change nothing
    node.step(Heartbeat(term=3, src="n3", dst="n2", commit=0, sender_incarnation="inc3"))
    settle(node)
    assert node.snapshot_check_moot(last)  # a newer term: never followed again

    node, _ = checking()
    node.step(first)
    settle(node)
    newer_meta = SnapshotMeta(index=60, term=2, membership=M)
    other = attrs.evolve(first, meta=newer_meta, checksum=zlib.crc32(DATA[::-1]))
    node.step(other)  # another snapshot's first chunk: the partial copy is replaced
    settle(node)
    assert node.snapshot_check_moot(last)

    node, _ = checking()
    node.step(first)
    settle(node)
    one = attrs.evolve(first, meta=newer_meta, data=DATA, done=True)
    assert not node.snapshot_check_moot(one)  # a one-chunk snapshot needs no partial one
    node.step(one)  # installed: the commit passes index 50
    settle(node)
    assert node.status().commit >= 60 and node.snapshot_check_moot(last)
