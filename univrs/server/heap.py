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
modules live for the whole process. The collections that remain walk what the node created
since (its runtime, log cache and, on the memory backend, the state, which the snapshot
restore freezes likewise: univrs/runtime/snapshots.py).

Not done in processes that run several nodes (the tests): freezing there would keep the
earlier tests' cyclic garbage alive.

``GcPauses`` measures every collection's pause (``gc.callbacks``) for the nodes' metrics:
``univrs_gc_collections_total``, ``univrs_gc_pause_seconds_total`` by generation, the longest
pause, and ``univrs_gc_frozen_objects``.
"""

from __future__ import annotations

import gc
import importlib
import time
from collections.abc import Iterable
from typing import Any

import attrs

from univrs.metrics import Registry

__all__ = ["GC_PAUSES", "GcPauses", "register_gc_metrics", "settle"]

# What a node process imports before it serves; importing them here, before the freeze, puts
# their objects in the permanent generation.
NODE_MODULES = ("univrs.server.node", "univrs.api.server")


def settle(modules: Iterable[str] = NODE_MODULES) -> int:
    """Import ``modules``, collect once, freeze what is alive; returns the frozen count."""
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@attrs.define(eq=False)
class GcPauses:
    """Collections and their pauses in this process, by generation (0, 1, 2)."""

    collections: list[int] = attrs.field(factory=lambda: [0, 0, 0])
    seconds: list[float] = attrs.field(factory=lambda: [0.0, 0.0, 0.0])
    longest: float = 0.0
    _started: float = attrs.field(default=0.0, init=False)
    _installed: bool = attrs.field(default=False, init=False)

    def install(self) -> None:
        """Start measuring (once per process; later calls do nothing)."""
        if not self._installed:
            self._installed = True
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop measuring."""
        if self._installed:
            self._installed = False
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = min(int(info.get("generation", 2)), 2)
        self.collections[generation] += 1
        self.seconds[generation] += pause
        self.longest = max(self.longest, pause)


GC_PAUSES = GcPauses()


def register_gc_metrics(registry: Registry, pauses: GcPauses = GC_PAUSES) -> None:
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
    registry.gauge(
        "univrs_gc_frozen_objects",
        "Objects in the permanent generation, which collections skip (univrs/server/heap.py).",
        callback=lambda: [((), float(gc.get_freeze_count()))],
    )
