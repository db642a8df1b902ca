"""s14-audit L1 in the simulator: ``--lease mixed`` runs one node with read leases off among
nodes with them on (clocks as ``within``), and the leaders' lease reads go through the lease
gate the Trio driver asks (univrs/runtime/capabilities.py ``lease_gate``,
``ReadyRuntime.lease_gate_open``): a leader whose members include the node running leases
off serves its lease reads as ReadIndex reads, and every read is checked (linearizable-read)
as in every lease mode. tests/raft/test_raft_audit3_lease_mix.py builds the stale read the
gate prevents; the simulator's random schedule rarely lines it up (docs/simulator.md)."""

from __future__ import annotations

import io

from univrs.sim.cli import main
from univrs.sim.cluster import Simulation
from univrs.sim.runner import run_seed


def test_mixed_seeds_pass_and_the_gate_turns_lease_reads_away() -> None:
    gated = 0
    for seed in (1, 2):
        r = run_seed(seed, nodes=3, ticks=600, lease="mixed")
        assert r.ok, f"{r.invariant}: {r.detail}\n{r.replay}"
        assert r.stats is not None and r.stats.lease_reads > 0
        gated += r.stats.lease_gated
    assert gated > 0


def test_the_gate_reads_each_nodes_own_settings() -> None:
    sim = Simulation(seed=3, n_nodes=3, ticks=200, lease="mixed")
    off = sim.lease_off
    assert off is not None and off in sim.node_ids
    assert sim.config is not None and sim.config.read_lease
    assert not sim.config_of(off).read_lease
    assert all(sim.config_of(n).read_lease for n in sim.node_ids if n != off)
    # Without the gate (the runtime before s14-audit) nothing is turned away.
    ungated = Simulation(seed=3, n_nodes=3, ticks=200, lease="mixed", lease_gate=False)
    assert ungated.run().lease_gated == 0


def test_the_cli_takes_mixed() -> None:
    out = io.StringIO()
    assert (
        main(
            ["--seeds", "1", "--seed", "1", "--nodes", "3", "--ticks", "300", "--lease", "mixed"],
            out=out,
        )
        == 0
    )
    assert "one node's leases off" in out.getvalue()
