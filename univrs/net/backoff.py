"""Capped exponential backoff with jitter, for redialing a peer.

The n-th consecutive failure waits ``min(maximum, initial * multiplier**n)`` scaled by a random
factor in ``[1 - jitter, 1]`` drawn from an injected ``random.Random``, so a test (or a replayed
chaos run) sees the same delays for the same seed, and nodes that lost a peer at the same moment
do not redial it in lockstep. ``reset()`` after a connection proved stable.
"""

from __future__ import annotations

import random

import attrs


@attrs.frozen(kw_only=True)
class BackoffPolicy:
    """Parameters of the backoff (seconds). Invariant: 0 < initial <= maximum, 0 <= jitter <= 1."""

    initial: float = 0.05
    # Low, so that a link comes back soon after a partition heals; a redial is cheap.
    maximum: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __attrs_post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial}, {self.maximum}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def ceiling(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (failures >= 1)."""
        # Cap the exponent too, so a peer that is down for days cannot overflow a float.
        base = self.initial * self.multiplier ** min(max(failures - 1, 0), 64)
        return min(self.maximum, base)


@attrs.define(eq=False)
class Backoff:
    """The state of one peer's redial schedule (consecutive failures so far)."""

    policy: BackoffPolicy
    rng: random.Random
    failures: int = 0

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next attempt."""
        self.failures += 1
        ceiling = self.policy.ceiling(self.failures)
        return ceiling * (1.0 - self.policy.jitter * self.rng.random())

    def reset(self) -> None:
        """Forget past failures (the last connection was healthy)."""
        self.failures = 0
