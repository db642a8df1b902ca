"""A leader's stored snapshot damaged at rest (docs/storage.md, "Guarantees"): a chunk that
cannot be read (``SnapshotUnreadable`` from the runtime's source) ends that stream, never the
core's step; the core stops offering the snapshot and the follower waits, in SNAPSHOT, for the
next ``snapshot_taken`` (the runtime retakes it from its state, at the same index here), which
streams it; nothing is compacted meanwhile. ``snapshot_damaged`` does the same when the
runtime's scrub finds the damage first."""

from __future__ import annotations

import zlib

from harness import Cluster
from test_raft_snapshot import lagging, same_state, start_stream

from univrs.raft import InstallSnapshot, InstallSnapshotResponse, SnapshotMeta
from univrs.raft.ready import PeerStatus
from univrs.raft.snapshot import SnapshotUnreadable


class DamagedSource:
    """Snapshot data read on demand whose bytes from ``bad_from`` on cannot be read (as a
    ``FileSnapshot`` whose block there fails its CRC). Counts the reads that failed."""

    def __init__(self, data: bytes, bad_from: int) -> None:
        self._data = data
        self.crc32 = zlib.crc32(data)
        self._bad_from = bad_from
        self.failed = 0

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, key: slice, /) -> bytes:
        lo, hi, _ = key.indices(len(self._data))
        if hi > self._bad_from:
            self.failed += 1
            raise SnapshotUnreadable(f"block {self._bad_from // 4092}: checksum mismatch")
        return self._data[lo:hi]


def _leader_holding(bad_from: int) -> tuple[Cluster, SnapshotMeta, bytes, DamagedSource]:
    """``lagging()`` with n1 restarted and handed a damaged copy of its snapshot (as the
    runtime does at start: a source read on demand); n3 needs it."""
    c = lagging()
    c.isolate("n3")
    c.crash("n1")
    disk = c.disks["n1"]
    assert disk.snapshot is not None
    meta, data = disk.snapshot
    c.restart("n1", give_snapshot=False)
    source = DamagedSource(data, bad_from)
    c.nodes["n1"].snapshot_taken(meta, source)
    c.process("n1")
    c.crash("n2")
    c.restart("n2")  # (no leader lease left to refuse n1's election)
    c.elect("n1")
    c.heal()
    return c, meta, data, source


def _peer(c: Cluster, nid: str) -> PeerStatus:
    (peer,) = [p for p in c.status("n1").peers if p.id == nid]
    return peer


def _chunks_to_n3(c: Cluster) -> list[InstallSnapshot]:
    return [m for m in c.sent("n1", InstallSnapshot) if m.dst == "n3"]


def _installs_and_catches_up(c: Cluster, meta: SnapshotMeta) -> None:
    """n3 installs the snapshot at ``meta`` and catches up. (Not ``pump``: n3 may hold a
    part of the damaged stream, the same snapshot's first bytes, so the new stream rewinds
    forward to it while its first chunks are still in flight: more than the window.)"""
    for _ in range(100):
        if c.installed["n3"] and c.status("n3").applied == c.status("n1").applied:
            break
        c.tick_all(deliver=True)
    assert c.installed["n3"] and c.installed["n3"][0] == meta
    assert c.status("n3").applied == c.status("n1").applied
    assert same_state(c, "n3", "n1")


def test_a_damaged_chunk_ends_the_stream_and_a_retake_at_the_same_index_is_streamed() -> None:
    c, meta, data, source = _leader_holding(bad_from=200)
    first_index = c.status("n1").first_index
    # The stream starts, reaches the damaged bytes and ends there: the step returns (the old
    # core let SnapshotUnreadable out of it, which stopped the node).
    for _ in range(10):
        c.tick_all(deliver=True)
    assert source.failed == 1  # offered no more after the first failed read
    sent = _chunks_to_n3(c)
    assert sent and max(m.offset + len(m.data) for m in sent) <= 200
    assert not any(m.done for m in sent)
    assert _peer(c, "n3").state == "snapshot" and not c.installed["n3"]
    # Nothing was compacted because of it; the cluster still commits.
    assert c.status("n1").first_index == first_index
    c.propose("n1", b"during")
    c.tick_all(2, deliver=True)
    assert c.applied_data("n2")[-1] == b"during"
    # The runtime retook the snapshot from its state at the same index (a new, intact copy):
    # the waiting follower gets it, then the log.
    c.nodes["n1"].snapshot_taken(meta, data)
    c.process("n1")
    _installs_and_catches_up(c, meta)
    assert c.applied_data("n3")[-1] == b"during"


def test_snapshot_damaged_stops_offering_it_until_a_new_one_is_taken() -> None:
    # The scrub found the damage before any follower needed the snapshot.
    c, meta, data, _ = _leader_holding(bad_from=1 << 30)  # every read works
    core = c.nodes["n1"]
    other = SnapshotMeta(index=meta.index + 1, term=meta.term, membership=meta.membership)
    assert core.snapshot_damaged(other) is False  # not the one it holds: nothing changes
    assert core.snapshot_damaged(meta) is True
    assert core.snapshot_damaged(meta) is False  # already forgotten
    for _ in range(10):
        c.tick_all(deliver=True)
    assert _peer(c, "n3").state == "snapshot" and not _chunks_to_n3(c)
    core.snapshot_taken(meta, data)
    c.process("n1")
    _installs_and_catches_up(c, meta)


def test_a_stream_under_way_ends_when_its_snapshot_is_reported_damaged() -> None:
    c, meta, data, _ = _leader_holding(bad_from=1 << 30)
    start_stream(c)
    c.deliver(type=InstallSnapshot, limit=1)
    c.deliver(type=InstallSnapshotResponse)
    assert _peer(c, "n3").snapshot_acked > 0
    assert c.nodes["n1"].snapshot_damaged(meta) is True
    c.drop(type=InstallSnapshot)  # what was in flight is lost
    sent = len(_chunks_to_n3(c))
    for _ in range(3 * c.nodes["n1"].config.election_ticks_max):  # past the resume timeout
        c.tick_all(deliver=True)
    assert len(_chunks_to_n3(c)) == sent  # the stream ended: nothing resent
    assert _peer(c, "n3").state == "snapshot"
    c.nodes["n1"].snapshot_taken(meta, data)
    c.process("n1")
    _installs_and_catches_up(c, meta)
