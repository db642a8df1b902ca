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
from univrs.sim.invariants import LEADER_COMPLETENESS, STATE_MACHINE_SAFETY
from univrs.sim.runner import run_seed

# (seed, nodes, the invariant the unchecked run breaks); found by the sweeps of
# docs/security.md (seeds 90000.., 100 per block; re-found in session 16 when the simulator's
# start records took the product's rules: only listed members are recorded and heard).
PINNED = [(90006, 3, LEADER_COMPLETENESS), (90011, 5, STATE_MACHINE_SAFETY)]


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


def _started_sim() -> Simulation:
    sim = Simulation(seed=90010, n_nodes=3, ticks=60, rollback="checked")
    sim.run()
    # n1's configuration no longer lists n3 (as after n3's removal): n3 is a stranger to it.
    sim.nodes["n1"].configured = frozenset({"n1", "n2"})
    return sim


def test_the_start_model_hears_only_listed_members() -> None:
    # As the transport (univrs/net/inbound_starts.py): a ``seen`` naming a later start of the
    # receiver fences it only when a member it lists sends it; a stranger's is ignored.
    sim = _started_sim()
    n1 = sim.nodes["n1"]
    assert n1.disk.start is not None and not n1.fenced
    stranger = sim.nodes["n3"]
    later = (n1.disk.incarnation, n1.disk.start.counter + 3, "0" * 16)
    stranger.disk.start_records[(n1.id, n1.disk.incarnation)] = later[1:]
    assert sim._start_taken(n1, stranger.id, stranger.disk.incarnation, None, stranger.life)
    assert not n1.fenced
    member = sim.nodes["n2"]
    assert member.id in n1.configured
    member.disk.start_records[(n1.id, n1.disk.incarnation)] = later[1:]
    assert not sim._start_taken(n1, member.id, member.disk.incarnation, None, member.life)
    assert n1.fenced


def test_the_start_model_records_only_listed_members() -> None:
    sim = _started_sim()
    n1 = sim.nodes["n1"]
    stranger = sim.nodes["n3"]
    assert stranger.disk.start is not None
    start = stranger.disk.start.following("1" * 16)
    assert sim._start_taken(n1, stranger.id, stranger.disk.incarnation, start, stranger.life)
    assert (stranger.id, stranger.disk.incarnation) not in n1.disk.start_records
    n2 = sim.nodes["n2"]
    assert n2.disk.start is not None
    start = n2.disk.start.following("2" * 16)
    assert sim._start_taken(n1, n2.id, n2.disk.incarnation, start, n2.life)
    assert n1.disk.start_records[(n2.id, n2.disk.incarnation)] == (start.counter, start.boot)
