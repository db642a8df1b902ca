"""A leader's snapshot file given up (s14-small): cancelled, dropped by a failed check,
superseded by another snapshot, or its write failed, it is deleted at once, not left on disk
(203 MB at 1,000,000 + 1,000,000 objects) until the next open or own save collects it. A file
``install_file`` took over is never stopped or deleted by the check's late ``drop``, and a
switched one never by anything (univrs/storage/snapshot_install.py)."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator

import pytest

from univrs.errors import StorageError
from univrs.storage import snapshot_file
from univrs.storage.snapshot_install import InstallCancelled, InstallFile

from .helpers import Opener, at, snapshot_files, store_with_snapshot

WAIT = 10.0  # seconds: a deadline, never a pause


class _Gate:
    """Holds the file writers in their first piece until ``release``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside = threading.Event()
        self.go = threading.Event()
        self.started: list[InstallFile] = []
        real_piece = snapshot_file.FileWriter.write_piece
        real_start = InstallFile.start

        def gated(writer: snapshot_file.FileWriter) -> bool:
            done = real_piece(writer)  # the file exists from here on
            self.inside.set()
            assert self.go.wait(WAIT)
            return done

        def start(install: InstallFile) -> None:
            self.started.append(install)
            real_start(install)

        monkeypatch.setattr(snapshot_file.FileWriter, "write_piece", gated)
        monkeypatch.setattr(InstallFile, "start", start)

    def wait_inside(self) -> None:
        assert self.inside.wait(WAIT)

    def release(self) -> None:
        self.go.set()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Gate]:
    g = _Gate(monkeypatch)
    yield g
    g.release()


@pytest.mark.parametrize("size", [200_000, 1_000_000])
def test_a_dropped_file_written_ahead_is_deleted_at_once(
    open_store: Opener, gate: _Gate, size: int
) -> None:
    """The check failed while the file was being written: once its thread stops (after the
    piece in progress), the file is gone, without a close, an open or an own save. One piece
    (given up while its last piece is written) or two (stopped after the first)."""
    rng = random.Random(1)
    old = rng.randbytes(20_000)
    store = store_with_snapshot(open_store, old)
    drop = store.prewrite_install(at(30), rng.randbytes(size))
    gate.wait_inside()
    assert len(snapshot_files(store)) == 1
    drop()
    gate.release()
    gate.started[0].join()
    assert snapshot_files(store) == []
    assert store.load_snapshot() == (at(12), old)


def test_a_dropped_file_written_whole_is_deleted(open_store: Opener) -> None:
    rng = random.Random(2)
    store = store_with_snapshot(open_store, b"old")
    drop = store.prewrite_install(at(30), rng.randbytes(50_000))
    install = store.install_file(at(31), b"other")  # not the one ahead: it is dropped
    install.write_file()
    assert len(snapshot_files(store)) == 1  # only the new install's
    install.drop()  # never claimed: given up
    assert snapshot_files(store) == []
    drop()  # already gone: nothing happens
    assert store.snapshot_meta() == at(12)


def test_a_superseded_file_written_ahead_is_deleted(open_store: Opener, gate: _Gate) -> None:
    """A newer snapshot's check begins (``prewrite_install`` again): the older file goes."""
    rng = random.Random(3)
    store = store_with_snapshot(open_store, b"old")
    store.prewrite_install(at(30), rng.randbytes(100_000))
    gate.wait_inside()
    newer = rng.randbytes(100_000)
    store.prewrite_install(at(40), newer)
    gate.release()
    first, second = gate.started
    first.join()
    second.join()
    assert snapshot_files(store) == [second.name]
    install = store.install_file(at(40), newer)
    install.write_file()
    install.switch()
    assert store.load_snapshot() == (at(40), newer) and snapshot_files(store) == [second.name]


def test_a_failed_write_deletes_its_partial_file(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails (or fills) in the second piece: the first piece's file goes at once
    (on a full disk, the space it took is what the node needs back)."""
    store = store_with_snapshot(open_store, b"old")
    real = snapshot_file.FileWriter.write_piece
    pieces = 0

    def failing(writer: snapshot_file.FileWriter) -> bool:
        nonlocal pieces
        pieces += 1
        if pieces == 2:
            raise StorageError("No space left on device")
        return real(writer)

    monkeypatch.setattr(snapshot_file.FileWriter, "write_piece", failing)
    install = store.install_file(at(30), random.Random(4).randbytes(100_000), part_blocks=3)
    with pytest.raises(StorageError):
        install.write_file()
    assert pieces == 2 and snapshot_files(store) == []
    assert store.snapshot_meta() == at(12)


def test_a_cancelled_file_is_deleted_and_never_switched_to(open_store: Opener) -> None:
    """The writer cancels an install it has not switched (the node stops): its written file
    goes, and a switch after that is refused, so the record never names a deleted file."""
    store = store_with_snapshot(open_store, b"old")
    install = store.install_file(at(30), random.Random(5).randbytes(30_000))
    install.write_file()
    install.cancel()
    assert snapshot_files(store) == []
    with pytest.raises(InstallCancelled, match="given up"):
        install.switch()
    assert store.snapshot_meta() == at(12)
    assert store.load_snapshot() == (at(12), b"old")


def test_a_file_the_install_took_over_is_kept_through_a_late_drop(
    open_store: Opener, gate: _Gate
) -> None:
    """``install_file`` took over the file written ahead while it was still being written;
    the check's ``drop`` comes after (late): the write goes on, the file is switched to and
    installable; a drop or a cancel after the switch deletes nothing."""
    rng = random.Random(6)
    data = rng.randbytes(1_000_000)  # 245 blocks: two pieces, the drop comes in the first
    store = store_with_snapshot(open_store, b"old")
    drop = store.prewrite_install(at(30), data)
    gate.wait_inside()
    install = store.install_file(at(30), data)
    assert install is gate.started[0]  # taken over
    drop()
    gate.release()
    install.write_file()  # not cancelled
    assert install.written and not install.given_up
    install.switch()
    drop()
    install.cancel()
    assert snapshot_files(store) == [install.name]
    assert store.load_snapshot() == (at(30), data)
    store.close()
    reopened = open_store()
    assert reopened.load_snapshot() == (at(30), data)
    assert snapshot_files(reopened) == [install.name]


def test_a_closing_store_deletes_the_file_written_ahead(open_store: Opener, gate: _Gate) -> None:
    store = store_with_snapshot(open_store, b"old")
    store.prewrite_install(at(30), random.Random(7).randbytes(100_000))
    gate.wait_inside()
    directory = store.path
    gate.release()
    store.close()
    assert sorted(n for n in os.listdir(directory) if n.startswith("snapshot-")) == []
