"""The node process's heap and CPython's cyclic garbage collector.

A full (generation 2) collection walks every container object the interpreter tracks. A node
process holds about 100,000 of them before it has done anything: the modules it imported
(trio, cbor2, prometheus-client, the MCP SDK and pydantic behind the HTTP API). Measured on
this project's 2-core machine, one such collection takes about 100 ms, and under a write load
CPython runs one every few seconds: every request in flight waited for it (the 64-client p99
of docs/performance.md, "Round 8").

``settle`` is called once by ``univrs node start`` before the node runs: it imports what the
node will import anyway, collects once, and moves every object alive at that moment into the
permanent generation (``gc.freeze``), which collections skip. Those objects are still freed by
reference counting if they are dropped; only a reference cycle among them would stay, and
modules live for the whole process.

What a node creates while it serves is not frozen (but for a memory backend's restored state:
univrs/runtime/snapshots.py), and some of it lives for seconds: the watch
history keeps the captured changes of its last 10,000 events (about 18 containers per write).
Under a write load those reach generation 2, and CPython runs a full collection every 3 to 14 s
that walks them all again (35,000 to 80,000 objects, 25 to 35 ms of CPU on the event loop, and
frees nothing): the cause of most "event loop late" lines under load (docs/performance.md,
"Round 10", which also says why freezing each full collection's survivors was tried and not
kept).

``settle`` also raises the youngest generation's threshold (``YOUNG_THRESHOLD``, below).

Not done in processes that run several nodes (the tests): freezing there would keep the
earlier tests' cyclic garbage alive.

``GcPauses`` (univrs/runtime/stalls.py, where the ticker reads it for a late tick's evidence)
measures every collection's pause (``gc.callbacks``) for the nodes' metrics:
``univrs_gc_collections_total``, ``univrs_gc_pause_seconds_total`` by generation, the longest
pause and ``univrs_gc_frozen_objects`` (the start-up freeze's count, taken once: counting the
permanent generation walks it, 14 ms at 110,000 objects, a stall of its own at every scrape).
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Callable, Iterable

from univrs.metrics import Registry
from univrs.runtime.stalls import GC_PAUSES, GcPauses

__all__ = ["GC_PAUSES", "GcPauses", "register_gc_metrics", "settle"]

# What a node process imports before it serves; importing them here, before the freeze, puts
# their objects in the permanent generation.
NODE_MODULES = ("univrs.server.node", "univrs.api.server")


def settle(modules: Iterable[str] = NODE_MODULES) -> int:
    """Import ``modules``, collect once, freeze what is alive; returns the frozen count (kept
    for ``univrs_gc_frozen_objects``)."""
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    FROZEN_AT_START[0] = gc.get_freeze_count()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    return FROZEN_AT_START[0]


# The youngest generation's threshold once settled (CPython's default: 700). In CPython 3.11
# the count is net: allocations of tracked objects minus their deallocations, so it measures
# how far the live young set grew, not how much was allocated. A leader under load holds a few
# thousand containers per batch in flight (client frames, waiters, commands, entries until
# they apply); at 700 each swing of that set ran a young collection that walked the whole set
# and promoted what was in flight, which the next collections walked again and, promoted on,
# a full collection walked (docs/performance.md, "Round 11 (s12-cpu)": 130-270 ms of
# collections per 8 s on the leader at 64 clients, about 0.026 ms of its 0.265 ms per write on
# a loaded machine, full collections among them; with 10,000: 0 to 8 ms). What lives for
# good still reaches generation 2; cyclic garbage is still collected, after at most this many
# net allocations.
YOUNG_THRESHOLD = 10_000


# The permanent generation's size after ``settle`` (counting it walks it: not per scrape).
FROZEN_AT_START = [0]


def register_gc_metrics(
    registry: Registry, pauses: GcPauses = GC_PAUSES, frozen: Callable[[], int] | None = None
) -> None:
    """The process's GC figures in a node's registry (read when scraped)."""
    pauses.install()
    registry.counter_callback(
        "univrs_gc_collections_total",
        "Cyclic garbage collections run by this process, by generation.",
        lambda: [((str(g),), float(n)) for g, n in enumerate(pauses.collections)],
        ("generation",),
    )
    registry.counter_callback(
        "univrs_gc_pause_seconds_total",
        "Time this process spent in cyclic garbage collections (the event loop stood still), "
        "by generation.",
        lambda: [((str(g),), s) for g, s in enumerate(pauses.seconds)],
        ("generation",),
    )
    registry.gauge(
        "univrs_gc_longest_pause_seconds",
        "The longest single cyclic garbage collection of this process since it started.",
        callback=lambda: [((), pauses.longest)],
    )
    count = frozen or (lambda: FROZEN_AT_START[0])
    registry.gauge(
        "univrs_gc_frozen_objects",
        "Objects put in the permanent generation, which collections skip, at start-up "
        "(univrs/server/heap.py).",
        callback=lambda: [((), float(count()))],
    )
