"""The randomness the core needs, as a Protocol: the runtime injects a seeded generator.

``random.Random`` satisfies it; the core never imports ``random`` (tests/test_imports.py), so
every random choice (election timeouts) comes from the generator it was given and a simulation
replays exactly from its seed.
"""

from __future__ import annotations

from typing import Protocol


class Rng(Protocol):
    """A source of random integers (the subset of ``random.Random`` the core uses)."""

    def randint(self, a: int, b: int) -> int:
        """Return a random integer N with a <= N <= b."""
        ...
