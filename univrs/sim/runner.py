"""Running seeds: one seed to a SeedResult, a range of seeds to a RunSummary.

This is the single entry point the CLI (``python -m univrs.sim``) and the tests share.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from univrs.sim.checker import InvariantViolation
from univrs.sim.cluster import SimStats, Simulation
from univrs.sim.faults import TICK
from univrs.sim.mutants import (
    ALL_MUTANTS,
    kv_factory,
    mutant_lease,
    mutant_unbound_bootstrap,
    node_factory,
    proposals_factory,
)

DEFAULT_NODES = 5
DEFAULT_TICKS = 2000
DEFAULT_QUIET_TICKS = 400


@attrs.frozen(kw_only=True)
class SeedResult:
    """The outcome of one seed: stats when it passed, the violation when it failed."""

    seed: int
    nodes: int
    ticks: int
    mutant: str | None
    # Forced ``RaftConfig.unlisted_leaders`` (None: the seed drew it; cluster.py).
    unlisted_leaders: bool | None = None
    lease: str = "off"
    state_backend: str = "memory"
    unbound_bootstrap: bool = False
    commit_notice_bytes: int = 0  # the cores' lazy_commit_notice_bytes (cluster.py)
    rollback: str = "off"  # rollback faults (rollback.py)
    stats: SimStats | None = None
    invariant: str | None = None
    detail: str | None = None
    at_tick: float | None = None
    trace: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.invariant is None

    @property
    def replay(self) -> str:
        return replay_command(
            self.seed,
            nodes=self.nodes,
            ticks=self.ticks,
            mutant=self.mutant,
            unlisted_leaders=self.unlisted_leaders,
            lease=self.lease,
            state_backend=self.state_backend,
            unbound_bootstrap=self.unbound_bootstrap,
            commit_notice_bytes=self.commit_notice_bytes,
            rollback=self.rollback,
        )

    def failure_key(self) -> tuple[str | None, str | None, float | None]:
        """What must be identical when the seed is replayed."""
        return (self.invariant, self.detail, self.at_tick)


@attrs.frozen(kw_only=True)
class RunSummary:
    """The outcome of a range of seeds: how many passed, the first failure, the speed."""

    passed: int
    failure: SeedResult | None
    elapsed: float

    @property
    def seeds_per_second(self) -> float:
        ran = self.passed + (1 if self.failure else 0)
        return ran / self.elapsed if self.elapsed > 0 else float("inf")


def replay_command(
    seed: int,
    *,
    nodes: int = DEFAULT_NODES,
    ticks: int = DEFAULT_TICKS,
    mutant: str | None = None,
    unlisted_leaders: bool | None = None,
    lease: str = "off",
    state_backend: str = "memory",
    unbound_bootstrap: bool = False,
    commit_notice_bytes: int = 0,
    rollback: str = "off",
) -> str:
    """The exact command line that replays ``seed``."""
    cmd = f"python -m univrs.sim --seeds 1 --seed {seed} --nodes {nodes}"
    if ticks != DEFAULT_TICKS:
        cmd += f" --ticks {ticks}"
    if unbound_bootstrap and not mutant_unbound_bootstrap(mutant):
        cmd += " --unbound-bootstrap"
    if state_backend != "memory":
        cmd += f" --state-backend {state_backend}"
    if commit_notice_bytes:
        cmd += f" --commit-notice-bytes {commit_notice_bytes}"
    if lease != "off":
        cmd += f" --lease {lease}"
    if rollback != "off":
        cmd += f" --rollback {rollback}"
    if mutant:
        cmd += f" --mutant {mutant}"
    if unlisted_leaders is not None:
        cmd += f" --unlisted-leaders {'on' if unlisted_leaders else 'off'}"
    return cmd


def run_seed(
    seed: int,
    *,
    nodes: int = DEFAULT_NODES,
    ticks: int = DEFAULT_TICKS,
    mutant: str | None = None,
    quiet_ticks: int = DEFAULT_QUIET_TICKS,
    unlisted_leaders: bool | None = None,
    lease: str = "off",
    state_backend: str = "memory",
    unbound_bootstrap: bool = False,
    commit_notice_bytes: int = 0,
    rollback: str = "off",
) -> SeedResult:
    """Simulate one seed; never raises for a failing run (the result says why it failed).

    ``lease``: the simulator's lease mode (cluster.py); "off" runs a lease mutant in its own.
    ``unlisted_leaders`` forces ``RaftConfig.unlisted_leaders`` (None: the seed draws it).
    ``commit_notice_bytes``: the cores' ``RaftConfig.lazy_commit_notice_bytes`` (0, the
    core's default, sends every commit at once; nodes run 1024).
    ``rollback``: rollback faults, "off", "checked" or "unchecked" (rollback.py).
    """
    if lease == "off":
        lease = mutant_lease(mutant)
    unbound_bootstrap = unbound_bootstrap or mutant_unbound_bootstrap(mutant)
    sim = Simulation(
        unbound_bootstrap=unbound_bootstrap,
        unlisted_leaders=unlisted_leaders,
        lease=lease,
        seed=seed,
        n_nodes=nodes,
        ticks=ticks,
        quiet_ticks=quiet_ticks,
        node_factory=node_factory(mutant),
        proposals_factory=proposals_factory(mutant),
        kv_factory=kv_factory(mutant),
        state_backend=state_backend,
        commit_notice_bytes=commit_notice_bytes,
        rollback=rollback,
    )
    ran = SeedResult(
        seed=seed,
        nodes=nodes,
        ticks=ticks,
        mutant=mutant,
        unlisted_leaders=unlisted_leaders,
        lease=lease,
        state_backend=state_backend,
        unbound_bootstrap=unbound_bootstrap,
        commit_notice_bytes=commit_notice_bytes,
        rollback=rollback,
    )
    try:
        stats = sim.run()
    except InvariantViolation as v:
        return attrs.evolve(
            ran,
            invariant=v.invariant,
            detail=v.detail,
            at_tick=sim.now / TICK,
            trace=tuple(sim.format_trace()),
        )
    return attrs.evolve(ran, stats=stats)


def run_seeds(
    base: int,
    count: int,
    *,
    nodes: int = DEFAULT_NODES,
    ticks: int = DEFAULT_TICKS,
    mutant: str | None = None,
    on_result: Callable[[SeedResult], None] | None = None,
    unlisted_leaders: bool | None = None,
    lease: str = "off",
    state_backend: str = "memory",
    unbound_bootstrap: bool = False,
    commit_notice_bytes: int = 0,
    rollback: str = "off",
) -> RunSummary:
    """Run seeds base .. base+count-1, stopping at the first failure."""
    if mutant is not None and mutant not in ALL_MUTANTS:
        raise ValueError(f"unknown mutant {mutant!r}; known: {', '.join(ALL_MUTANTS)}")
    start = time.perf_counter()
    passed = 0
    failure = None
    for seed in range(base, base + count):
        r = run_seed(
            seed,
            nodes=nodes,
            ticks=ticks,
            mutant=mutant,
            unlisted_leaders=unlisted_leaders,
            lease=lease,
            state_backend=state_backend,
            unbound_bootstrap=unbound_bootstrap,
            commit_notice_bytes=commit_notice_bytes,
            rollback=rollback,
        )
        if on_result is not None:
            on_result(r)
        if not r.ok:
            failure = r
            break
        passed += 1
    return RunSummary(passed=passed, failure=failure, elapsed=time.perf_counter() - start)
