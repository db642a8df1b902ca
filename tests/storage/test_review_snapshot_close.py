"""s13-review: a read of a stored snapshot's file racing its store's close.

``FileSnapshot.__getitem__`` asked ``_closed`` and then, outside its lock, ``_fd is None``: a
``close`` (``SnapshotFiles.close_all``, the store closing while a stream's or a backup's read
runs in another thread) landing between the two made the read report *damage* ("corrupt
snapshot file ...: None") to the store's hook (counted in univrs_snapshot_damage_total and, on
a running node, a snapshot retaken for nothing) instead of the clear "read after its store
closed". The interleaving is forced with a line tracer in the reading thread: at the line that
tests ``_problem`` the store closes the reader, exactly as the other thread would.
"""

from __future__ import annotations

import random
import sys
import threading
import types
from typing import Any

import pytest

from univrs.errors import StorageError
from univrs.storage import snapshot_file
from univrs.storage.snapshot_check import SnapshotDamaged

from .helpers import Opener, store_with_file_snapshot


def test_a_read_racing_the_stores_close_is_no_damage(open_store: Opener) -> None:
    store, reader = store_with_file_snapshot(open_store, random.Random(13))
    assert reader[0:10]  # readable before
    expected = store.load_snapshot()[1][:10]  # type: ignore[index]
    code = snapshot_file.FileSnapshot.__getitem__.__code__
    fired: list[bool] = []
    closers: list[threading.Thread] = []

    def local(frame: types.FrameType, event: str, arg: Any) -> Any:
        # At the check of ``_problem``/``_fd`` the store closes (another thread's
        # ``close_all``). If this read holds the reader's lock there, the close can only wait
        # for it: it runs in a thread of its own; else it lands now, as it would.
        if event == "line" and not fired and "self._problem is not None" in _line(frame):
            fired.append(True)
            if reader._io.locked():
                closer = threading.Thread(target=reader.close)
                closers.append(closer)
                closer.start()
            else:
                reader.close()
        return local

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    damage_before = sum(store.snapshot_damage.counts().values())
    outcome: bytes | Exception
    sys.settrace(tracer)
    try:
        outcome = reader[0:10]
    except Exception as exc:
        outcome = exc
    finally:
        sys.settrace(None)
    for closer in closers:
        closer.join(timeout=30)
        assert not closer.is_alive()
    assert fired, "the tracer never reached the check it races"
    assert not isinstance(outcome, SnapshotDamaged), outcome
    if isinstance(outcome, Exception):
        assert isinstance(outcome, StorageError) and "after its store closed" in str(outcome)
    else:
        assert outcome == expected  # read before the close, which waited for it
    assert sum(store.snapshot_damage.counts().values()) == damage_before  # nothing reported
    with pytest.raises(StorageError, match="after its store closed"):
        reader[0:10]


def _line(frame: types.FrameType) -> str:
    import linecache

    return linecache.getline(frame.f_code.co_filename, frame.f_lineno)
