"""s14-review: a given-up install file (s14-small) racing its switch.

``cancel`` (the node stopping) arrives while ``switch`` holds ``SnapshotFiles.lock`` and has
passed its given-up check: the switch completes, and the canceller's removal, which waits
for that lock, finds the file switched (and named by the record: either guard keeps it;
without both the file goes), so the record never names a deleted file. Cancelled before the
switch takes the lock: the switch is refused and the record still names the old snapshot."""

from __future__ import annotations

import random
import threading

import pytest

from univrs.storage.snapshot_install import InstallCancelled, InstallFile

from .helpers import Opener, at, snapshot_files, store_with_snapshot

WAIT = 10.0  # seconds: a deadline, never a pause


def test_a_cancel_during_the_switch_keeps_the_switched_file(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(14).randbytes(50_000)
    store = store_with_snapshot(open_store, b"old")
    install = store.install_file(at(30), data)
    install.write_file()
    given_up = threading.Event()
    real_give_up, real_hand_over = InstallFile._give_up, InstallFile._hand_over

    def give_up(self: InstallFile) -> None:
        given_up.set()  # ``_given_up`` is set; its removal waits for the switch's lock
        real_give_up(self)

    canceller = threading.Thread(target=install.cancel)

    def hand_over(self: InstallFile, raw_old: bytes | None, new: list[object]) -> None:
        canceller.start()  # under the lock, past the given-up check
        assert given_up.wait(WAIT)
        real_hand_over(self, raw_old, new)

    monkeypatch.setattr(InstallFile, "_give_up", give_up)
    monkeypatch.setattr(InstallFile, "_hand_over", hand_over)
    install.switch()
    canceller.join(WAIT)
    assert not canceller.is_alive()
    assert install.switched and install.given_up
    assert snapshot_files(store) == [install.name]
    assert store.load_snapshot() == (at(30), data)
    store.close()
    reopened = open_store()
    assert reopened.load_snapshot() == (at(30), data)
    assert snapshot_files(reopened) == [install.name]


def test_a_cancel_before_the_switch_refuses_it(open_store: Opener) -> None:
    store = store_with_snapshot(open_store, b"old")
    install = store.install_file(at(30), random.Random(15).randbytes(50_000))
    install.write_file()
    install.cancel()
    with pytest.raises(InstallCancelled):
        install.switch()
    assert not install.switched
    assert store.load_snapshot() == (at(12), b"old")
    assert install.name not in snapshot_files(store)
