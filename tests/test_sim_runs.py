"""The cluster simulator on whole runs: many seeds must pass, a seed replays exactly, the CLI, and
the faults and paths each run must reach."""

from __future__ import annotations

import io
from typing import Any

import pytest

from tests.sim_helpers import NODES, apply_all, durable_everywhere, entry, expect, write
from univrs.raft import RaftNode
from univrs.sim import checker as ck
from univrs.sim.checker import Checker
from univrs.sim.cli import main
from univrs.sim.cluster import Simulation
from univrs.sim.runner import run_seed

SEEDS = 100  # per node count (the 2000-seed sweeps are run by hand: docs/simulator.md)
CHUNK = 50


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("first", range(1, SEEDS + 1, CHUNK))
def test_many_seeds_pass(nodes: int, first: int) -> None:
    for seed in range(first, first + CHUNK):
        r = run_seed(seed, nodes=nodes)
        if (nodes, seed) in PLAINTEXT_GAP:
            # The open plaintext gap (docs/security.md): it must fail on liveness only, and
            # pass with TLS's rule; any other failure, or a pass, is news.
            assert not r.ok and r.invariant == ck.LIVENESS, (seed, r.invariant, r.detail)
            assert run_seed(seed, nodes=nodes, unlisted_leaders=True).ok, seed
            continue
        assert r.ok, f"{r.invariant}: {r.detail}\n" + "\n".join(r.trace) + f"\n{r.replay}"


@pytest.mark.parametrize(("nodes", "seeds"), [(3, 40), (5, 20)])
def test_seeds_pass_with_the_nodes_lazy_commit_notices(nodes: int, seeds: int) -> None:
    # The cores as nodes run them (NodeConfig.raft_config: lazy_commit_notice_bytes 1024, a
    # small commit rides on the next append or goes at the next tick); the sweeps above keep
    # the core's default (0), with which their pinned seeds were found.
    for seed in range(1, seeds + 1):
        r = run_seed(seed, nodes=nodes, commit_notice_bytes=1024)
        assert r.ok, f"{r.invariant}: {r.detail}\n" + "\n".join(r.trace) + f"\n{r.replay}"


class EveryHeartbeat(RaftNode):
    """The core of s15-repl: lazy notices unanswered, every periodic heartbeat sent, every
    ReadIndex round to every peer (narrow rounds came in s16-reads)."""

    def _skips_heartbeats(self) -> bool:
        return False

    def _send_read_round(self) -> None:
        self._broadcast_heartbeat()


# Lazy-notice seeds in an open gap, each with its signature, on the core they were found
# with. 3 nodes seed 13 (s15-repl: its unanswered commit notices moved the course at t=184):
# n1, leader of term 6 in a seed drawn without CheckQuorum, lists only n2.0 (now n2.1) and n4
# (retired): it hears no one it admits, so nothing deposes it, and it refuses the real leader
# n3, of {n1, n3}, as a stranger for good. No commit notice is sent after the faults heal.
# The real core's skipped heartbeats (s15-beat) move its course off the gap: it passes (the
# sweep above); the gap itself is still open (docs/liveness-gaps.md).
LAZY_GAP: dict[tuple[int, int], tuple[type[RaftNode], str]] = {
    (3, 13): (EveryHeartbeat, "n1 (voter): leader term 6 commit 97")
}


def test_lazy_gap_seeds_still_fail_on_the_core_they_were_found_with() -> None:
    for (nodes, seed), (core, signature) in LAZY_GAP.items():
        sim = Simulation(seed=seed, n_nodes=nodes, commit_notice_bytes=1024, node_factory=core)
        with pytest.raises(ck.InvariantViolation) as failed:
            sim.run()
        assert failed.value.invariant == ck.LIVENESS, (seed, failed.value)
        assert signature in failed.value.detail, (seed, failed.value.detail)


# Seeds that draw plaintext (``unlisted_leaders`` off) and hit the open gap named in
# docs/security.md: no live member the lagging voter lists can vouch for the leader it needs
# (its only live listed peer was wiped), so a 3-voter cluster stays leaderless until an
# operator steps in. They pass with TLS (unlisted leaders on). None among these seeds since a
# new leader sends the log to a member its uncommitted change removes (seed 40 was one: its
# course moved off the gap); tests/test_sim_verify.py holds the gap with seed 40209.
PLAINTEXT_GAP: frozenset[tuple[int, int]] = frozenset()


def test_a_seed_replays_exactly() -> None:
    a = run_seed(11, nodes=5)
    b = run_seed(11, nodes=5)
    assert a.ok and b.ok
    assert a.stats == b.stats
    assert a.stats is not None and a.stats.writes_acked > 0 and a.stats.reads_served > 0


def test_cli_prints_the_pass_line() -> None:
    out = io.StringIO()
    assert main(["--seeds", "2", "--seed", "5", "--nodes", "3"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[-1] == "2 seeds passed"
    assert "seeds/s" in lines[-2]


def test_cli_rejects_bad_arguments() -> None:
    for args in (["--nodes", "2"], ["--nodes", "8"], ["--mutant", "nope"], ["--seeds", "0"]):
        assert main(args, out=io.StringIO()) == 2
    assert main(["--commit-notice-bytes", "-1"], out=io.StringIO()) == 2


def test_lazy_commit_notices_reach_the_cores_and_the_replay_command() -> None:
    # run_seed takes the nodes' lazy commit notices (RaftConfig.lazy_commit_notice_bytes),
    # its replay command names them, and the CLI runs the same seed with them.
    lazy = run_seed(5, nodes=3, ticks=300, commit_notice_bytes=1024)
    eager = run_seed(5, nodes=3, ticks=300)
    assert lazy.ok and eager.ok and lazy.stats is not None and eager.stats is not None
    assert lazy.stats.messages != eager.stats.messages  # fewer commit-only messages
    assert lazy.replay.endswith("--ticks 300 --commit-notice-bytes 1024")
    assert "commit-notice" not in eager.replay
    out = io.StringIO()
    argv = lazy.replay.split()[3:]  # (python -m univrs.sim ...)
    assert main([*argv, "-v"], out=out) == 0
    assert f" {lazy.stats.messages} messages " in out.getvalue()


class _Crashing(RaftNode):
    """A core that fails an assertion after a while."""

    def tick(self) -> None:
        super().tick()
        assert self.status().term < 3, "boom"


class _Inconsistent(RaftNode):
    """A core whose self-checks report a broken invariant after a while."""

    def problems(self) -> list[str]:
        st = self.status()
        return [f"{self.id}: commit {st.commit} is odd"] if st.commit > 3 and st.commit % 2 else []


class _Mute(RaftNode):
    """A core that never campaigns: no leader, ever."""

    def tick(self) -> None:
        pass


def test_a_core_exception_is_reported_as_a_failure() -> None:
    sim = Simulation(seed=3, n_nodes=3, ticks=300, node_factory=_Crashing)
    with expect(ck.CORE_EXCEPTION):
        sim.run()


def test_the_cores_own_invariants_are_checked_after_every_step() -> None:
    sim = Simulation(seed=3, n_nodes=3, ticks=300, node_factory=_Inconsistent)
    with expect(ck.CORE_INVARIANT):
        sim.run()


def test_a_cluster_without_progress_fails_liveness() -> None:
    sim = Simulation(seed=3, n_nodes=3, ticks=50, quiet_ticks=50, node_factory=_Mute)
    with expect(ck.LIVENESS):
        sim.run()


def test_snapshot_with_wrong_state_or_term_is_caught() -> None:
    c = Checker(voters=NODES)
    log = [entry(1, 1), write(2, 1, "x", "v2"), write(3, 1, "y", "v3")]
    durable_everywhere(c, log)
    apply_all(c, "a", log)
    c.observe_snapshot("b", 3, 1, durable=False)  # right snapshot: fine
    c.check_snapshot_state("b", 3, {"x": "v2", "y": "v3"})
    with expect(ck.STATE_MACHINE_SAFETY):
        c.check_snapshot_state("b", 2, {"x": "v2", "y": "v3"})  # y was not written by index 2
    with expect(ck.STATE_MACHINE_SAFETY):
        c.observe_snapshot("c", 3, 2, durable=True)  # the entry at 3 is of term 1
    with expect(ck.READY_CONTRACT):
        c.observe_snapshot("c", 4, 1, durable=True)  # nothing is committed at 4


def test_snapshots_membership_and_the_write_path_happen_across_seeds() -> None:
    taken = installed = changes = leader_removals = rejoins = 0
    forwards = conflicts = unknown = batches = batched = 0
    for seed in range(1, 40):
        r = run_seed(seed, nodes=3, ticks=600)
        assert r.ok, f"{r.invariant}: {r.detail}\n{r.replay}"
        assert r.stats is not None
        taken += r.stats.snapshots
        installed += r.stats.installs
        changes += r.stats.config_changes
        leader_removals += r.stats.leader_removals
        rejoins += r.stats.rejoins
        forwards += r.stats.forwards
        conflicts += r.stats.writes_conflict
        unknown += r.stats.writes_unknown
        batches += r.stats.batch_entries
        batched += r.stats.batched_writes
    assert taken > 0 and installed > 0
    assert batched > batches > 0  # batch entries are committed, of several writes each
    assert forwards > 0 and conflicts > 0 and unknown > 0  # the API's write path is exercised
    assert changes > 0 and leader_removals > 0 and rejoins > 0


def test_incarnations_wipes_repairs_and_divergence_happen_across_seeds() -> None:
    totals = {"repairs": 0, "replaced": 0, "diverged": 0, "refused": 0, "covered": 0}
    # Seed 61: a snapshot install covers pending proposals (none of 1-29 has one since
    # session 26, when a voter without PreVote began to answer an older term's vote request).
    for seed in [*range(1, 30), 61]:
        r = run_seed(seed, nodes=5, ticks=1000)
        assert r.ok, f"{r.invariant}: {r.detail}\n{r.replay}"
        assert r.stats is not None
        for k in totals:
            totals[k] += getattr(r.stats, k)
    assert all(totals.values()), totals


@pytest.mark.parametrize(
    ("seed", "nodes", "old_rule", "invariant"),
    [
        # A wiped node re-added under its id replays a configuration where its old incarnation
        # was the only voter; a core that does not know its own incarnation (as before issue
        # 10) would elect itself there with a log lacking committed entries. The simulator
        # found it; the core now takes RaftNode(incarnation=...) and does not campaign as
        # another incarnation. (Seed 19 until the sender rule of issue 12 changed its course;
        # 44 until crash loops targeted the leader and lived up to 20 ticks; 19 again since;
        # one entry per write, as before batch entries changed the course of every seed; 377
        # since the leader keeps removed members a few heartbeat rounds longer.)
        pytest.param(
            377, 3, {"core_incarnation": False}, ck.COMMITTED_DURABLE, id="amnesiac-elected"
        ),
        # A learner that installs a snapshot whose configuration lists the leader's previous
        # incarnation refused the leader for ever under the transport's first rule (the listing
        # always wins). The transport and the simulator now let the side with the older
        # configuration yield (hello ``cfg``/``bound``; tests/net/test_transport_incarnation.py);
        # strict_incarnations keeps the old rule so that the simulator shows it finds the bug.
        # (Seed 35 until the leader kept removed members a few heartbeat rounds longer, which
        # changed its course; 74 until a new leader sent the log to a member its uncommitted
        # change removes; 264 until a voter without PreVote answered an older term's vote
        # request, session 26; 224 since.)
        pytest.param(
            224, 5, {"strict_incarnations": True}, ck.LIVENESS, id="replaced-leader-locked-out"
        ),
    ],
)
def test_an_old_incarnation_rule_fails_its_pinned_seed(
    seed: int, nodes: int, old_rule: dict[str, Any], invariant: str
) -> None:
    """The old rule breaks its seed (one entry per write, unlisted leaders on); the real core
    passes the same seed (``run`` raises on any violation)."""
    common: dict[str, Any] = {
        "seed": seed,
        "n_nodes": nodes,
        "batch_entries": False,
        "unlisted_leaders": True,
    }
    with expect(invariant):
        Simulation(**common, **old_rule).run()
    Simulation(**common).run()
