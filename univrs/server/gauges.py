"""The node's gauges beyond the runtime's own: the watch history, liveness and the reconciler
(docs/orchestrator.md), read from their parts whenever ``/metrics`` is scraped."""

from __future__ import annotations

from collections.abc import Callable

from univrs.metrics import Registry
from univrs.runtime.liveness import Liveness
from univrs.runtime.watch import WatchHub
from univrs.service.reconcile import Reconciler


def watch_metrics(
    r: Registry, hub: WatchHub, liveness: Liveness, reconciler: Reconciler | None
) -> None:
    """Register the gauges of the watch history, of liveness and of the reconciler
    (``reconciler`` None: it is off) in ``r`` (docs/orchestrator.md)."""

    def one(read: Callable[[], float]) -> Callable[[], list[tuple[tuple[str, ...], float]]]:
        return lambda: [((), float(read()))]

    r.gauge("univrs_watch_watchers", "Watchers served now.", callback=one(lambda: hub.watchers))
    r.gauge(
        "univrs_watch_compacted_revision",
        "Revisions up to this one may be missing from the watch history here.",
        callback=one(lambda: hub.compacted_revision),
    )
    r.gauge(
        "univrs_watch_dropped_events",
        "Events dropped from the watch history for room (since start).",
        callback=one(lambda: hub.dropped_events),
    )
    r.gauge(
        "univrs_liveness_marked_down",
        "Nodes this node marked down as leader, for missing heartbeats (since start).",
        callback=one(lambda: liveness.marked_down),
    )
    if reconciler is None:
        return
    m = reconciler.metrics
    r.gauge(
        "univrs_reconcile_pending",
        "Missing instances no ready node could take, at the reconciler's last pass.",
        callback=one(lambda: m.pending),
    )
    r.gauge(
        "univrs_reconcile_active",
        "1 while this node's reconciler runs (it leads), else 0.",
        callback=one(lambda: 0 if reconciler.active_term is None else 1),
    )
    for name, read, text in (
        ("placed", lambda: m.placed, "Instances the reconciler placed here as leader."),
        ("removed", lambda: m.removed, "Instances it removed (surplus or lost with a node)."),
        ("replaced", lambda: m.replaced, "Of those, instances lost with a down node."),
        ("failed", lambda: m.failed, "Its placement or removal writes that were refused."),
    ):
        r.gauge(f"univrs_reconcile_{name}", f"{text} (since start)", callback=one(read))
