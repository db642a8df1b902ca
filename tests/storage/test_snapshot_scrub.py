"""Damage to the stored snapshot found by its readers and by the scrub
(univrs/storage/snapshot_check.py): a read raises ``SnapshotDamaged`` (a ``StorageError`` and
the core's ``SnapshotUnreadable``) after telling the store's ``DamageHook`` which copy, and a
scrub reads the whole snapshot in pieces, checking every block and the whole data's CRC-32.
A retake may replace a stored snapshot at the same index (``snapshot_parts(retake=True)``)."""

from __future__ import annotations

import os
import pathlib
import zlib

import pytest

from tests.storage.helpers import Opener, at, flip_everywhere, make_entries
from univrs.errors import StorageError
from univrs.raft.messages import HardState, SnapshotMeta
from univrs.raft.snapshot import SnapshotUnreadable
from univrs.storage import LogStore, layout
from univrs.storage.snapshot_check import FOUND_BY, SnapshotDamaged, reading_for, slice_bounds
from univrs.storage.snapshot_file import BLOCK, BLOCK_DATA

BODY = b"<snapshot-body>"
DATA = BODY * 3000  # 45 KB: 11 blocks of a file


class Heard:
    """A listener of the store's damage hook."""

    def __init__(self) -> None:
        self.reports: list[tuple[SnapshotMeta, str, str]] = []

    def __call__(self, meta: SnapshotMeta, where: str, message: str) -> None:
        self.reports.append((meta, where, message))


def _own_snapshot(store: LogStore, data: bytes = DATA, *, retake: bool = False) -> bool | None:
    """Store ``data`` at index 12 as the node's own snapshot (a file), all steps at once."""
    saving = store.snapshot_parts(at(12), data, retake=retake)
    while not saving.step():
        pass
    return saving.stored


def _with_file(open_store: Opener) -> tuple[LogStore, pathlib.Path]:
    store = open_store()
    store.append(
        hard_state=HardState(term=1, commit=20), truncate_from=None, entries=make_entries(1, 20)
    )
    assert _own_snapshot(store) is True
    (path,) = (store.data_dir / "raft.lmdb").glob("snapshot-*.dat")
    return store, path


def _flip(path: pathlib.Path, offset: int) -> None:
    """Flip a bit of the file's byte at ``offset`` in place (the same inode: an open reader
    sees it, as it would see a disk's bit rot)."""
    fd = os.open(path, os.O_RDWR)
    try:
        (byte,) = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte ^ 0x10]), offset)
    finally:
        os.close(fd)


def test_a_flipped_byte_in_the_file_is_reported_once_per_read_with_the_file(
    open_store: Opener,
) -> None:
    store, path = _with_file(open_store)
    heard = Heard()
    store.snapshot_damage.listen(heard)
    snapshot = store.stored_snapshot()
    assert snapshot is not None
    assert snapshot[0:100] == DATA[:100]  # intact: nothing heard
    assert heard.reports == []
    _flip(path, 5 * BLOCK + 100)  # in block 5's data
    assert snapshot[0 : 5 * BLOCK_DATA] == DATA[: 5 * BLOCK_DATA]  # blocks before it still read
    with pytest.raises(SnapshotDamaged) as err:
        snapshot[5 * BLOCK_DATA : 5 * BLOCK_DATA + 10]
    assert isinstance(err.value, StorageError) and isinstance(err.value, SnapshotUnreadable)
    assert err.value.meta == at(12)
    assert str(path) in str(err.value) and "snapshot chunk 5: checksum mismatch" in str(err.value)
    ((meta, where, message),) = heard.reports
    assert (meta, where, message) == (at(12), str(path), str(err.value))
    assert store.stored_snapshot_where() == str(path)
    with pytest.raises(SnapshotDamaged):
        store.load_snapshot()  # the start-up read (memory backend) refuses it as before


def test_the_scrub_finds_a_damaged_block_and_reports_it(open_store: Opener) -> None:
    store, path = _with_file(open_store)
    heard = Heard()
    store.snapshot_damage.listen(heard)
    scrub = store.snapshot_scrub(piece=2 * BLOCK_DATA)
    assert scrub is not None
    scrub.run()  # intact
    assert scrub.done and scrub.read == len(DATA) and heard.reports == []
    _flip(path, 10 * BLOCK + 7)  # the last block
    scrub = store.snapshot_scrub(piece=2 * BLOCK_DATA)
    assert scrub is not None
    steps = 0
    with pytest.raises(SnapshotDamaged, match="snapshot chunk 10: checksum mismatch"):
        while not scrub.step():
            steps += 1
    assert steps == 5 and scrub.read == 10 * BLOCK_DATA  # a piece per step, up to the damage
    ((meta, where, _),) = heard.reports
    assert (meta, where) == (at(12), str(path))


def test_the_scrub_finds_data_whose_blocks_check_but_whose_whole_checksum_does_not(
    open_store: Opener,
) -> None:
    # A block rewritten whole with a valid CRC of other bytes (a misdirected write of a
    # block): only the whole data's CRC-32 in the record tells.
    store, path = _with_file(open_store)
    other = layout.encode_chunk(3, b"X" * BLOCK_DATA)
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, other, 3 * BLOCK)
    finally:
        os.close(fd)
    heard = Heard()
    store.snapshot_damage.listen(heard)
    scrub = store.snapshot_scrub()
    assert scrub is not None
    with pytest.raises(SnapshotDamaged, match=f"its record says {zlib.crc32(DATA):08x}"):
        scrub.run()
    assert len(heard.reports) == 1


def test_a_truncated_file_is_damage_found_by_the_read(open_store: Opener) -> None:
    store, path = _with_file(open_store)
    snapshot = store.stored_snapshot()
    assert snapshot is not None
    os.truncate(path, 4 * BLOCK)  # the open reader sees it short
    with pytest.raises(SnapshotDamaged):
        snapshot[6 * BLOCK_DATA : 7 * BLOCK_DATA]


def test_a_damaged_chunk_of_a_leader_snapshot_is_reported_and_scrubbed(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    # The older form: a snapshot from the leader is stored in chunks of the ``snap`` database.
    store = open_store()
    store.save_snapshot(at(3), DATA)
    store.close()
    assert flip_everywhere(data_dir / "raft.lmdb" / "data.mdb", BODY * 4, offset=3) >= 1
    store = open_store()
    heard = Heard()
    store.snapshot_damage.listen(heard)
    snapshot = store.stored_snapshot()
    assert snapshot is not None
    with pytest.raises(SnapshotDamaged, match=r"snapshot chunk 0: checksum mismatch") as err:
        snapshot[0:10]
    assert isinstance(err.value, SnapshotUnreadable)
    ((meta, where, _),) = heard.reports
    assert meta == at(3) and where.startswith("chunks 0..") and where == snapshot.where
    assert store.stored_snapshot_where() == where
    scrub = store.snapshot_scrub()
    assert scrub is not None
    with pytest.raises(SnapshotDamaged):
        scrub.run()
    with pytest.raises(SnapshotDamaged, match="snapshot chunk 0: checksum mismatch"):
        store.load_snapshot()  # a backup's read: reported too, so a running node retakes it
    assert len(heard.reports) == 3  # each finding reported; the runtime logs a copy once
    assert {r[1] for r in heard.reports} == {where}


def test_a_retake_replaces_a_snapshot_at_the_same_index_with_a_new_file(
    open_store: Opener,
) -> None:
    store, path = _with_file(open_store)
    _flip(path, 100)
    assert _own_snapshot(store, DATA) is False  # same index: a normal save gives up
    assert path.exists()
    assert _own_snapshot(store, DATA, retake=True) is True
    (new,) = (store.data_dir / "raft.lmdb").glob("snapshot-*.dat")
    assert new != path and not path.exists()  # another token; the damaged file is gone
    assert store.load_snapshot() == (at(12), DATA)
    assert store.stored_snapshot_where() == str(new)
    assert store.first_index() == 1  # the log is kept (same point)
    scrub = store.snapshot_scrub()
    assert scrub is not None
    scrub.run()


def test_damage_is_counted_by_what_the_read_was_for_listened_to_or_not(
    open_store: Opener,
) -> None:
    # univrs_snapshot_damage_total{found_by} (s13-small): every report counted, under the
    # reader's purpose: a stream's read (the default), the scrub's, a backup's, a start's.
    store, path = _with_file(open_store)
    hook = store.snapshot_damage
    assert hook.counts() == dict.fromkeys(FOUND_BY, 0)
    _flip(path, 10 * BLOCK + 7)  # the last block
    snapshot = store.stored_snapshot()
    assert snapshot is not None
    with pytest.raises(SnapshotDamaged):
        snapshot[10 * BLOCK_DATA : 10 * BLOCK_DATA + 1]  # no listener: counted all the same
    assert hook.counts() == {"stream": 1, "scrub": 0, "start": 0, "backup": 0}
    scrub = store.snapshot_scrub()
    assert scrub is not None
    with pytest.raises(SnapshotDamaged):
        scrub.run()
    with reading_for("backup"), pytest.raises(SnapshotDamaged):
        store.load_snapshot()
    heard = Heard()
    hook.listen(heard)
    with reading_for("start"), pytest.raises(SnapshotDamaged):
        snapshot.read()
    assert hook.counts() == {"stream": 1, "scrub": 1, "start": 1, "backup": 1}
    assert len(heard.reports) == 1
    with pytest.raises(SnapshotDamaged):
        snapshot[10 * BLOCK_DATA : 10 * BLOCK_DATA + 1]  # outside the blocks: a stream's again
    assert hook.counts()["stream"] == 2
    with pytest.raises(ValueError, match="unknown snapshot reader"), reading_for("other"):
        pass


def test_slice_bounds_is_the_one_slice_rule_of_both_readers() -> None:
    assert slice_bounds(slice(2, 5), 10) == (2, 5)
    assert slice_bounds(slice(None, None), 10) == (0, 10)
    assert slice_bounds(slice(8, 20, 1), 10) == (8, 10)
    for bad in (3, slice(0, 4, 2)):
        with pytest.raises(TypeError, match="contiguous slices"):
            slice_bounds(bad, 10)
