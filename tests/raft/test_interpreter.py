"""The one interpreter of the Ready contract: the order of its effects and the write queue."""

from __future__ import annotations

import attrs

from univrs.raft import Entry, HardState, Membership, ReadState, Ready, SnapshotMeta
from univrs.raft.interpreter import (
    InstallJob,
    MergedWrite,
    Persisted,
    PersistJob,
    WriteQueue,
    execute,
    installed,
    report_persisted,
)
from univrs.raft.messages import Heartbeat, Message
from univrs.raft.ready import Role, SnapshotInstall, SoftState

M = Membership(voters=frozenset("a"))


def e(index: int, term: int) -> Entry:
    return Entry(index=index, term=term)


def msg(dst: str) -> Message:
    return Heartbeat(src="a", dst=dst, term=2, commit=0)


@attrs.define
class Recorder:
    calls: list[tuple[object, ...]] = attrs.field(factory=list)

    def soft_state_changed(self, soft: SoftState) -> None:
        self.calls.append(("soft", soft.role))

    def restore_snapshot(self, install: SnapshotInstall, job: InstallJob) -> None:
        self.calls.append(("restore", install.meta.index, job.meta.index))

    def send(self, m: Message) -> None:
        self.calls.append(("send", m.dst))

    def submit_write(self, job: PersistJob) -> None:
        self.calls.append(("write", job.entries, tuple(m.dst for m in job.after_persist)))

    def apply_committed(self, entries: tuple[Entry, ...]) -> None:
        self.calls.append(("apply", entries))

    def read_ready(self, ctx: int, index: int) -> None:
        self.calls.append(("read", ctx, index))

    def read_dropped(self, ctx: int) -> None:
        self.calls.append(("dropped", ctx))


def test_execute_follows_the_contract_order() -> None:
    meta = SnapshotMeta(index=5, term=2, membership=Membership(voters=frozenset("a")))
    rd = Ready(
        soft_state=SoftState(role=Role.FOLLOWER, leader="b", term=2),
        snapshot=SnapshotInstall(meta=meta, data=b"s"),
        messages=(msg("b"), msg("c")),
        entries=(e(6, 2),),
        messages_after_persist=(msg("d"),),
        committed=(e(6, 2),),
        reads=(ReadState(ctx=7, index=6),),
        dropped_reads=(8,),
    )
    fx = Recorder()
    execute(rd, fx)
    assert fx.calls == [
        ("soft", Role.FOLLOWER),
        ("restore", 5, 5),  # state machine and storage first
        ("send", "b"),
        ("send", "c"),
        ("write", (e(6, 2),), ("d",)),
        ("apply", (e(6, 2),)),
        ("read", 7, 6),
        ("dropped", 8),
    ]


def test_messages_after_persist_alone_still_make_a_write() -> None:
    # Nothing to store, but the ack must wait for every earlier write (FIFO).
    fx = Recorder()
    execute(Ready(messages_after_persist=(msg("b"),)), fx)
    assert fx.calls == [("write", (), ("b",))]
    fx = Recorder()
    execute(Ready(messages=(msg("b"),)), fx)
    assert fx.calls == [("send", "b")]


def job(hs: HardState | None, *entries: Entry, trunc: int | None = None) -> PersistJob:
    return PersistJob(hard_state=hs, truncate_from=trunc, entries=entries, after_persist=())


def test_the_queue_merges_consecutive_writes_but_not_across_other_work() -> None:
    q: WriteQueue[str] = WriteQueue()
    q.submit(job(HardState(term=2), e(1, 2)))
    q.submit(job(None, e(2, 2)))
    q.submit("own snapshot")
    q.submit(InstallJob(meta=SnapshotMeta(index=9, term=2, membership=M), data=b""))
    q.submit(job(None, e(10, 2)))
    first = q.take()
    assert isinstance(first, MergedWrite) and first.jobs == 2
    assert first.entries == (e(1, 2), e(2, 2))
    assert q.written(first) == Persisted(index=2, term=2, hard_state=HardState(term=2))
    assert q.take() == "own snapshot"
    install = q.take()
    assert isinstance(install, InstallJob) and installed(install) == Persisted(index=9, term=2)
    last = q.take()
    assert isinstance(last, MergedWrite) and last.entries == (e(10, 2),)
    assert q.idle


def test_a_commit_only_hard_state_waits_for_the_next_synced_write() -> None:
    q: WriteQueue[None] = WriteQueue()
    q.submit(job(HardState(term=2, vote="a", commit=1), e(1, 2)))
    w = q.take()
    assert isinstance(w, MergedWrite)
    q.written(w)
    q.submit(job(HardState(term=2, vote="a", commit=2)))
    w = q.take()
    assert isinstance(w, MergedWrite) and not w.stores  # deferred: nothing to sync
    assert q.written(w) is None
    q.submit(job(None, e(2, 2)))
    w = q.take()
    assert isinstance(w, MergedWrite) and w.hard_state == HardState(term=2, vote="a", commit=2)
    q.written(w)
    q.submit(job(HardState(term=3, commit=2)))  # a new term always syncs, and is reported
    w = q.take()
    assert isinstance(w, MergedWrite) and w.stores
    assert q.written(w) == Persisted(index=0, term=0, hard_state=HardState(term=3, commit=2))


def test_a_new_pin_syncs_and_is_reported_like_a_term() -> None:
    # A hard state whose only change is a new pin (HardState.pins) is not a commit-only one:
    # the core holds every message until it hears the pin is durable (node.py ``ready``), so
    # deferring it would hold them until some later write synced anyway.
    q: WriteQueue[None] = WriteQueue()
    q.submit(job(HardState(term=2, vote="a", commit=1), e(1, 2)))
    w = q.take()
    assert isinstance(w, MergedWrite)
    q.written(w)
    pinned = HardState(term=2, vote="a", commit=1, pins=(("n2", "inc2"),))
    q.submit(job(pinned))
    w = q.take()
    assert isinstance(w, MergedWrite) and w.stores and w.hard_state == pinned
    assert q.written(w) == Persisted(index=0, term=0, hard_state=pinned)
    q.submit(job(attrs.evolve(pinned, commit=2)))  # then a commit-only change defers again
    w = q.take()
    assert isinstance(w, MergedWrite) and not w.stores


def test_reports_give_the_hard_state_before_the_entry() -> None:
    @attrs.define
    class Core:
        calls: list[str] = attrs.field(factory=list)

        def persisted(self, index: int, term: int) -> None:
            self.calls.append(f"persisted {index} {term}")

        def persisted_hard_state(self, hard_state: HardState) -> None:
            self.calls.append(f"hard state {hard_state.term}")

    core = Core()
    report_persisted(core, Persisted(index=4, term=3, hard_state=HardState(term=3)))
    report_persisted(core, Persisted(index=0, term=0, hard_state=HardState(term=4)))
    report_persisted(core, Persisted(index=5, term=4))
    assert core.calls == ["hard state 3", "persisted 4 3", "hard state 4", "persisted 5 4"]
