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

That left the objects the node creates while it serves, and some of them live long: the watch
history keeps the captured changes of the last 10,000 events (about 18 containers per write,
60,000 at a 64-client load), the log cache its entries, the memory backend its state. Under a
write load those kept a full collection running every few seconds, each walking every one of
them again: 25 to 30 ms of CPU each at 60,000 (a 100,000-object cluster under 64 writers), on
the event loop, stretched to 110-170 ms when the loaded machine descheduled the process
meanwhile: the "event loop late" lines of docs/performance.md, "Round 10". So ``settle`` also
installs ``REFREEZE``: at the end of every full collection it freezes the survivors. At that
moment the younger generations are empty (a full collection merges them) and every tracked
object left is reachable, so nothing that is garbage is frozen; each object is walked by at
most about one full collection, and the next full collection walks only what survived since.
The price is the same as for the start-up freeze: a reference cycle whose objects were alive
at a freeze and dropped later is never collected (plain objects, the bulk, are still freed by
reference counting). trio keeps its task tree free of cycles; an exception's traceback cycle
is young garbage, collected before it could be frozen.

Not done in processes that run several nodes (the tests): freezing there would keep the
earlier tests' cyclic garbage alive.

``GcPauses`` (univrs/runtime/stalls.py, where the ticker reads it for a late tick's evidence)
measures every collection's pause (``gc.callbacks``) for the nodes' metrics:
``univrs_gc_collections_total``, ``univrs_gc_pause_seconds_total`` by generation, the longest
pause, ``univrs_gc_frozen_objects`` (the start-up freeze's count: counting the permanent
generation walks it, 14 ms at 110,000 objects, too long for every scrape) and
``univrs_gc_freezes_total`` (full collections whose survivors were frozen).
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterable
from typing import Any

import attrs

from univrs.metrics import Registry
from univrs.runtime.stalls import GC_PAUSES, GcPauses

__all__ = ["GC_PAUSES", "REFREEZE", "GcPauses", "Refreeze", "register_gc_metrics", "settle"]

# What a node process imports before it serves; importing them here, before the freeze, puts
# their objects in the permanent generation.
NODE_MODULES = ("univrs.server.node", "univrs.api.server")


def settle(modules: Iterable[str] = NODE_MODULES) -> int:
    """Import ``modules``, collect once, freeze what is alive, and from then on freeze every
    full collection's survivors (``REFREEZE``); returns the frozen count."""
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    REFREEZE.install()
    REFREEZE.frozen_at_start = gc.get_freeze_count()
    return REFREEZE.frozen_at_start


@attrs.define(eq=False)
class Refreeze:
    """Freezes the survivors of every full collection (see the module docstring)."""

    freezes: int = 0  # full collections whose survivors were frozen
    frozen_at_start: int = 0  # the permanent generation's size after ``settle``
    _installed: bool = attrs.field(default=False, init=False)

    def install(self) -> None:
        """Start (once per process; later calls do nothing)."""
        if not self._installed:
            self._installed = True
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop."""
        if self._installed:
            self._installed = False
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # At the end of a full collection generations 0 and 1 are empty (merged into 2 for
        # the collection) and generation 2 holds only reachable objects: freeze them.
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()
            self.freezes += 1


REFREEZE = Refreeze()


def register_gc_metrics(
    registry: Registry, pauses: GcPauses = GC_PAUSES, refreeze: Refreeze | None = None
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
    frozen = refreeze or REFREEZE
    registry.gauge(
        "univrs_gc_frozen_objects",
        "Objects put in the permanent generation, which collections skip, at start-up "
        "(univrs/server/heap.py).",
        callback=lambda: [((), float(frozen.frozen_at_start))],
    )
    registry.counter_callback(
        "univrs_gc_freezes_total",
        "Full collections whose survivors were frozen (univrs/server/heap.py).",
        lambda: [((), float(frozen.freezes))],
    )
