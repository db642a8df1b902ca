"""A reader of the stored snapshot (``LogStore.load_snapshot``: the backup endpoint reads it in
a worker thread; ``stored_snapshot``) that races a save's switch and its ``collect`` (another
thread: the snapshotter's own save, or an install from the leader) gets the snapshot, the old
one or the new one, never "corrupt data ... snapshot file ... is missing".

Found by the session-12 review (s12-review): the reader reads the record in its LMDB read
transaction, then opens the file it names; a switch committed in between and the ``collect``
after it unlink that file (``SnapshotFiles.lock`` orders the switch with ``collect``, not with
readers), and the open reports a missing file as corruption (since s12-scrub: as damage,
which has a running node retake its snapshot for nothing). Fixed after s12-scrub's merge:
``load_snapshot`` and ``stored_snapshot`` read the record and open the file it names under
``SnapshotFiles.lock`` (the lock ``collect`` and the switch hold), then read the data with the
lock released (the open descriptor keeps an unlinked file readable: a 212 MB read must not hold
up a switch)."""

from __future__ import annotations

import os
import random
import threading

import pytest

from univrs.storage import LogStore
from univrs.storage.snapshot_parts import SnapshotParts

from .helpers import Opener, at, store_with_snapshot


def _run(saving: SnapshotParts) -> None:
    while not saving.step():
        pass


def test_a_reader_racing_a_switch_and_its_collect_gets_a_snapshot(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(8)
    store: LogStore = store_with_snapshot(open_store, rng.randbytes(20_000), 12, entries=40)
    own, newer = rng.randbytes(30_000), rng.randbytes(30_000)
    _run(store.snapshot_parts(at(20), own))  # the stored snapshot is in a file
    real_open = os.open
    fired = threading.Event()
    saver: list[threading.Thread] = []

    def racing_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        # The reader, about to open the file its record named: another save switches and
        # collects now, in its own thread (unless the reader holds the lock that orders the
        # switch and ``collect``: then that save goes on once the reader is done).
        reading = str(path).endswith(".dat") and not flags & (os.O_WRONLY | os.O_RDWR)
        if reading and not fired.is_set():
            fired.set()
            held = store._files.lock.locked()  # by this reader (nothing else runs now)
            thread = threading.Thread(target=_run, args=(store.snapshot_parts(at(30), newer),))
            saver.append(thread)
            thread.start()
            if not held:
                thread.join(timeout=30)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", racing_open)
    loaded = store.load_snapshot()
    monkeypatch.undo()
    for thread in saver:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert fired.is_set()
    assert loaded in ((at(20), own), (at(30), newer))
    assert store.load_snapshot() == (at(30), newer)
