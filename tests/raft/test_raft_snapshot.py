"""Snapshots, compaction and InstallSnapshot streaming (dissertation 5), as transcripts."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

import attrs
import pytest
from disk import encode_state
from harness import Cluster, entries_with_terms

from univrs.raft import (
    AppendEntries,
    HardState,
    Heartbeat,
    InitialState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    RaftConfig,
    RaftNode,
    RequestVote,
    SnapshotMeta,
    bootstrap_state,
)

WINDOW = 2
CHUNKED = RaftConfig(snapshot_chunk_bytes=64, snapshot_window=WINDOW)
M3 = Membership(voters=frozenset({"n1", "n2", "n3"}))


def lagging(config: RaftConfig = CHUNKED, writes: int = 30) -> Cluster:
    """n1 leads; n3 missed ``writes`` entries that n1 then compacted away (n3 now healed)."""
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=config)
    c.elect("n1")
    c.tick_all(2, deliver=True)
    c.isolate("n3")
    for i in range(writes):
        c.propose("n1", f"value-{i:03}".encode())
    c.tick_all(2, deliver=True)
    upto = c.snapshot("n1")
    assert upto == c.status("n1").applied > c.status("n3").last_index
    c.heal()
    return c


def chunks_to(c: Cluster, dst: str) -> list[InstallSnapshot]:
    return [
        m for m in c.sent("n1", InstallSnapshot) if isinstance(m, InstallSnapshot) and m.dst == dst
    ]


def pump(c: Cluster, until: Callable[[], bool], *, rounds: int = 100) -> None:
    """Tick every node and deliver one message at a time until ``until()``; after every
    delivery, at most WINDOW snapshot chunks are in flight."""
    for _ in range(rounds):
        if until():
            return
        c.tick_all()
        for _ in range(10_000):
            assert len(c.in_flight(type=InstallSnapshot)) <= WINDOW
            if not c.deliver(limit=1):
                break
    assert until(), f"condition not reached in {rounds} rounds: {c.transcript[-5:]}"


def start_stream(c: Cluster) -> None:
    """Tick the leader until its first snapshot chunks to n3 are in flight."""
    for _ in range(20):
        if c.in_flight(type=InstallSnapshot):
            return
        c.tick("n1")
        c.deliver(type=(Heartbeat, AppendEntries))
        c.deliver(src="n3")
    raise AssertionError("no snapshot stream started")


def same_state(c: Cluster, a: str, b: str) -> bool:
    return c.applied_data(a) == c.applied_data(b)


# ---- compaction ---------------------------------------------------------------------------


def test_snapshot_compacts_the_log_keeping_a_margin() -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    for i in range(20):
        c.propose("n1", f"w{i}".encode())
    c.tick_all(2, deliver=True)
    applied = c.status("n1").applied
    assert c.status("n1").first_index == 1
    upto = c.snapshot("n1", keep=5)
    st = c.status("n1")
    assert upto == applied - 5
    assert (st.first_index, st.snapshot_index) == (upto + 1, applied)
    assert c.disk_log("n1")[0].index == upto + 1  # storage compacted to the same point
    # A second snapshot without a margin compacts to the applied index.
    assert c.snapshot("n1") == applied
    assert c.status("n1").first_index == applied + 1
    # The cluster goes on.
    c.propose("n1", b"after")
    c.tick_all(2, deliver=True)
    assert all(c.applied_data(n)[-1] == b"after" for n in ("n1", "n2", "n3"))


class CompactAnything(RaftNode):
    """A broken limit: compacts whatever the runtime asks, applied or not."""

    def _compaction_limit(self) -> int:
        return self._log.last_index


def test_compaction_never_passes_what_is_applied_and_committed() -> None:
    def run(cls: type[RaftNode]) -> tuple[int, int]:
        m = Membership(voters=frozenset({"n1"}))
        node = cls("n1", rng=random.Random(1), initial=bootstrap_state(m))
        node.campaign()
        node.propose_many([f"e{i}".encode() for i in range(8)])
        handed = 0
        for _ in range(5):
            rd = node.ready()
            if rd.entries:
                node.persisted(rd.entries[-1].index, rd.entries[-1].term)
            if rd.committed:
                handed = rd.committed[-1].index
        assert handed == 10 and node.status().commit == 10
        node.applied(3)  # the state machine is ahead of what it reported (async reports)
        meta = SnapshotMeta(index=handed, term=2, membership=m)
        with pytest.raises(ValueError, match="beyond the entries handed out"):
            node.snapshot_taken(attrs.evolve(meta, index=11), b"x")
        upto = node.snapshot_taken(meta, b"state")
        return upto, node.status().first_index

    assert run(RaftNode) == (3, 4)  # the limit binds: min(applied, commit)
    assert run(CompactAnything) == (10, 11)  # the same check fails against a broken limit


def follow(c: Cluster, node: str, leader: str = "n1") -> None:
    """``node`` hears ``leader``'s heartbeat of its term (commit 0), and so follows it: a node
    takes snapshot data only from the leader it follows in its term."""
    term = c.status(node).term
    c.nodes[node].step(Heartbeat(term=term, src=leader, dst=node, commit=0))
    c.process(node)
    assert c.status(node).leader == leader
    c.drop()


# ---- streaming ----------------------------------------------------------------------------


def test_lagging_follower_gets_the_snapshot_in_chunks_within_the_window() -> None:
    c = lagging()
    snap_index = c.status("n1").snapshot_index
    pump(c, lambda: bool(c.installed["n3"]) and c.status("n3").applied >= snap_index)
    (meta,) = c.installed["n3"]
    assert meta.index == snap_index
    chunks = chunks_to(c, "n3")
    assert len(chunks) >= 5 and all(len(m.data) <= 64 for m in chunks)
    assert [m.offset for m in chunks] == sorted({m.offset for m in chunks})  # none resent
    assert chunks[-1].done and chunks[-1].total_size == sum(len(m.data) for m in chunks)
    pump(c, lambda: c.status("n3").applied == c.status("n1").applied)
    assert same_state(c, "n3", "n1")
    st = c.status("n3")
    assert st.first_index == snap_index + 1 and st.snapshot_index == snap_index
    assert c.disks["n3"].snapshot is not None and c.disks["n3"].snapshot[0] == meta
    # n3 then replicates from the log again.
    c.propose("n1", b"later")
    c.tick_all(3, deliver=True)
    assert c.applied_data("n3")[-1] == b"later"
    (peer,) = [p for p in c.status("n1").peers if p.id == "n3"]
    assert peer.state == "replicate" and peer.match == c.status("n1").last_index


def test_leader_reports_stream_progress_per_peer() -> None:
    c = lagging()
    start_stream(c)
    c.deliver(type=InstallSnapshot, limit=1)
    c.deliver(type=InstallSnapshotResponse)
    (peer,) = [p for p in c.status("n1").peers if p.id == "n3"]
    assert peer.state == "snapshot" and peer.snapshot_acked == 64
    assert peer.snapshot_size > 64 and 1 <= peer.inflight <= WINDOW


def test_dropped_chunk_resumes_from_the_acknowledged_offset() -> None:
    c = lagging()
    start_stream(c)
    c.deliver(type=InstallSnapshot, limit=1)  # offset 0
    c.deliver(type=InstallSnapshotResponse)  # acked 64; the window lets offset 128 go out
    at_64 = lambda m: isinstance(m, InstallSnapshot) and m.offset == 64  # noqa: E731
    assert c.drop(type=InstallSnapshot, where=at_64) == 1
    c.deliver(type=InstallSnapshot)  # offset 128: out of order, n3 answers "I hold 64"
    c.deliver(type=InstallSnapshotResponse)
    resent = [m.offset for m in c.in_flight(type=InstallSnapshot)]
    assert resent and resent[0] == 64  # resumed at the acknowledged offset, not at 0
    pump(c, lambda: bool(c.installed["n3"]))
    offsets = [m.offset for m in chunks_to(c, "n3")]
    assert offsets.count(0) == 1 and offsets.count(64) == 2
    pump(c, lambda: c.status("n3").applied == c.status("n1").applied)
    assert same_state(c, "n3", "n1")


def test_lost_connection_resumes_after_silence() -> None:
    c = lagging()
    start_stream(c)
    c.deliver(type=InstallSnapshot, limit=1)
    c.deliver(type=InstallSnapshotResponse)  # 64 acknowledged
    # The bulk connection drops: every chunk and ack in flight is lost.
    c.drop(type=(InstallSnapshot, InstallSnapshotResponse))
    before = len(chunks_to(c, "n3"))
    ticks = 0
    while len(chunks_to(c, "n3")) == before:
        ticks += 1
        assert ticks <= CHUNKED.election_ticks_max, "the stream never resumed"
        c.tick("n1")
        c.deliver(type=Heartbeat)  # the control lane still works
        c.deliver(src="n3")
    assert ticks >= CHUNKED.election_ticks_max - 1  # it waited for silence first
    assert chunks_to(c, "n3")[before].offset == 64
    pump(c, lambda: c.status("n3").applied == c.status("n1").applied)
    assert same_state(c, "n3", "n1")


def test_corrupt_snapshot_is_rejected_resent_from_zero_and_old_state_kept() -> None:
    c = lagging()
    start_stream(c)
    before = c.status("n3")

    def corrupt(m: InstallSnapshot) -> InstallSnapshot:
        return attrs.evolve(m, data=bytes(b ^ 0xFF for b in m.data))

    corrupted = False
    for _ in range(200):
        if not c.network:
            c.tick("n1")
        m = c.network[0]
        if isinstance(m, InstallSnapshot) and m.offset == 64 and not corrupted:
            c.network[0] = corrupt(m)  # same length, wrong bytes: only the crc can tell
            corrupted = True
        if isinstance(m, InstallSnapshot) and m.done and not c.installed["n3"]:
            c.deliver_one()
            # The complete data failed verification: nothing changed, and n3 asks for 0.
            assert c.status("n3").commit == before.commit
            assert c.status("n3").last_index == before.last_index
            assert c.applied["n3"][-1].index == before.applied
            assert c.disks["n3"].snapshot is None
            (answer,) = c.in_flight(type=InstallSnapshotResponse)
            assert isinstance(answer, InstallSnapshotResponse)
            assert (answer.success, answer.offset) == (False, 0)
            break
        c.deliver_one()
    else:
        raise AssertionError("the last chunk never came")
    pump(c, lambda: bool(c.installed["n3"]))
    offsets = [m.offset for m in chunks_to(c, "n3")]
    assert offsets.count(0) == 2  # started over
    pump(c, lambda: c.status("n3").applied == c.status("n1").applied)
    assert same_state(c, "n3", "n1")


def test_heartbeats_flow_during_a_stalled_stream_and_no_election_starts() -> None:
    c = lagging()
    start_stream(c)
    term = c.status("n3").term
    for _ in range(3 * CHUNKED.election_ticks_max):
        c.tick_all()
        # Chunks and their answers are stuck in the bulk lane; everything else flows.
        c.deliver(type=(Heartbeat, AppendEntries))
        c.deliver(where=lambda m: not isinstance(m, (InstallSnapshot, InstallSnapshotResponse)))
    assert c.sent("n3", RequestVote) == []
    assert c.status("n3").term == term and c.status("n3").leader == "n1"
    assert c.leader() == "n1"
    # The stalled bulk connection is reset (what was queued on it is lost); the stream resumes.
    c.drop(type=(InstallSnapshot, InstallSnapshotResponse))
    pump(c, lambda: c.status("n3").applied == c.status("n1").applied)


def test_follower_that_has_the_entries_keeps_its_suffix() -> None:
    # n3 holds entries 1-7 (the last two uncommitted as far as it knows); the snapshot covers
    # 1-5 with the same terms: Figure 13 step 6 keeps 6-7.
    logs = {"n1": [1, 1, 1, 2, 2, 2, 2], "n2": [1, 1, 1, 2, 2, 2, 2], "n3": [1, 1, 1, 2, 2, 2, 2]}
    c = Cluster.with_logs(logs, terms=dict.fromkeys(logs, 2))
    snapshot_entries = entries_with_terms([1, 1, 1, 2, 2])
    data = encode_state(snapshot_entries)
    meta = SnapshotMeta(index=5, term=2, membership=c.status("n3").membership)
    chunk = InstallSnapshot(
        term=2,
        src="n1",
        dst="n3",
        meta=meta,
        offset=0,
        data=data,
        done=True,
        total_size=len(data),
        checksum=zlib.crc32(data),
    )
    follow(c, "n3")
    c.nodes["n3"].step(chunk)
    c.process("n3")
    st = c.status("n3")
    assert (st.first_index, st.last_index, st.commit, st.applied) == (6, 7, 5, 5)
    assert [e.index for e in c.disk_log("n3") if e.index > 5] == [6, 7]  # the suffix stays
    assert c.installed["n3"] == [meta]
    (answer,) = c.in_flight(type=InstallSnapshotResponse)
    assert isinstance(answer, InstallSnapshotResponse) and answer.success
    # A log whose entry at the snapshot index has another term is dropped whole.
    logs["n2"] = [1, 1, 1, 1, 1, 1, 1, 1]
    c2 = Cluster.with_logs(logs, terms=dict.fromkeys(logs, 2))
    follow(c2, "n2")
    c2.nodes["n2"].step(attrs.evolve(chunk, dst="n2"))
    c2.process("n2")
    st = c2.status("n2")
    assert (st.first_index, st.last_index, st.commit) == (6, 5, 5)
    assert c2.disk_log("n2") == []
    # A snapshot at or below the commit index is acknowledged without installing.
    c3 = Cluster(
        {
            "n3": InitialState(
                hard_state=HardState(term=2, commit=6),
                entries=entries_with_terms(logs["n3"]),
                membership=meta.membership,
            )
        }
    )
    c3.nodes["n3"].step(chunk)
    c3.process("n3")
    assert c3.installed["n3"] == [] and c3.status("n3").first_index == 1
    (answer,) = c3.in_flight(type=InstallSnapshotResponse)
    assert isinstance(answer, InstallSnapshotResponse)
    assert answer.success and answer.offset == len(data)


def test_restarted_nodes_load_their_snapshot_and_a_restarted_leader_streams_it() -> None:
    c = lagging()
    c.isolate("n3")
    c.snapshot("n2")
    snap_index = c.status("n1").snapshot_index
    for n in ("n1", "n2"):
        c.crash(n)
        c.restart(n)
        st = c.status(n)
        assert (st.snapshot_index, st.first_index, st.applied) == (
            snap_index,
            snap_index + 1,
            snap_index,
        )
    c.elect("n1")
    c.heal()
    pump(c, lambda: bool(c.installed["n3"]))
    assert c.installed["n3"][0].index == snap_index
    pump(c, lambda: c.status("n3").applied == c.status("n1").applied)
    assert same_state(c, "n3", "n1") and same_state(c, "n2", "n1")


def test_leader_without_snapshot_data_waits_for_it() -> None:
    # A leader whose log starts after a snapshot it was not given the data of yet (start-up,
    # before the runtime calls snapshot_taken): the lagging follower waits, then gets it.
    c = lagging()
    c.isolate("n3")
    c.crash("n1")
    disk = c.disks["n1"]
    assert disk.snapshot is not None
    meta, data = disk.snapshot
    c.restart("n1", give_snapshot=False)  # the runtime has not handed the data over yet ...
    c.crash("n2")
    c.restart("n2")  # (no leader lease left to refuse n1's election)
    c.elect("n1")
    c.heal()
    for _ in range(5):
        c.tick_all(deliver=True)
    (peer,) = [p for p in c.status("n1").peers if p.id == "n3"]
    assert peer.state == "snapshot" and not c.in_flight(type=InstallSnapshot)
    c.nodes["n1"].snapshot_taken(meta, data)  # ... which arrives now
    c.process("n1")
    pump(c, lambda: bool(c.installed["n3"]))
    assert c.installed["n3"][0] == meta


def test_installed_answer_waits_for_the_snapshot_to_be_durable() -> None:
    c = lagging()
    c.hold_disk("n3")
    pump(c, lambda: bool(c.installed["n3"]))
    c.deliver()  # everything in flight, answers included: n3 has not said "installed" yet
    total = chunks_to(c, "n3")[-1].total_size

    def installed_answers() -> list[InstallSnapshotResponse]:
        return [
            m
            for m in c.in_flight(type=InstallSnapshotResponse)
            if isinstance(m, InstallSnapshotResponse) and m.success and m.offset == total
        ]

    assert installed_answers() == []
    assert c.disks["n3"].snapshot is None
    # The runtime must not store a snapshot of its own at that index before the install's
    # write is durable (storage would lack what it covers).
    (meta,) = c.installed["n3"]
    with pytest.raises(ValueError, match="beyond the durable log"):
        c.nodes["n3"].snapshot_taken(meta, b"state")
    (peer,) = [p for p in c.status("n1").peers if p.id == "n3"]
    assert peer.state == "snapshot"
    c.release_disk("n3")
    assert c.disks["n3"].snapshot is not None and len(installed_answers()) >= 1
    pump(c, lambda: c.status("n3").applied == c.status("n1").applied)
