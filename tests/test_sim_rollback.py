"""Rollback faults in the simulator (univrs/sim/rollback.py): an older copy of a member's data dir
put back after a later start of it, same incarnation (docs/security.md, "Older copies of a data
dir"). Without the start checks (``unchecked``, the code before s15-start) the copy takes part
and the checker catches the harm: a leader elected without a committed entry, a commit counted
on acknowledgements the copy lost. With them (``checked``) the copy is refused and fenced, and
the same seeds pass."""

from __future__ import annotations

import io

import pytest

from univrs.sim.cli import main
from univrs.sim.cluster import Simulation
from univrs.sim.invariants import COMMITTED_DURABLE, LEADER_COMPLETENESS
from univrs.sim.runner import run_seed

# (seed, nodes, the invariant the unchecked run breaks); found by the sweeps of
# docs/security.md (seeds 90000.., 100 per block).
PINNED = [(90006, 3, LEADER_COMPLETENESS), (90007, 5, COMMITTED_DURABLE)]


@pytest.mark.parametrize(("seed", "nodes", "invariant"), PINNED)
def test_an_older_copy_breaks_safety_without_the_start_check(
    seed: int, nodes: int, invariant: str
) -> None:
    r = run_seed(seed, nodes=nodes, rollback="unchecked")
    assert not r.ok and r.invariant == invariant, r.detail
    assert "--rollback unchecked" in r.replay


@pytest.mark.parametrize(("seed", "nodes", "invariant"), PINNED)
def test_the_same_seeds_pass_with_it_and_the_copy_is_fenced(
    seed: int, nodes: int, invariant: str
) -> None:
    r = run_seed(seed, nodes=nodes, rollback="checked")
    assert r.ok, f"{r.invariant}: {r.detail}\n{r.replay}"
    assert r.stats is not None and r.stats.rollbacks >= 1 and r.stats.fenced_copies >= 1


def test_checked_seeds_pass() -> None:
    put_back = 0
    for seed in range(90010, 90016):
        r = run_seed(seed, nodes=3, rollback="checked")
        assert r.ok, f"{r.invariant}: {r.detail}\n{r.replay}"
        assert r.stats is not None
        put_back += r.stats.rollbacks
    assert put_back > 0


def test_off_draws_nothing_and_records_nothing() -> None:
    # The default leaves every seed as it was: no rollback faults, no start records.
    sim = Simulation(seed=5, n_nodes=3, ticks=300)
    stats = sim.run()
    assert sim.rollbacks is None and stats.rollbacks == 0 and stats.fenced_copies == 0
    assert all(not sn.disk.start_records for sn in sim.nodes.values())
    assert all(sn.disk.start is not None for sn in sim.nodes.values())  # starts still count


def test_the_cli_takes_rollback() -> None:
    out = io.StringIO()
    assert (
        main(
            ["--seeds", "1", "--seed", "90006", "--nodes", "3", "--rollback", "checked", "-v"], out
        )
        == 0
    )
    assert "older copies put back" in out.getvalue()
    with pytest.raises(ValueError, match="in-memory"):
        Simulation(seed=1, n_nodes=3, rollback="checked", state_backend="lmdb")
