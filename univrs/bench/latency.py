"""Latency histograms that merge: the bench's figures from several client processes.

``Histogram`` counts latencies in microseconds into log-linear buckets (HDR-style): exact
below ``SUB`` us, above that ``SUB`` buckets per power of two, so a bucket is at most
1/``SUB`` (0.8 %) of its value wide. Two histograms merge by adding their bucket counts, which
gives exactly the histogram of all their values together: the worker processes of
``scripts/bench --client-procs N`` (univrs/bench/workers.py) each send theirs (``to_json``)
and the bench merges them before taking percentiles. A percentile is the nearest-rank value's
bucket, reported as the bucket's midpoint (exact below ``SUB`` us), clamped to the exact
minimum and maximum kept beside the buckets.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["SUB", "Histogram"]

SUB = 128  # buckets per power of two (and the exact range, in us)
_SHIFT = SUB.bit_length() - 1  # log2(SUB)


def bucket_of(us: int) -> int:
    """The bucket index of a latency of ``us`` microseconds (>= 0)."""
    if us < SUB:
        return us
    shift = us.bit_length() - 1 - _SHIFT  # us >> shift lands in [SUB, 2 * SUB)
    return SUB * shift + (us >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """[low, high) microseconds of bucket ``index``."""
    if index < 2 * SUB:
        return index, index + 1
    shift, sub = divmod(index, SUB)
    shift -= 1
    sub += SUB
    return sub << shift, (sub + 1) << shift


@attrs.define(eq=False)
class Histogram:
    """Latencies (seconds in, microsecond buckets) that merge across processes."""

    counts: dict[int, int] = attrs.field(factory=dict)
    count: int = 0
    total_us: int = 0
    min_us: int | None = None
    max_us: int | None = None

    def record(self, seconds: float) -> None:
        """Count one latency (``bucket_of`` written out: this runs for every operation the
        bench's loops complete, s19-client)."""
        us = int(seconds * 1_000_000)
        if us < SUB:
            if us < 0:
                us = 0
            index = us
        else:
            shift = us.bit_length() - 1 - _SHIFT
            index = SUB * shift + (us >> shift)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        self.total_us += us
        low = self.min_us
        if low is None or us < low:
            self.min_us = us
        high = self.max_us
        if high is None or us > high:
            self.max_us = us

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s latencies to this histogram (returns it)."""
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        for mine, theirs, pick in (("min_us", other.min_us, min), ("max_us", other.max_us, max)):
            if theirs is not None:
                current = getattr(self, mine)
                setattr(self, mine, theirs if current is None else pick(current, theirs))
        return self

    def quantile_ms(self, q: float) -> float:
        """The ``q`` quantile (nearest rank) in milliseconds, NaN when empty."""
        if not self.count:
            return float("nan")
        rank = min(self.count - 1, int(q * self.count))  # 0-based, as sorted_values[rank]
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen > rank:
                low, high = bucket_bounds(index)
                mid = low if high - low == 1 else (low + high - 1) / 2
                assert self.min_us is not None and self.max_us is not None
                return min(max(mid, self.min_us), self.max_us) / 1000
        raise AssertionError("counts do not add up to count")

    def max_ms(self) -> float:
        return float("nan") if self.max_us is None else self.max_us / 1000

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (``from_json`` reads it back)."""
        return {
            "counts": sorted(self.counts.items()),
            "count": self.count,
            "total_us": self.total_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Histogram:
        return cls(
            counts={int(i): int(n) for i, n in doc["counts"]},
            count=int(doc["count"]),
            total_us=int(doc["total_us"]),
            min_us=doc["min_us"],
            max_us=doc["max_us"],
        )

    @classmethod
    def merged(cls, parts: list[Histogram]) -> Histogram:
        out = cls()
        for part in parts:
            out.merge(part)
        return out
