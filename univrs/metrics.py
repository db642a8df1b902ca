"""A node's metrics registry: prometheus-client underneath, one registry per node.

Tests run several nodes in one process, so nothing is registered in prometheus-client's global
default registry: each node owns a ``Registry`` (a ``CollectorRegistry``) and ``/metrics``
renders it in the text exposition format (version 0.0.4). The wrappers below keep call sites
short (``counter.inc(1, op, outcome)``) and enforce the Prometheus naming conventions at
registration: counters end in ``_total``, histograms of durations in ``_seconds``, sizes in
``_bytes``; every metric has help text and the ``univrs_`` prefix. Gauges and counters whose
value lives elsewhere (the Raft status, the storage statistics) are read at scrape time
through callbacks.

Importing this module turns off prometheus-client's ``*_created`` series (process-wide): they
double the series count and no univrs dashboard needs them.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator

import attrs
import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

LabelValues = tuple[str, ...]
Samples = Callable[[], Iterable[tuple[LabelValues, float]]]

# Seconds; suited to fsyncs and commits on local disks and loopback clusters.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip

PREFIX = "univrs_"


def check_name(name: str, kind: str, help: str) -> None:
    """Refuse a metric name that breaks the conventions (see the module docstring)."""
    assert name.startswith(PREFIX), f"{name}: metric names start with {PREFIX}"
    assert help.strip(), f"{name}: every metric has help text"
    if kind == "counter":
        assert name.endswith("_total"), f"{name}: a counter's name ends in _total"
    else:
        assert not name.endswith("_total"), f"{name}: only counters end in _total"


@attrs.define(eq=False)
class Counter:
    """A monotonically increasing value per label set."""

    _metric: prometheus_client.Counter
    _labelled: bool

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        assert amount >= 0, "counters only go up"
        (self._metric.labels(*labels) if self._labelled else self._metric).inc(amount)

    def labels(self, *values: str) -> Counter:
        """The counter of one label set (its ``inc`` takes the amount only)."""
        assert self._labelled, "an unlabelled counter has no label sets"
        return Counter(self._metric.labels(*values), False)


@attrs.define(eq=False)
class Gauge:
    """A value that goes up and down, set directly."""

    _metric: prometheus_client.Gauge
    _labelled: bool

    def set(self, value: float, *labels: str) -> None:
        (self._metric.labels(*labels) if self._labelled else self._metric).set(value)


@attrs.define(eq=False)
class Histogram:
    """Observations counted into cumulative buckets, with sum and count."""

    _metric: prometheus_client.Histogram
    _labelled: bool
    _count: int = 0

    def observe(self, value: float, *labels: str) -> None:
        (self._metric.labels(*labels) if self._labelled else self._metric).observe(value)
        self._count += 1

    def observe_many(self, value: float, count: int, *labels: str) -> None:
        """``count`` observations of the same ``value`` (requests answered together), with one
        sum increment and one bucket increment. prometheus_client has no such call: this
        uses its histogram's fields (``_sum``, ``_upper_bounds``, ``_buckets``) and falls
        back to ``count`` observations if they are not there."""
        metric = self._metric.labels(*labels) if self._labelled else self._metric
        self._count += count
        try:
            total, bounds, buckets = metric._sum, metric._upper_bounds, metric._buckets
        except AttributeError:
            for _ in range(count):
                metric.observe(value)
            return
        total.inc(value * count)
        for i, bound in enumerate(bounds):
            if value <= bound:
                buckets[i].inc(count)
                break

    @property
    def count(self) -> int:
        """Observations so far, over every label set."""
        return self._count


@attrs.define(eq=False)
class _Callback(Collector):
    """A gauge or counter family whose samples are read when scraped."""

    name: str
    help: str
    kind: str  # "gauge" or "counter"
    label_names: tuple[str, ...]
    read: Samples

    def collect(self) -> Iterator[Metric]:
        family: Metric
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.help, labels=self.label_names)
        else:
            family = GaugeMetricFamily(self.name, self.help, labels=self.label_names)
        for values, value in self.read():
            family.add_metric(list(values), value)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read lazily: nothing to check at registration beyond the name


@attrs.define(eq=False)
class Registry:
    """One node's metrics (see the module docstring)."""

    prom: prometheus_client.CollectorRegistry = attrs.field(
        factory=lambda: prometheus_client.CollectorRegistry(auto_describe=True)
    )

    def counter(self, name: str, help: str, label_names: tuple[str, ...] = ()) -> Counter:
        check_name(name, "counter", help)
        metric = prometheus_client.Counter(name, help, label_names, registry=self.prom)
        return Counter(metric, bool(label_names))

    def gauge(
        self,
        name: str,
        help: str,
        label_names: tuple[str, ...] = (),
        callback: Samples | None = None,
    ) -> Gauge | None:
        """A gauge set directly, or (with ``callback``) read when scraped (returns None)."""
        check_name(name, "gauge", help)
        if callback is not None:
            self.prom.register(_Callback(name, help, "gauge", label_names, callback))
            return None
        metric = prometheus_client.Gauge(name, help, label_names, registry=self.prom)
        return Gauge(metric, bool(label_names))

    def counter_callback(
        self, name: str, help: str, callback: Samples, label_names: tuple[str, ...] = ()
    ) -> None:
        """A counter whose value is kept elsewhere (a count that only grows), read when scraped."""
        check_name(name, "counter", help)
        base = name.removesuffix("_total")  # the family name; the sample gets the suffix back
        self.prom.register(_Callback(base, help, "counter", label_names, callback))

    def histogram(
        self,
        name: str,
        help: str,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        label_names: tuple[str, ...] = (),
    ) -> Histogram:
        check_name(name, "histogram", help)
        metric = prometheus_client.Histogram(
            name, help, label_names, registry=self.prom, buckets=buckets
        )
        return Histogram(metric, bool(label_names))

    def build_info(self, version: str) -> None:
        """``univrs_build_info{version, python}`` 1, as Prometheus' own ``*_build_info``."""
        gauge = self.gauge(
            "univrs_build_info",
            "Build information: always 1, the labels say which build runs.",
            ("version", "python"),
        )
        assert gauge is not None
        gauge.set(1, version, platform.python_version())

    def process(self) -> None:
        """The standard ``process_*`` metrics of this process (CPU, memory, fds, start time)."""
        prometheus_client.ProcessCollector(registry=self.prom)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (None if absent): for tests and tools."""
        return self.prom.get_sample_value(name, labels or {})

    def render(self) -> str:
        """The text exposition format (version 0.0.4)."""
        return prometheus_client.generate_latest(self.prom).decode()
