"""A small Prometheus text-format registry: counters, gauges and histograms, no dependencies.

Only what a node exports is supported: metrics with a fixed label-name set, rendered by
``Registry.render()`` in the text exposition format (version 0.0.4).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

import attrs

LabelValues = tuple[str, ...]

# Seconds; suited to fsyncs and commits on local disks and loopback clusters.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


@attrs.define(eq=False)
class Counter:
    """A monotonically increasing value per label set."""

    name: str
    help: str
    label_names: tuple[str, ...] = ()
    _values: dict[LabelValues, float] = attrs.field(factory=dict)

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        assert amount >= 0, "counters only go up"
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for lv, v in sorted(self._values.items()):
            yield f"{self.name}{_labels(self.label_names, lv)} {_num(v)}"


@attrs.define(eq=False)
class Gauge:
    """A value that goes up and down; either set directly or read from a callback at render."""

    name: str
    help: str
    label_names: tuple[str, ...] = ()
    callback: Callable[[], Iterable[tuple[LabelValues, float]]] | None = None
    _values: dict[LabelValues, float] = attrs.field(factory=dict)

    def set(self, value: float, *labels: str) -> None:
        self._values[labels] = float(value)

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        items = list(self.callback()) if self.callback else sorted(self._values.items())
        for lv, v in items:
            yield f"{self.name}{_labels(self.label_names, lv)} {_num(v)}"


@attrs.define(eq=False)
class Histogram:
    """Observations counted into cumulative buckets, with sum and count."""

    name: str
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    _counts: list[int] = attrs.field(init=False)
    _sum: float = 0.0
    _count: int = 0

    def __attrs_post_init__(self) -> None:
        self._counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self._sum += value
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        running = 0
        for bound, c in zip((*self.buckets, math.inf), self._counts, strict=True):
            running += c
            yield f'{self.name}_bucket{{le="{_num(bound)}"}} {running}'
        yield f"{self.name}_sum {_num(self._sum)}"
        yield f"{self.name}_count {self._count}"


Metric = Counter | Gauge | Histogram


@attrs.define(eq=False)
class Registry:
    """Holds a node's metrics and renders them in the Prometheus text format."""

    _metrics: dict[str, Metric] = attrs.field(factory=dict)

    def _add(self, metric: Metric) -> Metric:
        assert metric.name not in self._metrics, f"duplicate metric {metric.name}"
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, label_names: tuple[str, ...] = ()) -> Counter:
        m = Counter(name, help, label_names)
        self._add(m)
        return m

    def gauge(
        self,
        name: str,
        help: str,
        label_names: tuple[str, ...] = (),
        callback: Callable[[], Iterable[tuple[LabelValues, float]]] | None = None,
    ) -> Gauge:
        m = Gauge(name, help, label_names, callback)
        self._add(m)
        return m

    def histogram(
        self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> Histogram:
        m = Histogram(name, help, buckets)
        self._add(m)
        return m

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
