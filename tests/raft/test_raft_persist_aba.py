"""A durable report of entries that a later write, still queued, truncates (s26 durability
audit): the core must not take them as durable.

``RaftNode.persisted(index, term)`` checks that its log still holds ``(index, term)``. That
names the written entry only while the log was never cut below ``index`` since: an entry of
term 2 replaced by a leader of term 3 and then put back by a leader of term 4 (which holds the
term-2 entries: Figure 8's kind of log) is ``(index, 2)`` again, but the write that deletes it
(term 3's) may still be on its way to the disk. Writes are merged (group commit), so the
deleting and the restoring writes normally go to storage as one; anything queued between them
(the node's own snapshot, a compaction: ``StorageTask``) keeps them apart, and the report of
the first write, taken before both, made the core hand the entries out to apply while the next
write was about to delete them from the disk: a crash then (even a process crash: the state
env's unsynced commit survives it) leaves ``state.lmdb`` ahead of the durable log, which the
next start refuses (univrs/server/statedir.py), and breaks "committed entries are handed out
only once durable locally" (ready.py step 5). The write queue, which knows what is still
queued, now withholds such a report (``WriteQueue.written``); the later writes report it.
"""

from __future__ import annotations

import random

from univrs.raft.interpreter import MergedWrite, PersistJob, WriteQueue, report_persisted
from univrs.raft.messages import AppendEntries, Entry, HardState, Membership
from univrs.raft.node import RaftNode
from univrs.raft.ready import InitialState, RaftConfig, Ready

MEMBERS = Membership(voters=frozenset({"n1", "n2", "n3", "n4", "n5"}))


def e(index: int, term: int) -> Entry:
    return Entry(index=index, term=term, data=b"x")


class Follower:
    """n3, a follower whose storage is a ``WriteQueue`` worked through by hand."""

    def __init__(self) -> None:
        init = InitialState(
            hard_state=HardState(term=1, commit=1),
            entries=(e(1, 1),),
            membership=MEMBERS,
            applied=1,
        )
        self.core = RaftNode(
            "n3", rng=random.Random(1), config=RaftConfig(pre_vote=False), initial=init
        )
        self.queue: WriteQueue[str] = WriteQueue()
        self.handed: list[Entry] = []

    def ready(self) -> Ready:
        rd = self.core.ready()
        self.handed.extend(rd.committed)
        if rd.hard_state is not None or rd.truncate_from is not None or rd.entries:
            self.queue.submit(
                PersistJob(
                    hard_state=rd.hard_state,
                    truncate_from=rd.truncate_from,
                    entries=rd.entries,
                    after_persist=rd.messages_after_persist,
                )
            )
        return rd

    def append(self, term: int, leader: str, entries: tuple[Entry, ...], commit: int) -> None:
        self.core.step(
            AppendEntries(
                term=term,
                src=leader,
                dst="n3",
                prev_log_index=1,
                prev_log_term=1,
                entries=entries,
                commit=commit,
            )
        )
        self.ready()

    def take(self) -> MergedWrite:
        w = self.queue.take()
        assert isinstance(w, MergedWrite)
        return w

    def durable(self, w: MergedWrite) -> None:
        p = self.queue.written(w)
        if p is not None:
            report_persisted(self.core, p)
        self.ready()


def test_a_report_of_entries_a_queued_write_truncates_is_not_taken_as_durable() -> None:
    n = Follower()
    n.append(2, "n1", (e(2, 2), e(3, 2)), commit=1)  # term 2's leader
    w1 = n.take()  # being written: entries 2, 3 of term 2
    n.append(3, "n2", (e(2, 3),), commit=1)  # term 3's leader replaces them
    n.queue.submit("own snapshot")  # the snapshotter's item, between two writes
    # Term 4's leader holds the term-2 entries: it puts them back and commits up to its own.
    n.append(4, "n4", (e(2, 2), e(3, 2), e(4, 4)), commit=4)
    assert n.core.status().commit == 4 and n.handed == []

    n.durable(w1)  # the disk now holds 2, 3 of term 2 ...
    w2 = n.take()
    assert w2.truncate_from == 2 and w2.entries == (e(2, 3),)  # ... which w2 deletes
    # Whatever the core claims durable must survive w2 on the disk: only entry 1 does.
    assert n.core.status().persisted == 1, "took (3, 2) as durable while w2 deletes it"
    assert n.handed == []  # nothing handed out to apply yet

    n.durable(w2)
    assert n.queue.take() == "own snapshot"
    w3 = n.take()
    assert w3.truncate_from == 2 and w3.entries == (e(2, 2), e(3, 2), e(4, 4))
    n.durable(w3)
    assert n.core.status().persisted == 4
    assert n.handed == [e(2, 2), e(3, 2), e(4, 4)]


def test_without_anything_between_them_the_writes_merge_and_nothing_is_withheld() -> None:
    n = Follower()
    n.append(2, "n1", (e(2, 2), e(3, 2)), commit=1)
    w1 = n.take()
    n.append(3, "n2", (e(2, 3),), commit=1)
    n.append(4, "n4", (e(2, 2), e(3, 2), e(4, 4)), commit=4)
    n.durable(w1)
    merged = n.take()  # one write: the disk goes from w1's log to term 4's directly
    assert merged.jobs == 2 and merged.truncate_from == 2
    n.durable(merged)
    assert n.core.status().persisted == 4
    assert n.handed == [e(2, 2), e(3, 2), e(4, 4)]
