"""The node process's GC settings (univrs/server/heap.py)."""

from __future__ import annotations

import gc
import subprocess
import sys

from univrs.metrics import Registry
from univrs.server.heap import GcPauses, Refreeze, register_gc_metrics

# In a fresh interpreter: settle(), then how many objects a full collection still walks.
_PROBE = """
import gc
from univrs.server.heap import settle
frozen = settle()
print(frozen, len(gc.get_objects()))
"""


def test_settle_leaves_the_imported_modules_out_of_full_collections() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    frozen, walked = (int(v) for v in out.stdout.split())
    # The node's imports are tens of thousands of containers (about 100,000 with the HTTP API);
    # after the freeze a full collection walks a small remainder of them.
    assert frozen > 20_000
    assert walked < frozen // 10


# In a fresh interpreter: settle(), then objects that live long (a watch history's) made while
# the node serves; a full collection; how many objects the next one walks; whether a frozen
# object is still freed by reference counting, and a cycle made later still collected.
_SURVIVORS = """
import gc, weakref
from univrs.server.heap import REFREEZE, settle
settle()
class Kept:
    pass
kept = [{"n": [i]} for i in range(50_000)]
gc.collect()
walked = len(gc.get_objects())
probe = Kept()
freed = weakref.ref(probe)
kept.append(probe)
gc.collect()  # probe survives: frozen
kept.clear()  # ... and dropped: reference counting frees it
del probe
cycle = Kept()
cycle.me = cycle
collected = weakref.ref(cycle)
del cycle
gc.collect()
print(walked, freed() is None, collected() is None, REFREEZE.freezes)
"""


def test_a_full_collection_freezes_its_survivors() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SURVIVORS], capture_output=True, text=True, timeout=120, check=True
    )
    walked, freed, cycle_collected, freezes = out.stdout.split()
    # The 100,000 containers made after settle() survived a full collection: the next one
    # does not walk them again (without the refreeze it walks all of them).
    assert int(walked) < 10_000
    assert freed == "True"  # a frozen object dropped later is still freed
    assert cycle_collected == "True"  # garbage made after a freeze is still collected
    assert int(freezes) >= 2


def test_pauses_are_counted_by_generation_and_exported() -> None:
    pauses = GcPauses()
    registry = Registry()
    refreeze = Refreeze(freezes=3, frozen_at_start=1234)
    register_gc_metrics(registry, pauses, refreeze)
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        pauses.uninstall()
    assert pauses.collections[2] >= 1 and pauses.collections[0] >= 1
    assert pauses.seconds[2] > 0 and 0 < pauses.longest <= sum(pauses.seconds)
    assert registry.value("univrs_gc_collections_total", {"generation": "2"}) == float(
        pauses.collections[2]
    )
    assert registry.value("univrs_gc_pause_seconds_total", {"generation": "2"}) == pauses.seconds[2]
    assert registry.value("univrs_gc_longest_pause_seconds") == pauses.longest
    # Counted when settle() froze, not at every scrape (counting walks the whole permanent
    # generation: about 14 ms at 110,000 objects).
    assert registry.value("univrs_gc_frozen_objects") == 1234.0
    assert registry.value("univrs_gc_freezes_total") == 3.0
    before = pauses.collections[2]
    gc.collect(2)  # uninstalled: no longer counted
    assert pauses.collections[2] == before
