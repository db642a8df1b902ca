"""A node's own snapshot save that fails part-way (a disk full or failing while its file is
written: univrs/storage/snapshot_parts.py, snapshot_file.py) leaves nothing behind: no
partial file, no open descriptor, and the next save stores its snapshot beside no garbage.

Found by the session-12 review (s12-review): the failed save's file stayed in the store's
``pending`` set for the process's life, so no ``collect`` removed it (up to a whole snapshot
of disk held, at each failed ``univrs cluster snapshot``, exactly when the disk is full), and
its descriptor was never closed."""

from __future__ import annotations

import errno
import os
import random

import pytest

from univrs.errors import StorageError
from univrs.storage import LogStore, snapshot_file

from .helpers import Opener, at, snapshot_files, store_with_file_snapshot, store_with_snapshot


def _open_snapshot_files(store: LogStore) -> list[str]:
    """The snapshot files of ``store``'s directory this process holds open (only its own:
    other tests' nodes in this process are not this test's business)."""
    prefix = os.path.realpath(store.path) + os.sep
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".dat") and target.startswith(prefix):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
@pytest.mark.parametrize("failing", ["write", "flush", "fsync"])
def test_a_save_that_fails_writing_its_file_leaves_nothing(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    rng = random.Random(3)
    old = rng.randbytes(30_000)
    store = store_with_snapshot(open_store, old, 12, entries=40)
    calls = [0]
    real_write, real_fsync, real_flush = os.write, os.fsync, snapshot_file.flush_range

    def full() -> None:
        calls[0] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    def snapshot_fd(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").endswith(".dat")
        except OSError:
            return False

    def write(fd: int, data: bytes) -> int:
        if snapshot_fd(fd):
            full()
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        if snapshot_fd(fd):
            full()
        real_fsync(fd)

    def flush_then_full(fd: int, offset: int, nbytes: int) -> None:
        if offset > 0:  # the second piece
            full()
        real_flush(fd, offset, nbytes)

    if failing == "write":
        monkeypatch.setattr(os, "write", write)  # only the snapshot file's writes fail
    elif failing == "flush":
        monkeypatch.setattr(snapshot_file, "flush_range", flush_then_full)
    else:
        monkeypatch.setattr(os, "fsync", fsync)
    saving = store.snapshot_parts(at(30), rng.randbytes(100_000), part_blocks=3)
    with pytest.raises(StorageError, match="no space left on device"):
        while not saving.step():
            pass
    monkeypatch.undo()
    assert calls[0] >= 1
    assert store.load_snapshot() == (at(12), old)  # the old one, whole
    assert snapshot_files(store) == []  # the partial file is gone ...
    assert _open_snapshot_files(store) == []  # ... and not held open
    new = rng.randbytes(50_000)
    again = store.snapshot_parts(at(31), new, part_blocks=3)
    while not again.step():
        pass
    assert again.stored is True and store.load_snapshot() == (at(31), new)
    assert len(snapshot_files(store)) == 1  # its own file only: no garbage left


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_a_closed_store_leaves_no_snapshot_file_open(open_store: Opener) -> None:
    """A reader of the stored snapshot's file (a stream's, the core's view) still held when its
    store closes: the store closes its descriptor, and a read after that is a clear error, not a
    read of whatever file got the descriptor's number next. Before: the descriptor stayed open
    until the reader was garbage collected; in the test process, the nodes of earlier tests
    held their snapshot files open (the CI failure of 37e15ec, test_killed_followers_on_both_...
    seen by this file's descriptor check)."""
    store, reader = store_with_file_snapshot(open_store, random.Random(5))
    assert reader[0:10] == store.load_snapshot()[1][:10]  # type: ignore[index]
    assert len(_open_snapshot_files(store)) == 1  # the held reader's
    store.close()
    assert _open_snapshot_files(store) == []
    with pytest.raises(StorageError, match="after its store closed"):
        reader[0:10]
