"""The simulator with each node's state machine persisted in LMDB (``state_backend="lmdb"``,
univrs/sim/statestore.py, docs/simulator.md): pinned seeds that resume from the env after
crashes (some losing the env's unsynced commits), install snapshots and compact; the
state-durable invariant catches a runtime that adopts a leader's snapshot into the env before
it is stored (the bug the first sweep found in the node); the CLI flag; and an opt-in sweep
(soak tier: ``scripts/test --all``, or ``python -m univrs.sim --state-backend lmdb``).
"""

from __future__ import annotations

import io

import pytest

from univrs.sim import invariants as ck
from univrs.sim.cli import main
from univrs.sim.runner import run_seed
from univrs.sim.runtime import NodeEffects

# (nodes, seed): each resumes from its state env past the stored snapshot, rolls an env back
# to its last sync at a crash, and installs snapshots (checked below, so a change in the
# seeds' courses that loses one is seen).
PINNED = [(3, 1), (3, 2), (5, 3)]


@pytest.mark.parametrize(("nodes", "seed"), PINNED)
def test_pinned_seeds_pass_on_the_lmdb_state(nodes: int, seed: int) -> None:
    r = run_seed(seed, nodes=nodes, state_backend="lmdb")
    assert r.ok, f"{r.invariant}: {r.detail}\n" + "\n".join(r.trace) + f"\n{r.replay}"
    assert r.stats is not None
    assert r.stats.state_resumes > 0 and r.stats.state_rollbacks > 0 and r.stats.installs > 0


def test_a_seed_on_the_lmdb_state_replays_exactly() -> None:
    a = run_seed(1, nodes=3, ticks=700, state_backend="lmdb")
    b = run_seed(1, nodes=3, ticks=700, state_backend="lmdb")
    assert a.ok and a.stats == b.stats
    assert a.stats is not None and a.stats.state_resumes > 0


def test_adopting_an_install_before_it_is_stored_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's old order (tests/runtime/test_state_lmdb_offline.py has it on real nodes):
    the env holds the snapshot's state before the disk does; a crash in between leaves the
    env ahead of the durable log. (Seed 1 until a new leader sent the log to a member its
    uncommitted change removes, which moved its course; 14 until a follower took snapshot
    chunks only from the leader it followed in its term before the chunk; 23 since.)"""
    restore = NodeEffects.restore_snapshot

    def early(self: NodeEffects, install: object, job: object) -> None:
        restore(self, install, job)  # type: ignore[arg-type]
        if self.sn.disk.state is not None:
            self.sn.disk.state.replace(self.sn.kv)
            self.sn.state_stale = False

    monkeypatch.setattr(NodeEffects, "restore_snapshot", early)
    r = run_seed(23, nodes=3, state_backend="lmdb")
    assert r.invariant == ck.STATE_DURABLE, (r.invariant, r.detail)
    assert "ahead of its durable log" in (r.detail or "")
    assert "--state-backend lmdb" in r.replay


def test_cli_takes_the_state_backend() -> None:
    out = io.StringIO()
    assert (
        main(["--seeds", "1", "--seed", "3", "--nodes", "3", "--state-backend", "lmdb"], out=out)
        == 0
    )
    lines = out.getvalue().splitlines()
    assert lines[-1] == "1 seeds passed" and "state in lmdb" in lines[-2]
    with pytest.raises(SystemExit):  # argparse refuses the choice
        main(["--state-backend", "disk"], out=io.StringIO())


SWEEP = 100  # seeds per node count in the soak tier


@pytest.mark.soak
@pytest.mark.parametrize("nodes", [3, 5])
def test_sweep_on_the_lmdb_state(nodes: int) -> None:
    for seed in range(1, SWEEP + 1):
        r = run_seed(seed, nodes=nodes, state_backend="lmdb")
        if (nodes, seed) == (3, 40) and not r.ok:  # the open plaintext gap (tests/test_sim.py)
            assert r.invariant == ck.LIVENESS, (seed, r.invariant, r.detail)
            continue
        if (nodes, seed) == (5, 78):
            # The open seed-40 variant (a stale voter whose log never named its leader),
            # which session 12's rules moved this seed into: pinned in test_sim_verify.py.
            assert not r.ok and r.invariant == ck.LIVENESS, (seed, r.invariant, r.detail)
            continue
        assert r.ok, f"{r.invariant}: {r.detail}\n" + "\n".join(r.trace) + f"\n{r.replay}"
