"""Test tiers. ``scripts/test --quick`` runs ``-m "not slow and not process"`` without tests/api
(the inner loop: core, state machine, codec, storage, net, runtime, chaos units and a few
simulator seeds, under a minute); ``scripts/test`` runs everything (CI).

``process`` marks tests that start real node processes (every test under tests/process, and
modules that say so with ``pytestmark``). ``slow`` marks the long simulator sweeps and mutant
hunts listed below: they stay in the full run, bounded.
"""

from __future__ import annotations

import pytest

# Node-id prefixes (relative to the repository root) of tests that take long.
SLOW = (
    "tests/test_sim.py::test_many_seeds_pass",
    "tests/test_mutants.py::test_mutant_is_caught_and_its_seed_replays",
    "tests/test_mutants.py::test_replay_in_a_fresh_process",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith("tests/process/"):
            item.add_marker(pytest.mark.process)
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _private_session_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI caches its idempotency session (univrs/cli/session.py) under the user's cache
    dir: tests keep theirs in a temporary folder instead."""
    monkeypatch.setenv("UNIVRS_SESSION_DIR", str(tmp_path_factory.mktemp("univrs-sessions")))
