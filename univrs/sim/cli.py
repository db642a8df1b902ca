"""``python -m univrs.sim``: run many seeds of the cluster simulator, or replay one.

Prints ``N seeds passed`` as its last line and exits 0, or stops at the first failing seed,
prints the violated invariant with context and the command that replays it, and exits 1.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from typing import TextIO

from univrs.sim.mutants import ALL_MUTANTS, LEASE_MUTANTS
from univrs.sim.runner import DEFAULT_NODES, DEFAULT_TICKS, SeedResult, run_seeds


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m univrs.sim",
        description="Deterministic simulation of a univrs Raft cluster under faults.",
    )
    p.add_argument("--seeds", type=int, default=1, help="how many seeds to run (default 1)")
    p.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    p.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="cluster size, 3 to 7")
    p.add_argument(
        "--ticks", type=int, default=DEFAULT_TICKS, help="ticks of the fault phase per seed"
    )
    p.add_argument("--mutant", default=None, help="run a deliberately broken core")
    p.add_argument(
        "--unlisted-leaders",
        choices=("seed", "on", "off"),
        default="seed",
        help="RaftConfig.unlisted_leaders of the cores: on as with TLS, off as plaintext, "
        "or drawn per seed (default, half each way)",
    )
    p.add_argument(
        "--lease",
        choices=("off", "within", "beyond", "mixed"),
        default="off",
        help="read leases on, every node's clock drifting within or beyond the bound; mixed: "
        "within, one node running leases off (default off)",
    )
    p.add_argument(
        "--state-backend",
        choices=("memory", "lmdb"),
        default="memory",
        help="each node's state machine in memory (default) or persisted in LMDB, resumed "
        "from it at a restart (univrs/sim/statestore.py)",
    )
    p.add_argument(
        "--unbound-bootstrap",
        action="store_true",
        help="the bootstrap configuration binds no member to an incarnation, as the product's "
        "does until the leader's binding change (default: bound from the start)",
    )
    p.add_argument(
        "--commit-notice-bytes",
        type=int,
        default=0,
        help="RaftConfig.lazy_commit_notice_bytes of the cores: 0 (the core's default, with "
        "which the pinned seeds were found) sends every commit at once; nodes run 1024",
    )
    p.add_argument(
        "--rollback",
        choices=("off", "checked", "unchecked"),
        default="off",
        help="put older copies of members' data dirs back (same incarnation) after a later "
        "start: checked, peers refuse them by their start counter (the product); unchecked, "
        "the code before start counters (univrs/sim/rollback.py; default off)",
    )
    p.add_argument("--list-mutants", action="store_true", help="list mutants and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per seed")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit status."""
    out = out if out is not None else sys.stdout
    args = _parser().parse_args(argv)
    if args.list_mutants:
        for name, m in ALL_MUTANTS.items():
            width = max(len(n) for n in ALL_MUTANTS)
            if name in LEASE_MUTANTS:
                print(f"{name:{width}} {m.description} (lease mode)", file=out)
                continue
            if m.unbound_bootstrap:
                print(f"{name:{width}} {m.description} (unbound bootstrap)", file=out)
                continue
            print(f"{name:{width}} {m.description}", file=out)
        return 0
    if args.mutant is not None and args.mutant not in ALL_MUTANTS:
        print(f"unknown mutant {args.mutant!r}; try --list-mutants", file=out)
        return 2
    if not 3 <= args.nodes <= 7:
        print("--nodes must be between 3 and 7", file=out)
        return 2
    if args.seeds < 1 or args.ticks < 1:
        print("--seeds and --ticks must be positive", file=out)
        return 2
    if args.commit_notice_bytes < 0:
        print("--commit-notice-bytes must not be negative", file=out)
        return 2
    base = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    unlisted = {"seed": None, "on": True, "off": False}[args.unlisted_leaders]
    what = f"{args.nodes} nodes, {args.ticks} ticks" + (
        f", mutant {args.mutant}" if args.mutant else ""
    )
    if unlisted is not None:
        what += f", unlisted leaders {args.unlisted_leaders}"
    if args.lease == "mixed":
        what += ", lease reads with clocks within the bound, one node's leases off"
    elif args.lease != "off":
        what += f", lease reads with clocks {args.lease} the bound"
    if args.state_backend != "memory":
        what += f", state in {args.state_backend}"
    if args.unbound_bootstrap:
        what += ", unbound bootstrap"
    if args.commit_notice_bytes:
        what += f", lazy commit notices up to {args.commit_notice_bytes} bytes"
    if args.rollback != "off":
        what += f", rollback faults {args.rollback}"
    if args.seed is None or args.verbose:
        print(f"seeds {base}..{base + args.seeds - 1} ({what})", file=out, flush=True)

    def report(r: SeedResult) -> None:
        if args.verbose and r.stats is not None:
            s = r.stats
            print(
                f"seed {r.seed}: ok: {s.ticks} ticks, {s.elections} leaders (max term "
                f"{s.max_term}), {s.committed} committed, {s.writes_acked} writes acked "
                f"({s.writes_conflict} conflicts, {s.writes_unknown} unknown, {s.forwards} "
                f"forwarded, {s.covered} covered by a snapshot), "
                f"{s.reads_served} reads served ({s.reads_dropped} dropped), {s.crashes} "
                f"crashes, {s.faults} faults, {s.messages} messages ({s.dropped} lost), "
                f"{s.snapshots} snapshots ({s.installs} installed), {s.config_changes} "
                f"membership changes ({s.leader_removals} leader removals, {s.rejoins} rejoins, "
                f"{s.replaced} replaced, {s.repairs} repairs, {s.diverged} diverged), "
                f"{s.refused} messages refused (incarnation), {s.forged} forged "
                f"({s.forged_refused} refused by the core), {s.batch_entries} batch entries "
                f"({s.batched_writes} writes), {s.lease_reads} lease reads"
                f"{f' ({s.lease_gated} gated)' if s.lease_gated else ''}"
                f", {s.acks_later} acks left for the leader's next input"
                + (
                    f", {s.state_resumes} resumes from the state env ({s.state_rollbacks} after "
                    "losing unsynced commits)"
                    if args.state_backend == "lmdb"
                    else ""
                )
                + (
                    f", {s.rollbacks} older copies put back ({s.fenced_copies} fenced)"
                    if args.rollback != "off"
                    else ""
                ),
                file=out,
                flush=True,
            )

    summary = run_seeds(
        base,
        args.seeds,
        nodes=args.nodes,
        ticks=args.ticks,
        mutant=args.mutant,
        on_result=report,
        unlisted_leaders=unlisted,
        lease=args.lease,
        state_backend=args.state_backend,
        unbound_bootstrap=args.unbound_bootstrap,
        commit_notice_bytes=args.commit_notice_bytes,
        rollback=args.rollback,
    )
    ran = summary.passed + (1 if summary.failure else 0)
    rate = f"{ran} seeds in {summary.elapsed:.1f}s: {summary.seeds_per_second:.2f} seeds/s ({what})"
    f = summary.failure
    if f is None:
        print(rate, file=out)
        print(f"{summary.passed} seeds passed", file=out)
        return 0
    print(f"FAILED seed {f.seed} ({what}); {summary.passed} seeds before it passed", file=out)
    print(f"invariant violated: {f.invariant}", file=out)
    print(f"at tick {f.at_tick:.1f}: {f.detail}", file=out)
    if f.trace:
        print("last events before the failure:", file=out)
        for line in f.trace:
            print(line, file=out)
    print(rate, file=out)
    print(f"replay: {f.replay}", file=out)
    return 1
