"""Backup files, restoring a new cluster's data dirs from one, and lost-quorum recovery
(issue 13, items 1 and 2): the storage side, with real LMDB in tmp_path."""

from __future__ import annotations

import pathlib
import random

import pytest

from univrs import codec
from univrs.errors import StorageError
from univrs.raft import RaftNode, bootstrap_state
from univrs.raft.messages import Entry, EntryKind, HardState, Membership, encode_membership
from univrs.raft.ready import RaftConfig, Role
from univrs.runtime.snapshots import restore as restore_sm
from univrs.sm.commands import CreateWorkload, Envelope, MintCredits, OpenSession
from univrs.sm.model import WorkloadSpec
from univrs.sm.responses import Created
from univrs.sm.snapshot import snapshot_plain, state_digest
from univrs.sm.state import ClusterStateMachine
from univrs.storage import LogStore
from univrs.storage.backup import (
    BackupHeader,
    BackupReceiver,
    BadBackup,
    decode_state,
    describe,
    read_backup,
    stream_chunks,
)
from univrs.storage.recover import force_new_cluster, inspect_data_dir
from univrs.storage.restore import Member, restore_data_dir

OLD = Membership(
    voters=frozenset({"n1", "n2", "n3"}),
    addresses=(("n1", "127.0.0.1:7001"), ("n2", "127.0.0.1:7002"), ("n3", "127.0.0.1:7003")),
    incarnations=(("n1", "aaaa"), ("n2", "bbbb"), ("n3", "cccc")),
)


def a_state(objects: int = 50) -> ClusterStateMachine:
    sm = ClusterStateMachine()
    opened = sm.apply(Envelope(command=OpenSession()), index=1, term=3, time_ms=1000)
    assert isinstance(opened, Created)
    client = opened.id
    index = 1
    for i in range(objects):
        index += 1
        spec = WorkloadSpec(name=f"w{i}", image="img")
        cmd = Envelope(command=CreateWorkload(id=f"w{i}", spec=spec), client_id=client, seq=i + 1)
        sm.apply(cmd, index=index, term=3, time_ms=1000 + i)
    index += 1
    sm.apply(Envelope(command=MintCredits(to_peer="p", amount=7, reason="r")), index=index, term=3)
    return sm


def write_backup(path: pathlib.Path, sm: ClusterStateMachine, *, chunk: int = 1000) -> bytes:
    data = codec.encode_plain(snapshot_plain(sm))
    header = BackupHeader(
        cluster_id="old-cluster",
        index=sm.last_applied_index,
        term=sm.last_applied_term,
        membership=OLD,
        node="n2",
        created_ms=1,
        size=len(data),
        version="test",
    )
    with BackupReceiver(path) as receiver:
        for part in stream_chunks(header, data, chunk=chunk):
            receiver.feed(part)
        receiver.finish()
    return data


def test_a_backup_round_trips_and_describes_itself(tmp_path: pathlib.Path) -> None:
    sm = a_state()
    path = tmp_path / "b.snap"
    data = write_backup(path, sm)
    assert not (tmp_path / "b.snap.tmp").exists()
    backup = read_backup(path)
    assert backup.data == data
    assert backup.header.index == sm.last_applied_index and backup.header.membership == OLD
    restored = decode_state(backup)
    assert state_digest(restored) == state_digest(sm)
    doc = describe(backup, restored)
    assert doc["checksum"] == "ok" and doc["cluster_id"] == "old-cluster"
    assert doc["objects"]["workloads"] == 50 and doc["objects"]["sessions"] == 1
    assert doc["file_bytes"] == path.stat().st_size


def test_a_backup_file_is_private_and_a_planted_tmp_is_not_followed(
    tmp_path: pathlib.Path,
) -> None:
    """Red team: ``snapshot save`` wrote the whole state (workload env values, sessions, token
    hashes) 0644, and opened ``FILE.tmp`` with ``open(..., "wb")``, writing through a symbolic
    link planted there (in a shared folder: any file the saving user may write). Now 0600, and
    a leftover ``.tmp`` is removed first, never written through."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = tmp_path / "b.snap"
    (tmp_path / "b.snap.tmp").symlink_to(victim)
    write_backup(path, a_state())
    assert victim.read_bytes() == b"precious"
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_backup(path).header.index == a_state().last_applied_index


@pytest.mark.parametrize("where", ["magic", "header", "data", "digest", "end"])
def test_a_flipped_bit_anywhere_is_refused(tmp_path: pathlib.Path, where: str) -> None:
    path = tmp_path / "b.snap"
    write_backup(path, a_state())
    raw = bytearray(path.read_bytes())
    at = {"magic": 3, "header": 30, "data": len(raw) // 2, "digest": -40, "end": -3}[where]
    raw[at] ^= 0x04
    path.write_bytes(bytes(raw))
    with pytest.raises(BadBackup):
        read_backup(path)


def test_a_truncated_or_extended_file_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "b.snap"
    write_backup(path, a_state())
    raw = path.read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(BadBackup, match=r"truncated|magic"):
            read_backup(path)
    path.write_bytes(raw + b"x")
    with pytest.raises(BadBackup, match="after the trailer"):
        read_backup(path)


def test_a_stream_cut_short_leaves_no_file(tmp_path: pathlib.Path) -> None:
    sm = a_state()
    data = codec.encode_plain(snapshot_plain(sm))
    header = BackupHeader(
        cluster_id="c", index=sm.last_applied_index, term=3, membership=OLD, node="n1",
        created_ms=1, size=len(data), version="t",
    )  # fmt: skip
    path = tmp_path / "b.snap"
    parts = list(stream_chunks(header, data, chunk=100))
    with pytest.raises(BadBackup), BackupReceiver(path) as receiver:
        for part in parts[:-1]:
            receiver.feed(part)
        receiver.finish()
    assert not path.exists() and not (tmp_path / "b.snap.tmp").exists()


def test_restore_builds_data_dirs_of_a_new_cluster(tmp_path: pathlib.Path) -> None:
    sm = a_state()
    path = tmp_path / "b.snap"
    write_backup(path, sm)
    backup = read_backup(path)
    members = [
        Member(id=f"r{i}", raft_addr=f"127.0.0.1:{9000 + i}", api_addr=f"127.0.0.1:{9100 + i}")
        for i in (1, 2, 3)
    ]
    with pytest.raises(StorageError, match="initial-cluster-token"):
        restore_data_dir(backup, tmp_path / "r1", node_id="r1", members=members)
    results = [
        restore_data_dir(backup, tmp_path / f"r{i}", node_id=f"r{i}", members=members, token="t1")
        for i in (1, 2, 3)
    ]
    assert len({r.cluster_id for r in results}) == 1  # every member computes the same id
    # Another restore of the same file onto the same addresses is another cluster.
    other = restore_data_dir(backup, tmp_path / "o1", node_id="r1", members=members, token="t2")
    assert other.cluster_id != results[0].cluster_id
    assert results[0].cluster_id != "old-cluster"
    assert len({r.incarnation for r in results}) == 3  # and has its own new incarnation
    with LogStore.open(tmp_path / "r2", node_id="r2", create=False) as store:
        assert store.cluster_id == results[0].cluster_id
        initial = store.initial_state()
        assert initial.snapshot is not None and initial.snapshot.index == sm.last_applied_index
        m = initial.membership
        assert m.voters == {"r1", "r2", "r3"} and not m.incarnations
        assert m.api_address_of("r3") == "127.0.0.1:9103"
        assert initial.hard_state == HardState(term=3, vote=None, commit=sm.last_applied_index)
        loaded = store.load_snapshot()
        assert loaded is not None
        assert state_digest(restore_sm(loaded[1])) == state_digest(sm)


def test_restore_refuses_a_used_data_dir_and_a_foreign_node(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "b.snap"
    write_backup(path, a_state())
    backup = read_backup(path)
    members = [Member(id="r1", raft_addr="127.0.0.1:9001")]
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(StorageError, match="not empty"):
        restore_data_dir(backup, tmp_path / "used", node_id="r1", members=members)
    with pytest.raises(StorageError, match="not one of the members"):
        restore_data_dir(backup, tmp_path / "d", node_id="r9", members=members)
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ recovery


def a_member_data_dir(path: pathlib.Path, *, last: int, commit: int) -> str:
    """n1's data dir in a 3-voter cluster: bootstrap config, entries up to ``last`` (term 2),
    commit at ``commit``; returns its incarnation."""
    with LogStore.open(path, node_id="n1", cluster_id="prod") as store:
        initial = bootstrap_state(OLD)
        entries = list(initial.entries) + [
            Entry(term=2, index=i, kind=EntryKind.NORMAL, data=b"w%d" % i)
            for i in range(initial.entries[-1].index + 1, last + 1)
        ]
        store.append(
            hard_state=HardState(term=2, vote="n2", commit=commit),
            truncate_from=None,
            entries=entries,
        )
        return store.incarnation


def test_recover_keeps_every_entry_and_makes_a_one_voter_cluster(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "n1"
    old_incarnation = a_member_data_dir(d, last=20, commit=15)
    before = inspect_data_dir(d)
    assert (before.last_index, before.commit, before.voters) == (20, 15, ("n1", "n2", "n3"))
    result = force_new_cluster(d)
    assert result.incarnation != old_incarnation and result.config_index == 21
    with LogStore.open(d, node_id="n1", create=False) as store:
        assert store.cluster_id == result.cluster_id != "prod"  # a new one
        assert store.incarnation == result.incarnation
        initial = store.initial_state()
        # Entries 16-20 were not known to be committed here: they are kept and committed.
        assert [e.index for e in initial.entries] == list(range(1, 22))
        assert initial.hard_state == HardState(term=3, vote="n1", commit=21)
        m = initial.membership
        assert m.voters == {"n1"} and not m.learners
        assert m.incarnations == (("n1", result.incarnation),)
        assert m.address_of("n1") == "127.0.0.1:7001"
    # The core elects itself at once and commits past everything.
    node = RaftNode(
        "n1",
        rng=random.Random(1),
        config=RaftConfig(heartbeat_ticks=3, election_ticks_min=6, election_ticks_max=10),
        initial=initial,
        incarnation=result.incarnation,
    )
    node.campaign()
    assert node.status().role is Role.LEADER
    assert node.status().commit >= 21


def test_recover_is_refused_while_the_node_runs_and_for_a_removed_node(
    tmp_path: pathlib.Path,
) -> None:
    d = tmp_path / "n1"
    a_member_data_dir(d, last=5, commit=5)
    with LogStore.open(d, node_id="n1", create=False), pytest.raises(StorageError, match="lock"):
        force_new_cluster(d)
    # n1 removed: its newest configuration no longer lists it.
    with LogStore.open(d, node_id="n1", create=False) as store:
        gone = Membership(voters=frozenset({"n2", "n3"}), addresses=OLD.addresses)
        store.append(
            hard_state=None,
            truncate_from=None,
            entries=[Entry(term=2, index=6, kind=EntryKind.CONFIG, data=encode_membership(gone))],
        )
    with pytest.raises(StorageError, match="was removed"):
        force_new_cluster(d)
    assert inspect_data_dir(d).last_index == 6  # nothing was written


def test_recover_takes_a_given_cluster_id_but_never_the_old_one(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "n1"
    a_member_data_dir(d, last=5, commit=5)
    with pytest.raises(StorageError, match="new cluster id"):
        force_new_cluster(d, cluster_id="prod")
    assert force_new_cluster(d, cluster_id="prod-2").cluster_id == "prod-2"
    with LogStore.open(d, node_id="n1", cluster_id="prod-2", create=False):
        pass


def test_recover_refuses_an_empty_data_dir(tmp_path: pathlib.Path) -> None:
    LogStore.open(tmp_path / "n1", node_id="n1").close()
    with pytest.raises(StorageError, match="holds no log"):
        force_new_cluster(tmp_path / "n1")
