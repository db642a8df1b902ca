"""Test tiers. ``scripts/test --quick`` runs ``-m "not slow and not process"`` without tests/api
(the inner loop: core, state machine, codec, storage, net, runtime, chaos units and a few
simulator seeds, under a minute); ``scripts/test`` runs the default suite (CI): every tier but
``soak`` (pyproject's ``addopts`` says ``-m 'not soak'``); ``scripts/test --all`` runs every
tier.

``process`` marks tests that start real node processes (every test under tests/process, and
modules that say so with ``pytestmark``). ``slow`` marks the long simulator sweeps and mutant
hunts listed below: they stay in the default run, bounded. ``soak`` marks the longest process
scenarios and the long fuzz and bench runs (listed below) whose capability a test of the default
run covers too: they are opt-in, to keep the default run near fifteen minutes on two cores.
"""

from __future__ import annotations

import pytest

# Node-id prefixes (relative to the repository root) of tests that take long.
SLOW = (
    "tests/test_sim_runs.py::test_many_seeds_pass",
    "tests/test_mutants.py::test_mutant_is_caught_and_its_seed_replays",
    "tests/test_mutants.py::test_replay_in_a_fresh_process",
)


# Node ids of the soak tier: each with what it took in a loaded run of tests/process and
# tests/api (1727 s in all, load average 10-14 on two cores) and where the default run still
# covers its capability with real processes. (The secured ``scripts/cluster`` end to end,
# tests/process/test_secure_cluster_process.py, stays in the default run although it is the
# longest: it is the security issue's acceptance test.)
SOAK = (
    # 186 s. Covered: test_auth_process::test_join_a_cluster_with_auth_carries_the_callers_token
    # (401 without a token, tokens replicated, the CLI with a token); roles in-process by
    # tests/api/test_auth.py and tests/api/test_cli_auth.py.
    "tests/process/test_auth_process.py::test_tokens_and_roles_across_processes",
    # 84 s. Covered: test_backup_process::test_a_two_voter_cluster_with_a_dead_member_is_recovered
    # (recover) and ::test_save_under_writes_then_restore_into_a_new_cluster (backup, restore).
    "tests/process/test_backup_process.py::test_recover_a_lone_survivor_then_join_two_new_nodes",
    # 72 s. Covered: test_replace_process::
    # test_a_node_killed_while_joining_completes_the_join_on_restart (join, transfer to a
    # joiner, remove a bootstrap member) and test_membership_process.
    "tests/process/test_replace_process.py::test_every_bootstrap_member_is_replaced_under_load",
    # 56 s (loaded, load 17, session 5). Covered: test_reconcile_process::
    # test_a_leader_killed_during_a_scale_to_50_leaves_exactly_50 (the same scenario by hand:
    # leader SIGKILLed during a scale to 50, exactly 50 after, none on the lost machine).
    "tests/process/test_reconcile_process.py::test_the_reconcile_leader_kill_chaos_scenario_passes",
    # 42 s (loaded). Covered: tests/bench/test_bench.py (measure, the linearizability sample and
    # its checker, medians, arguments, the report, in-process); tests/chaos's smoke scenario
    # checks a real cluster's history.
    "tests/process/test_bench.py::test_a_short_bench_run_writes_its_figures_and_checks_its_sample",
    # 94 s (loaded). Covered: test_bench_scale::test_a_spent_budget_stops_the_run_with_what_it_
    # measured (run_cluster on real processes); a joiner given the leader's state by snapshot:
    # test_membership_process::test_join_snapshot_install_and_catch_up.
    "tests/process/test_bench_scale.py::"
    "test_a_seeded_cluster_gives_every_figure_and_the_joined_member_the_leaders_state",
    # 90 s and 107 s (loaded). The second half of the simulator's seed sweep (seeds 51-100 at
    # 3 and 5 nodes); seeds 1-50 at each stay in the default run, every mutant keeps its
    # own test (tests/test_mutants.py).
    "tests/test_sim_runs.py::test_many_seeds_pass[51-3]",
    "tests/test_sim_runs.py::test_many_seeds_pass[51-5]",
    # 11 s (loaded). Covered: test_fuzz_surfaces::test_hostile_clients_get_answers_never_a_bug
    # (every surface, every kind of hostile value, seed 1, fewer rounds).
    "tests/api/test_fuzz_surfaces.py::test_hostile_clients_at_length",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith("tests/process/"):
            item.add_marker(pytest.mark.process)
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
        if item.nodeid in SOAK:
            item.add_marker(pytest.mark.soak)


@pytest.fixture(autouse=True)
def _private_session_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI caches its idempotency session (univrs/cli/session.py) under the user's cache
    dir: tests keep theirs in a temporary folder instead."""
    monkeypatch.setenv("UNIVRS_SESSION_DIR", str(tmp_path_factory.mktemp("univrs-sessions")))
