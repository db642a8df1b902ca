"""The limit helpers on their own: token buckets, JSON depth, connection counting."""

from __future__ import annotations

import pytest

from univrs.api.limits import ConnectionLimiter, RateLimiter, check_depth
from univrs.errors import MalformedRequest, RateLimited


def test_token_bucket_refills_and_keys_are_separate() -> None:
    now = [0.0]
    bucket = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        bucket.take("a", "opens")
    with pytest.raises(RateLimited) as limited:
        bucket.take("a", "opens")
    assert limited.value.retry_after == pytest.approx(0.5)
    bucket.take("b", "opens")  # another caller's bucket is full
    now[0] = 0.5  # one unit back after 1/rate seconds
    bucket.take("a", "opens")
    with pytest.raises(RateLimited):
        bucket.take("a", "opens")
    now[0] = 100.0  # never more than the burst saved up
    for _ in range(3):
        bucket.take("a", "opens")
    with pytest.raises(RateLimited):
        bucket.take("a", "opens")


def test_depth_is_counted_outside_strings() -> None:
    check_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": [[1]]}', 3)
    check_depth(b'{"a": "\\"[[[[[[[["}', 1)
    with pytest.raises(MalformedRequest, match="deeper than 3"):
        check_depth(b'{"a": [[{"b": 1}]]}', 3)


def test_connections_are_counted_per_address_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = ConnectionLimiter(limit=2, listener="REST")
    assert limiter.acquire("10.0.0.1") and limiter.acquire("10.0.0.1")
    assert not limiter.acquire("10.0.0.1") and not limiter.acquire("10.0.0.1")
    assert limiter.acquire("10.0.0.2")
    assert limiter.refused == 2
    assert len([r for r in caplog.records if "refusing REST" in r.getMessage()]) == 1
    limiter.release("10.0.0.1")
    assert limiter.acquire("10.0.0.1") and limiter.open_from("10.0.0.1") == 2
