"""Disk space: data.mdb stays bounded under compaction churn, the space figures are right,
and ``defrag`` gives free pages back offline without changing what the store holds."""

from __future__ import annotations

import mmap
import pathlib
import random
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.storage.helpers import make_entries
from univrs.errors import StorageError
from univrs.raft.messages import HardState, Membership, SnapshotMeta
from univrs.storage import LogStore, defrag, layout
from univrs.storage.datadir import ENV_DIR
from univrs.storage.defragment import DEFRAG_DIR
from univrs.storage.disk_bench import churn, old_snapshot_layout

Opener = Callable[..., LogStore]
MEMBERS = Membership(voters=frozenset({"n1"}))
MIB = 1 << 20


def _mib(n: int) -> str:
    return f"{n / MIB:.2f} MiB"


def test_snapshot_churn_keeps_the_data_file_bounded(open_store: Opener) -> None:
    """20k entries, a 1.5 MB snapshot every 1000 and compaction: the file stays within twice
    the live data. With the snapshot stored in 1 MiB values (runs of contiguous overflow
    pages, which free space fragmented by the log cannot hold) it reached 18.6 MiB here, and
    kept growing."""
    store = open_store(cluster_id="c-1")
    sizes: list[tuple[int, int, int]] = []

    def report(index: int) -> None:
        stats = store.statistics()
        sizes.append((index, stats.db_bytes, stats.db_in_use_bytes))

    peak = churn(
        store,
        writes=20_000,
        batch=2,  # small Readies: with 10 entries each the old layout grew "only" 3.8x
        every=1000,
        keep=500,
        snapshot_bytes=1_500_000,
        entry_bytes=150,
        report=report,
    )
    print()
    for index, size, in_use in sizes[::4] + sizes[-1:]:
        print(f"after {index:6d} entries: data.mdb {_mib(size)}, in use {_mib(in_use)}")
    final = sizes[-1][1]
    print(f"peak live data {_mib(peak)}; final file {_mib(final)} = {final / peak:.1f}x")
    # Bounded: at most old + new snapshot and the log at once, plus LMDB's slack.
    assert final <= 3 * peak
    # And it stopped growing: the second half of the run added nothing.
    assert final == sizes[len(sizes) // 2][1]


def test_the_bound_catches_the_old_snapshot_layout(open_store: Opener) -> None:
    """The check above can fail: with 1 MiB snapshot values the file outgrows it quickly."""
    store = open_store()
    with old_snapshot_layout():
        peak = churn(
            store,
            writes=10_000,
            batch=2,
            every=1000,
            keep=500,
            snapshot_bytes=1_500_000,
            entry_bytes=150,
        )
    size = store.statistics().db_bytes
    print(f"\nold layout: data.mdb {_mib(size)} for a peak of {_mib(peak)}")
    assert size > 3 * peak


def test_snapshot_chunks_each_fill_one_page(open_store: Opener) -> None:
    """Each chunk of snapshot data takes exactly one (overflow) page: 100 chunks, ~100 pages."""
    store = open_store()
    page = mmap.PAGESIZE  # LMDB's page size is the OS page size when the file is created
    step = layout.snapshot_chunk_size(page)
    assert step == page - 20  # 16 bytes of page header, 4 of CRC
    before = store.statistics().db_in_use_bytes
    data = random.Random(1).randbytes(100 * step)
    store.save_snapshot(SnapshotMeta(index=1, term=1, membership=MEMBERS), data)
    pages = (store.statistics().db_in_use_bytes - before) // page
    assert 100 <= pages <= 104  # the chunks, their leaf page, the records
    loaded = store.load_snapshot()
    assert loaded is not None and loaded[1] == data


def test_a_snapshot_stored_in_1_mib_chunks_still_loads(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores written before page-sized chunks hold 1 MiB values: readers take any size."""
    store = open_store()
    monkeypatch.setattr(layout, "snapshot_chunk_size", lambda page: MIB)
    data = random.Random(2).randbytes(2 * MIB + 5)
    store.save_snapshot(SnapshotMeta(index=1, term=1, membership=MEMBERS), data)
    monkeypatch.undo()
    loaded = store.load_snapshot()
    assert loaded is not None and loaded[1] == data


def test_space_figures_follow_the_data(open_store: Opener, data_dir: pathlib.Path) -> None:
    store = open_store()
    empty = store.statistics()
    data_file = data_dir / ENV_DIR / "data.mdb"
    assert empty.db_bytes == data_file.stat().st_size
    assert 0 < empty.db_in_use_bytes <= empty.db_bytes
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 3000, size=200))
    full = store.statistics()
    assert full.db_in_use_bytes > empty.db_in_use_bytes + 3000 * 200
    assert full.db_bytes == data_file.stat().st_size >= full.db_in_use_bytes
    store.save_snapshot(SnapshotMeta(index=3000, term=1, membership=MEMBERS), b"s")
    store.compact(3000)
    compacted = store.statistics()
    assert compacted.db_in_use_bytes < full.db_in_use_bytes / 10  # freed ...
    assert compacted.db_bytes >= full.db_bytes  # ... but LMDB never shrinks the file


def test_defrag_gives_free_pages_back_and_keeps_everything(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    store = open_store(cluster_id="c-1")
    store.append(
        hard_state=HardState(term=3, vote="n2", commit=5000),
        truncate_from=None,
        entries=make_entries(1, 5000, size=500),
    )
    store.save_snapshot(SnapshotMeta(index=4900, term=1, membership=MEMBERS), b"snap" * 5000)
    store.compact(4900)
    before = store.statistics()
    state, incarnation = store.initial_state(), store.incarnation
    snapshot = store.load_snapshot()
    store.close()

    result = defrag(data_dir)
    print(f"\ndefrag: {_mib(result.before_bytes)} -> {_mib(result.after_bytes)}")
    assert result.before_bytes == before.db_bytes
    assert result.after_bytes == result.in_use_bytes == before.db_in_use_bytes
    assert result.after_bytes < before.db_bytes / 4
    assert not (data_dir / DEFRAG_DIR).exists()

    reopened = open_store()
    assert reopened.statistics().db_bytes == result.after_bytes
    assert reopened.initial_state() == state
    assert reopened.incarnation == incarnation and reopened.cluster_id == "c-1"
    assert reopened.load_snapshot() == snapshot
    reopened.append(hard_state=None, truncate_from=None, entries=make_entries(5001, 5001))
    assert reopened.last_index() == 5001


def test_defrag_is_refused_while_the_store_is_open(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    store = open_store()
    with pytest.raises(StorageError, match="locked by another univrs process"):
        defrag(data_dir)
    assert store.last_index() == 0  # still usable
    with pytest.raises(StorageError, match="does not exist"):
        defrag(data_dir / "nope")


def test_defrag_discards_a_leftover_of_an_interrupted_one(
    open_store: Opener, data_dir: pathlib.Path
) -> None:
    open_store().close()
    leftover = data_dir / DEFRAG_DIR / ENV_DIR
    leftover.mkdir(parents=True)
    (leftover / "data.mdb").write_bytes(b"half a copy")
    defrag(data_dir)
    assert not (data_dir / DEFRAG_DIR).exists()
    open_store().close()


def test_univrs_defrag_command(open_store: Opener, data_dir: pathlib.Path) -> None:
    store = open_store()
    store.append(hard_state=None, truncate_from=None, entries=make_entries(1, 2000, size=500))
    store.save_snapshot(SnapshotMeta(index=2000, term=1, membership=MEMBERS), b"s")
    store.compact(2000)
    store.close()
    done = subprocess.run(
        [sys.executable, "-m", "univrs", "defrag", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "defragmented" in done.stdout and " MiB -> " in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "univrs", "defrag", "--data-dir", str(data_dir / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1 and "error: data dir" in missing.stderr
