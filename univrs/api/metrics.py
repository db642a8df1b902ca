"""The client surface's metrics, registered in the node's registry (served at ``/metrics``)."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from univrs.metrics import Counter, Histogram, Registry


@attrs.define(eq=False)
class ApiMetrics:
    """Requests by operation and outcome, their latency, and how well requests batch."""

    requests: Counter
    forwarded: Counter
    write_seconds: Histogram
    read_seconds: Histogram

    @classmethod
    def register(
        cls,
        registry: Registry,
        *,
        proposal_batches: Callable[[], int],
        proposals: Callable[[], int],
        read_confirmations: Callable[[], int],
    ) -> ApiMetrics:
        """Create the metrics in ``registry`` (once per node); the callables are read when
        the metrics are scraped."""
        registry.counter_callback(
            "univrs_api_proposal_batches_total",
            "Batches of proposals appended to the log on this node (one propose_many each).",
            lambda: [((), float(proposal_batches()))],
        )
        registry.counter_callback(
            "univrs_api_batched_proposals_total",
            "Proposals appended to the log in those batches on this node.",
            lambda: [((), float(proposals()))],
        )
        registry.counter_callback(
            "univrs_api_read_confirmations_total",
            "ReadIndex confirmations requested for linearizable reads (one serves many reads).",
            lambda: [((), float(read_confirmations()))],
        )
        return cls(
            requests=registry.counter(
                "univrs_api_requests_total",
                "Client requests served by this node (REST and fast protocol), by operation "
                "and outcome (ok or the error code).",
                ("op", "outcome"),
            ),
            forwarded=registry.counter(
                "univrs_api_forwarded_total",
                "Writes this node forwarded to the leader, by outcome.",
                ("outcome",),
            ),
            write_seconds=registry.histogram(
                "univrs_api_write_seconds", "Time to execute a write on this node."
            ),
            read_seconds=registry.histogram(
                "univrs_api_read_seconds", "Time to execute a read on this node."
            ),
        )
