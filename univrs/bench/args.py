"""The command line of ``scripts/bench`` (``univrs.bench.client``): its options, their bounds
and the checks made before anything starts (a run planned over ``--budget`` is refused; so is
``--loadgen go`` where the Go worker cannot be built, naming what to install)."""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tomllib

from univrs.bench import workers
from univrs.bench.measure import WARMUP
from univrs.bench.report import py_spy_command

__all__ = [
    "DEFAULT_BUDGET",
    "MAX_CLIENTS",
    "MAX_CLIENT_PROCS",
    "MAX_DURATION",
    "MAX_POINTS",
    "MAX_REPEAT",
    "PHASES",
    "client_procs",
    "parse_args",
    "parse_clients",
    "planned_seconds",
    "py_spy_available",
    "raft_setting",
]

MAX_POINTS = 8
MAX_CLIENTS = 4096
MAX_REPEAT = 10
MAX_DURATION = 120.0
MAX_CLIENT_PROCS = 16
DEFAULT_BUDGET = 1800.0
SETUP_ESTIMATE = 20.0  # seconds per client count for starting clusters and creating keys
PHASES = ("writes", "reads", "lease-reads")


def client_procs(text: str) -> int:
    """``--client-procs``: a count, or ``auto`` for one worker process per CPU the bench may
    use (at most ``MAX_CLIENT_PROCS``). The etcd load generator is one Go process whose
    goroutines run on every CPU (GOMAXPROCS defaults to the CPU count); one Python process
    runs its closed loops on one, so ``auto`` gives both sides the same cores."""
    if text == "auto":
        return max(1, min(MAX_CLIENT_PROCS, len(os.sched_getaffinity(0))))
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or 'auto': {text!r}") from None


def raft_setting(text: str) -> str:
    """``--raft KEY=VALUE``: one line of a node's ``[raft]`` table (``KEY = VALUE``, the value
    a TOML scalar); the node checks the key and the value when it loads its config."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    line = f"{key} = {value}"
    try:
        parsed = tomllib.loads(line)
    except tomllib.TOMLDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not KEY=VALUE in TOML: {text!r} ({exc})") from None
    if not sep or not key.isidentifier() or list(parsed) != [key]:
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {text!r}")
    if isinstance(parsed[key], dict | list):
        raise argparse.ArgumentTypeError(f"{key}: a single value, not a table or array")
    return line


def py_spy_available() -> bool:
    """Whether py-spy is installed (next to this Python, or on the PATH)."""
    return py_spy_command(0, pathlib.Path("x"))[0] != "py-spy" or bool(shutil.which("py-spy"))


def parse_clients(text: str) -> list[int]:
    """``1,64,256`` -> [1, 64, 256] (sorted, distinct, bounded); ValueError if invalid."""
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or len(values) > MAX_POINTS or values[0] < 1 or values[-1] > MAX_CLIENTS:
        raise ValueError(
            f"--clients takes 1 to {MAX_POINTS} counts between 1 and {MAX_CLIENTS}, got {text!r}"
        )
    return values


def planned_seconds(args: argparse.Namespace) -> float:
    """How long the run will take at least (the budget check)."""
    phases = 3 if args.reads else 1  # writes; linearizable and lease reads
    systems = 2 if args.compare_etcd else 1
    per = float(args.duration) + WARMUP
    points = len(args.clients)
    total: float = int(args.repeat) * points * phases * per + SETUP_ESTIMATE * points
    return systems * total


def parse_args(argv: list[str] | None, description: str = "") -> argparse.Namespace:
    """The options of ``scripts/bench`` (``description``: its help's first line), checked."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=description)
    parser.add_argument(
        "--clients", default="64", help="concurrent clients, or a sweep: 1,64,256,1024 (64)"
    )
    parser.add_argument("--connections", type=int, default=4, help="client connections (4)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per point, median (3)")
    parser.add_argument(
        "--reads", action="store_true", help="also linearizable reads, and lease reads apart"
    )
    parser.add_argument(
        "--no-check", dest="check", action="store_false", help="skip the linearizability sample"
    )
    parser.add_argument(
        "--compare-etcd", action="store_true", help="the same load against a local etcd"
    )
    parser.add_argument("--nodes", type=int, default=3, help="size of the local cluster(s) (3)")
    parser.add_argument(
        "--batch-entries",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the local cluster packs writes into batch entries or not (raft.batch_entries; "
        "default: the node's default, on)",
    )
    parser.add_argument(
        "--raft",
        action="append",
        default=[],
        type=raft_setting,
        metavar="KEY=VALUE",
        help="a [raft] setting for the local cluster's nodes, as in their config file, e.g. "
        "batch_gather_ms=0 (repeatable; the nodes refuse an unknown key or a bad value)",
    )
    parser.add_argument("--endpoints", help="host:port,... of a running cluster's raft ports")
    parser.add_argument("--dir", help="keep the local clusters' files (configs, logs) here")
    parser.add_argument("--log-level", default="warning", help="the nodes' log level")
    parser.add_argument(
        "--state-backend",
        choices=("memory", "lmdb"),
        help="the nodes' [state] backend (default: the nodes' own default, lmdb)",
    )
    parser.add_argument(
        "--client-procs",
        type=client_procs,
        default="auto",
        metavar="N",
        help="run the clients in N worker processes (1: in the bench's own process; auto, the "
        "default: one per CPU this process may use, as the Go load generator's GOMAXPROCS)",
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "go", "python"),
        default="auto",
        help="what runs the closed loops: the Go worker (one process on every CPU, about a "
        "third of the Python workers' CPU per operation; etcd's side is Go too), the Python "
        "workers (--client-procs), or "
        "auto, the default: go when it can be built here (golang-go, "
        "golang-github-gorilla-websocket-dev), else python",
    )
    parser.add_argument(
        "--write-answer",
        choices=("minimal", "full"),
        default="minimal",
        help="what the writes ask for: their id and version, or the whole document (minimal)",
    )
    parser.add_argument(
        "--read-nodes",
        choices=("leader", "all"),
        default="leader",
        help="linearizable and lease reads go to the leader (following it) or are spread "
        "over every node (followers confirm with the leader: ReadIndex) (leader)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy a process during the first run at the most clients (raw stacks)",
    )
    parser.add_argument(
        "--profile-phase",
        choices=PHASES,
        default="writes",
        help="the phase --profile samples (writes)",
    )
    parser.add_argument(
        "--profile-process",
        default="leader",
        metavar="WHO",
        help="the process --profile samples: leader, follower, a node id, client (the bench's "
        "own) or client-1..client-N (a worker) (leader)",
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure here ('-': stdout)")
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        help=f"refuse a run planned longer than this many seconds ({DEFAULT_BUDGET:g})",
    )
    args = parser.parse_args(argv)
    try:
        args.clients = parse_clients(args.clients)
    except ValueError as exc:
        parser.error(str(exc))
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat must be between 1 and {MAX_REPEAT}")
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION:g}] seconds")
    if args.connections < 1 or args.nodes < 1:
        parser.error("--connections and --nodes must be positive")
    if not 1 <= args.client_procs <= MAX_CLIENT_PROCS:
        parser.error(f"--client-procs must be between 1 and {MAX_CLIENT_PROCS}")
    args.go_worker = None
    args.loadgen_chosen = args.loadgen == "auto"  # the bench picked it: it may fall back
    if args.loadgen != "python":
        lacking = workers.go_worker_missing()
        if lacking is not None and args.loadgen == "go":
            parser.error(f"--loadgen go: the Go worker cannot be built here: {lacking}")
        args.loadgen = "python" if lacking is not None else "go"
    if args.profile and not py_spy_available():
        print("--profile: py-spy is not installed: no profile taken", file=sys.stderr)
        args.profile = None
    if args.profile and args.endpoints:
        parser.error("--profile needs the node processes the bench starts: no --endpoints")
    if args.compare_etcd and args.endpoints:
        parser.error("--compare-etcd starts both clusters itself: no --endpoints")
    planned = planned_seconds(args)
    if planned > args.budget:
        parser.error(
            f"this run would take about {planned:.0f} s, over --budget {args.budget:g} s: "
            "fewer client counts, repeats or a shorter --duration (or raise --budget)"
        )
    return args
