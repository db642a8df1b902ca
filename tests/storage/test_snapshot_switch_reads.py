"""The switch of a save in parts (univrs/storage/snapshot_parts.py) is an item of the storage
writer's queue, one small transaction: it must not read a whole snapshot.

Found by the session-12 review (s12-review): when the old snapshot is in chunks (one installed
from a leader) and a stream to a follower has read from it, the switch step reads that old
snapshot whole into memory (``_detach_streams(keep=None)``) before it hands it over, in the
writer's thread: 0.9-4 s for 100 MB on the shared test machine (3 runs), every append of the
leader waiting meanwhile. The hand-over (``superseded_by``) already keeps it readable until the
``switched`` step, which detaches it off the writer's queue before the prune; without the
switch's detach the storage and runtime snapshot tests pass and the switch takes 8 ms. In
s12-scrub's files (streams' reads): fixed after its merge (the switch step no longer calls
``_detach_streams(keep=None)``)."""

from __future__ import annotations

import random

from univrs.storage import LogStore

from .helpers import Opener, at, store_with_snapshot


def test_the_switch_does_not_read_a_streamed_old_snapshot_whole(open_store: Opener) -> None:
    rng = random.Random(9)
    old, new = rng.randbytes(200_000), rng.randbytes(100_000)
    store: LogStore = store_with_snapshot(open_store, old, 12, entries=40)  # in chunks
    held = store.stored_snapshot()
    assert held is not None and held[0:10] == old[:10]  # a stream of it has begun
    saving = store.snapshot_parts(at(30), new, part_chunks=7, part_blocks=7)
    while not saving.at_switch:
        assert not saving.step()
    assert not saving.step() and saving.stored is True  # the switch
    assert held[1000:150_000] == old[1000:150_000]  # still read, from its chunks
    assert not held.detached  # not read whole by the switch (a writer item)
    while not saving.step():
        pass
    assert held.detached and held[0:200_000] == old  # read whole off the queue, before the prune
