"""univrs/bench/latency.py: the bench's mergeable latency histograms (no processes)."""

from __future__ import annotations

import json
import math
import random

from univrs.bench.latency import SUB, Histogram, bucket_bounds, bucket_of


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def test_every_microsecond_value_falls_in_its_bucket_and_buckets_are_narrow() -> None:
    for us in [*range(0, 3 * SUB), 1_000, 4_095, 4_096, 123_456, 10**7, 2**40 + 3]:
        low, high = bucket_bounds(bucket_of(us))
        assert low <= us < high
        assert high - low <= max(1, low / SUB)
    # Buckets are contiguous and ordered: the next bucket starts where this one ends.
    for index in range(0, 20 * SUB):
        assert bucket_bounds(index)[1] == bucket_bounds(index + 1)[0]


def test_quantiles_are_within_one_bucket_of_the_exact_nearest_rank() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-5.5, 1.0) for _ in range(20_000)]  # ~4 ms median
    h = Histogram()
    for v in values:
        h.record(v)
    for q in (0.0, 0.5, 0.9, 0.99, 0.999):
        exact = _exact(values, q)
        assert math.isclose(h.quantile_ms(q), exact, rel_tol=1 / SUB, abs_tol=0.001)
    assert h.max_ms() == int(max(values) * 1e6) / 1000
    assert h.count == len(values)


def test_merging_gives_the_histogram_of_all_the_values() -> None:
    rng = random.Random(11)
    fast = [rng.uniform(0.0005, 0.002) for _ in range(5_000)]
    slow = [rng.uniform(0.010, 0.050) for _ in range(500)]
    whole, a, b = Histogram(), Histogram(), Histogram()
    for v in fast:
        whole.record(v)
        a.record(v)
    for v in slow:
        whole.record(v)
        b.record(v)
    # Through JSON, as the worker processes send them.
    parts = [Histogram.from_json(json.loads(json.dumps(h.to_json()))) for h in (a, b)]
    merged = Histogram.merged(parts)
    assert merged.counts == whole.counts
    assert (merged.count, merged.total_us, merged.min_us, merged.max_us) == (
        whole.count,
        whole.total_us,
        whole.min_us,
        whole.max_us,
    )
    # The tail is the slow process's: a merge that averaged per-process p99s would miss it.
    assert merged.quantile_ms(0.99) >= 10.0
    assert a.quantile_ms(0.99) < 2.1
    assert math.isclose(merged.quantile_ms(0.99), _exact(fast + slow, 0.99), rel_tol=1 / SUB)


def test_an_empty_histogram_has_no_figures_and_merges_as_nothing() -> None:
    empty = Histogram()
    assert math.isnan(empty.quantile_ms(0.5)) and math.isnan(empty.max_ms())
    h = Histogram()
    h.record(0.003)
    h.merge(empty)
    assert h.count == 1 and h.min_us == h.max_us == 3000
    assert Histogram().merge(h).quantile_ms(0.5) == 3.0


def test_record_counts_each_value_in_its_bucket() -> None:
    """``record`` (``bucket_of`` written out, s19-client) counts a latency where ``bucket_of``
    puts it; a negative one as 0 us."""
    values = [-0.5, -1e-6, 0.0, 1e-6, *(us / 1e6 for us in (127, 128, 255, 256, 4_096, 10**7))]
    h = Histogram()
    for v in values:
        h.record(v)
    expected: dict[int, int] = {}
    for v in values:
        index = bucket_of(max(0, int(v * 1_000_000)))
        expected[index] = expected.get(index, 0) + 1
    assert h.counts == expected
    assert (h.min_us, h.max_us, h.count) == (0, 10**7, len(values))
    assert h.total_us == sum(max(0, int(v * 1_000_000)) for v in values)
