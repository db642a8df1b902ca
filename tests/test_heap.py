"""The node process's GC settings (univrs/server/heap.py)."""

from __future__ import annotations

import gc
import subprocess
import sys

from univrs.metrics import Registry
from univrs.server.heap import GcPauses, register_gc_metrics

# In a fresh interpreter: settle(), then how many objects a full collection still walks.
_PROBE = """
import gc
from univrs.server.heap import settle
from univrs.metrics import Registry
from univrs.server.heap import register_gc_metrics
frozen = settle()
registry = Registry()
register_gc_metrics(registry)
walked = len(gc.get_objects())
later = [[i] for i in range(1_000)]
gc.freeze()  # the permanent generation grows: the gauge keeps settle()'s count (no walk)
young = gc.get_stats()[0]["collections"]
in_flight = [{"request": i} for i in range(5_000)]  # a load's live set grows by 5,000, then goes
del in_flight
young = gc.get_stats()[0]["collections"] - young
print(frozen, walked, int(registry.value("univrs_gc_frozen_objects")), young)
"""


def test_settle_leaves_the_imported_modules_out_of_full_collections() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    frozen, walked, exported, young = (int(v) for v in out.stdout.split())
    # The count settle() took, not one per scrape (counting walks the permanent generation:
    # 14 ms at 110,000 objects, on the event loop).
    assert exported == frozen
    # The node's imports are tens of thousands of containers (about 100,000 with the HTTP API);
    # after the freeze a full collection walks a small remainder of them.
    assert frozen > 20_000
    assert walked < frozen // 10
    # 5,000 containers alive at once ran no young collection (CPython's default threshold of
    # 700 runs seven, each walking the whole young set: "Round 11 (s12-cpu)").
    assert young == 0


def test_pauses_are_counted_by_generation_and_exported() -> None:
    pauses = GcPauses()
    registry = Registry()
    register_gc_metrics(registry, pauses, frozen=lambda: 1234)
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
    before = pauses.collections[2]
    gc.collect(2)  # uninstalled: no longer counted
    assert pauses.collections[2] == before
