"""Redial backoff: exponential growth, cap, jitter bounds, reset, determinism per seed."""

from __future__ import annotations

import random

import pytest

from univrs.net.backoff import Backoff, BackoffPolicy


def test_ceiling_grows_exponentially_then_caps() -> None:
    policy = BackoffPolicy(initial=0.1, maximum=2.0, multiplier=2.0, jitter=0.0)
    ceilings = [policy.ceiling(n) for n in range(1, 9)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    # A peer down for a very long time must not overflow.
    assert policy.ceiling(10_000) == 2.0


def test_without_jitter_delays_equal_the_ceiling() -> None:
    b = Backoff(policy=BackoffPolicy(initial=0.05, maximum=1.0, jitter=0.0), rng=random.Random(1))
    assert [b.next_delay() for _ in range(6)] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0])


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_bounds(seed: int) -> None:
    policy = BackoffPolicy(initial=0.05, maximum=5.0, jitter=0.5)
    b = Backoff(policy=policy, rng=random.Random(seed))
    for n in range(1, 30):
        delay = b.next_delay()
        ceiling = policy.ceiling(n)
        assert ceiling * 0.5 <= delay <= ceiling
        assert delay <= policy.maximum


def test_jitter_actually_varies_and_is_reproducible() -> None:
    policy = BackoffPolicy(initial=1.0, maximum=1.0, jitter=0.5)
    a = Backoff(policy=policy, rng=random.Random(7))
    b = Backoff(policy=policy, rng=random.Random(7))
    da = [a.next_delay() for _ in range(10)]
    assert da == [b.next_delay() for _ in range(10)]
    assert len(set(da)) > 1


def test_reset_starts_over() -> None:
    b = Backoff(policy=BackoffPolicy(initial=0.1, maximum=10.0, jitter=0.0), rng=random.Random(0))
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.next_delay() == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0.0},
        {"initial": 2.0, "maximum": 1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)
