"""Scenario files: what cluster, what workload, which faults when (TOML, seeded).

A scenario is a TOML file a person can read and write (``chaos/*.toml`` at the top of the
repository, shipped as package data through the ``univrs/chaos/scenarios`` link)::

    name = "leader-kill"
    description = "kill -9 the leader every 12 s; it restarts 4 s later"
    duration = 45     # seconds of workload with faults
    recovery = 10     # seconds of workload after everything is healed (default 10)
    seed = 1          # default seed; `univrs chaos run --seed` overrides it

    [cluster]
    nodes = 3
    raft = "heartbeat_interval_ms = 50"   # optional raw TOML added to every node's [raft]
    backend = "lmdb"                      # optional: every node's [state] backend

    [workload]
    clients = 4       # concurrent clients, one operation at a time each
    keys = 3          # registers (workload objects)
    rate = 40         # operations per second, all clients together
    timeout = 4.0     # seconds per operation; after it the outcome is unknown (info)
    mix = { read = 3, write = 3, cas = 2, delete = 1 }
    pin = false       # true: client i talks to node i (mod n) only, so every node serves

    [[fault]]
    kind = "kill"     # see FAULT_KINDS
    target = "leader" # leader | follower | random | all | a node id
    at = 5            # seconds after the workload starts; [lo, hi] draws uniformly (seeded)
    duration = 4      # how long the fault lasts before it is healed; a range works too
    every = 12        # repeat with this period (a range too) ...
    count = 3         # ... at most this many times (default: until `duration` ends)

Kind-specific keys are listed in ``FAULT_KINDS``. Everything random (times, targets, the
workload's choices, the proxies' loss) derives from the seed, so a run can be repeated; the
cluster's own timing is real and is not.

Membership faults use the cluster's admin API: ``join`` starts one of the cluster's spare nodes
(``[cluster] spares``) with ``--join``, ``leave`` asks a member to leave and then stops it,
``remove`` has the leader remove a member (``target = "leader"``: the leader itself) and stops
it; ``snapshot`` makes nodes snapshot and compact their logs now. ``[expect]`` adds checks a
scenario is about (``snapshot_installed = true``: some node must have installed a snapshot sent
by the leader; ``leader_after_heal = S``: every node a partition cut off follows the leader
again within S seconds of the healing). ``[scale]`` runs a scale of a workload under the
faults and checks the reconciler's result (``univrs.chaos.orchestrate``).
"""

from __future__ import annotations

import math
import pathlib
import random
import tomllib
from typing import Any

import attrs

from univrs.chaos.orchestrate import ScaleSpec
from univrs.errors import UnivrsError

PROCESS_KINDS = frozenset({"kill", "stop", "pause", "restart", "rolling-restart", "full-restart"})
NETWORK_KINDS = frozenset({"partition", "flapping", "latency", "lossy", "reset"})
MEMBERSHIP_KINDS = frozenset({"join", "leave", "remove", "snapshot", "wipe"})

# kind -> {parameter: default}; the common keys (kind, target, at, duration, every, count)
# are allowed everywhere.
FAULT_KINDS: dict[str, dict[str, Any]] = {
    "kill": {},  # kill -9; restarted when the duration ends (or at healing)
    "stop": {},  # graceful SIGTERM; restarted when the duration ends
    "pause": {},  # SIGSTOP; SIGCONT when the duration ends
    "restart": {"signal": "term"},  # stop (term|kill) and start at once
    "rolling-restart": {"signal": "term", "gap": 2.0},  # every node in turn, `gap` s apart
    "full-restart": {"signal": "kill"},  # every node down for `duration`, then all start
    # partitions: isolate the target | halves (leader on the minority or majority side) |
    # one-way (direction "out": the target's messages are lost, "in": messages to it) |
    # bridge (two halves that only the target node connects)
    # retransmit: healing is timed like TCP over a real lossy network (see univrs.chaos.proxy)
    "partition": {"mode": "isolate", "leader": "any", "direction": "out", "retransmit": False},
    "flapping": {
        "mode": "isolate",
        "leader": "any",
        "direction": "out",
        "period": 1.0,
        "retransmit": False,
    },
    "latency": {"delay": 0.05, "jitter": 0.0},
    "lossy": {"delay": 0.0, "jitter": 0.0, "loss": 0.05, "loss_stall": 0.2, "reset_rate": 0.0},
    "reset": {},  # reset every connection of the target's links (instantaneous)
    # start a spare node joining through the target (a member; default random); wait until
    # it is a voter. via_leaves: once the join has begun, the member it joins through leaves
    # the cluster (the join must go on through another member)
    "join": {"timeout": 60.0, "via_leaves": False},
    "leave": {"timeout": 30.0},  # the target leaves (handing leadership over), then stops
    "remove": {"timeout": 30.0},  # the leader removes the target, which is then stopped
    "snapshot": {},  # the target nodes snapshot and compact their logs now
    # kill -9 the target, delete its data dir, start it empty and rejoin it under its id as
    # a new incarnation (`univrs cluster join --replace`); wait until it is a voter again
    "wipe": {"timeout": 60.0},
    # a bit flipped in the target nodes' stored snapshot files (raft.lmdb/snapshot-*.dat)
    # while they run: damage at rest, which each node must survive and retake (s12-scrub)
    "corrupt-snapshot": {},
}
COMMON_KEYS = frozenset({"kind", "target", "at", "duration", "every", "count"})
ALL_BY_DEFAULT = frozenset(
    {"full-restart", "rolling-restart", "latency", "lossy", "reset", "snapshot", "corrupt-snapshot"}
)
INSTANT_KINDS = (
    frozenset({"restart", "reset", "rolling-restart", "corrupt-snapshot"}) | MEMBERSHIP_KINDS
)
PARTITION_MODES = ("isolate", "halves", "one-way", "bridge")
TARGETS = ("leader", "follower", "random", "all")
OPERATIONS = ("read", "write", "cas", "delete")


class ScenarioError(UnivrsError):
    """A scenario file is invalid; the message names the file and the key."""


Range = tuple[float, float]
BACKENDS = ("memory", "lmdb")  # [state] backend (univrs/server/statedir.py)


@attrs.frozen(kw_only=True)
class ClusterSpec:
    """The cluster a scenario runs on."""

    nodes: int = 3
    spares: int = 0  # extra nodes, configured but not members, for `join` faults
    raft: str = ""  # raw TOML lines for every node's [raft] table
    proxies: bool = True  # route every peer link through a fault proxy
    backend: str | None = None  # every node's [state] backend ("memory", "lmdb"; None: default)


@attrs.frozen(kw_only=True)
class WorkloadSpec:
    """The clients' operations."""

    clients: int = 4
    keys: int = 3
    rate: float = 40.0
    timeout: float = 4.0
    mix: tuple[tuple[str, float], ...] = (("read", 3), ("write", 3), ("cas", 2), ("delete", 1))
    # Each client stays on one node (client i on node i mod n) instead of following the
    # leader, so followers serve reads (forwarded ReadIndex) and forward writes, and a paused
    # or cut-off node keeps its clients' requests in flight until it wakes up.
    pin: bool = False


@attrs.frozen(kw_only=True)
class FaultSpec:
    """One ``[[fault]]`` entry as written (times may be ranges, drawn when planned)."""

    kind: str
    target: str = "random"
    at: Range = (0.0, 0.0)
    duration: Range = (0.0, 0.0)
    every: Range | None = None
    count: int | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str) -> Any:
        return dict(self.params).get(name, FAULT_KINDS[self.kind].get(name))


@attrs.frozen(kw_only=True)
class Scenario:
    """A parsed scenario file."""

    name: str
    description: str = ""
    duration: float = 30.0
    recovery: float = 10.0
    seed: int = 1
    cluster: ClusterSpec = ClusterSpec()
    workload: WorkloadSpec = WorkloadSpec()
    faults: tuple[FaultSpec, ...] = ()
    expect_snapshot_installed: bool = False  # [expect] snapshot_installed
    # [expect] leader_after_heal: seconds within which every node a partition cut off must
    # follow the leader again after healing (None: not checked)
    expect_leader_after_heal: float | None = None
    scale: ScaleSpec | None = None  # [scale]: a scale under the faults (univrs.chaos.orchestrate)
    path: str = ""


@attrs.frozen(kw_only=True)
class PlannedFault:
    """One occurrence of a fault on the timeline, with its times drawn."""

    index: int  # position on the timeline
    spec: FaultSpec
    start: float  # seconds after the workload starts
    end: float  # == start for instantaneous faults

    @property
    def kind(self) -> str:
        return self.spec.kind

    def label(self) -> str:
        spec = self.spec
        if self.kind in ("partition", "flapping"):
            mode = spec.param("mode")
            if mode == "halves":
                return f"{self.kind} halves, leader in {spec.param('leader')}"
            if mode == "one-way":
                return f"{self.kind} one-way {spec.param('direction')} of {spec.target}"
            return f"{self.kind} {mode} {spec.target}"
        if self.kind == "join":
            return "join a spare"
        return f"{self.kind} {spec.target}"


# ---------------------------------------------------------------------------- parsing


def load(path: pathlib.Path | str) -> Scenario:
    """Read and validate a scenario file (ScenarioError names the file and the key)."""
    path = pathlib.Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: TOML syntax error: {exc}") from None
    try:
        return parse(doc, default_name=path.stem, path=str(path))
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def parse(doc: dict[str, Any], *, default_name: str = "scenario", path: str = "") -> Scenario:
    """A Scenario from a TOML document (already decoded)."""
    _only(doc, {"name", "description", "duration", "recovery", "seed", "cluster", "workload",
                "fault", "expect", "scale"}, "")  # fmt: skip
    duration = _number(doc, "duration", 30.0, "", minimum=1.0)
    cluster_doc = _table(doc, "cluster")
    _only(cluster_doc, {"nodes", "spares", "raft", "proxies", "backend"}, "cluster.")
    backend = cluster_doc.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise ScenarioError(f"cluster.backend: one of {', '.join(BACKENDS)}")
    cluster = ClusterSpec(
        nodes=_int(cluster_doc, "nodes", 3, "cluster.", minimum=1, maximum=9),
        spares=_int(cluster_doc, "spares", 0, "cluster.", minimum=0, maximum=4),
        raft=_str(cluster_doc, "raft", "", "cluster."),
        proxies=_bool(cluster_doc, "proxies", True, "cluster."),
        backend=backend,
    )
    w = _table(doc, "workload")
    _only(w, {"clients", "keys", "rate", "timeout", "mix", "pin"}, "workload.")
    mix_doc = w.get("mix", dict(WorkloadSpec().mix))
    if not isinstance(mix_doc, dict) or not mix_doc:
        raise ScenarioError("workload.mix: a table of operation weights, e.g. { read = 1 }")
    _only(mix_doc, set(OPERATIONS), "workload.mix.")
    mix = tuple((op, _number(mix_doc, op, 0.0, "workload.mix.")) for op in OPERATIONS)
    mix = tuple((op, weight) for op, weight in mix if weight > 0)
    if not mix:
        raise ScenarioError("workload.mix: at least one operation needs a positive weight")
    workload = WorkloadSpec(
        clients=_int(w, "clients", 4, "workload.", minimum=1, maximum=64),
        keys=_int(w, "keys", 3, "workload.", minimum=1, maximum=100),
        rate=_number(w, "rate", 40.0, "workload.", minimum=0.1),
        timeout=_number(w, "timeout", 4.0, "workload.", minimum=0.1),
        mix=mix,
        pin=_bool(w, "pin", False, "workload."),
    )
    faults_doc = doc.get("fault", [])
    if not isinstance(faults_doc, list):
        raise ScenarioError("fault: write each fault as a [[fault]] table")
    all_nodes = cluster.nodes + cluster.spares
    faults = tuple(_fault(f, f"fault[{i}].", all_nodes, duration) for i, f in enumerate(faults_doc))
    joins = sum(1 for f in faults if f.kind == "join")
    if joins and not cluster.spares:
        raise ScenarioError("fault: join needs spare nodes: set cluster.spares")
    expect = _table(doc, "expect")
    _only(expect, {"snapshot_installed", "leader_after_heal"}, "expect.")
    if not cluster.proxies:
        for i, f in enumerate(faults):
            if f.kind in NETWORK_KINDS:
                raise ScenarioError(f"fault[{i}].kind: {f.kind} needs cluster.proxies = true")
    return Scenario(
        name=_str(doc, "name", default_name, ""),
        description=_str(doc, "description", "", ""),
        duration=duration,
        recovery=_number(doc, "recovery", 10.0, "", minimum=0.0),
        seed=_int(doc, "seed", 1, ""),
        cluster=cluster,
        workload=workload,
        faults=faults,
        expect_snapshot_installed=_bool(expect, "snapshot_installed", False, "expect."),
        expect_leader_after_heal=(
            _number(expect, "leader_after_heal", 0.0, "expect.", minimum=0.0)
            if "leader_after_heal" in expect
            else None
        ),
        scale=_scale(doc["scale"], duration) if "scale" in doc else None,
        path=path,
    )


def _scale(doc: Any, duration: float) -> ScaleSpec:
    if not isinstance(doc, dict):
        raise ScenarioError("scale: a table")
    _only(
        doc,
        {"machines", "replicas", "at", "down", "down_at", "converge", "kill_leader_after",
         "kill_for"},
        "scale.",
    )  # fmt: skip
    machines = _int(doc, "machines", 5, "scale.", minimum=1, maximum=100)
    spec = ScaleSpec(
        machines=machines,
        replicas=_int(doc, "replicas", 50, "scale.", minimum=0, maximum=1000),
        at=_number(doc, "at", 1.0, "scale.", minimum=0.0),
        down=_int(doc, "down", 1, "scale.", minimum=0, maximum=machines - 1),
        down_at=_number(doc, "down_at", 3.0, "scale.", minimum=0.0),
        converge=_number(doc, "converge", 60.0, "scale.", minimum=1.0),
        kill_leader_after=_int(doc, "kill_leader_after", 0, "scale.", minimum=0),
        kill_for=_number(doc, "kill_for", 4.0, "scale.", minimum=0.0),
    )
    for key in ("at", "down_at"):
        if getattr(spec, key) >= duration:
            raise ScenarioError(f"scale.{key}: {getattr(spec, key):g} is not before the end")
    return spec


def _fault(doc: Any, where: str, nodes: int, duration: float) -> FaultSpec:
    if not isinstance(doc, dict):
        raise ScenarioError(f"{where[:-1]}: a table")
    kind = doc.get("kind")
    if kind not in FAULT_KINDS:
        raise ScenarioError(f"{where}kind: one of {', '.join(sorted(FAULT_KINDS))}, not {kind!r}")
    defaults = FAULT_KINDS[kind]
    _only(doc, COMMON_KEYS | set(defaults), where)
    target = _str(doc, "target", "all" if kind in ALL_BY_DEFAULT else "random", where)
    node_ids = {f"n{i}" for i in range(1, nodes + 1)}
    if target not in TARGETS and target not in node_ids:
        raise ScenarioError(
            f"{where}target: one of {', '.join(TARGETS)} or a node id "
            f"({', '.join(sorted(node_ids))}), not {target!r}"
        )
    params: dict[str, Any] = {}
    for name, default in defaults.items():
        if name not in doc:
            continue
        value = doc[name]
        if isinstance(default, float):
            params[name] = _number(doc, name, default, where, minimum=0.0)
        elif not isinstance(value, type(default)):
            raise ScenarioError(f"{where}{name}: a {type(default).__name__}, not {value!r}")
        else:
            params[name] = value
    spec = FaultSpec(
        kind=kind,
        target=target,
        at=_range(doc, "at", 0.0, where),
        duration=_range(doc, "duration", 0.0, where),
        every=_range(doc, "every", None, where),
        count=_int(doc, "count", 0, where, minimum=1) if "count" in doc else None,
        params=tuple(sorted(params.items())),
    )
    _check_params(spec, where, nodes)
    if spec.at[0] >= duration:
        raise ScenarioError(f"{where}at: {spec.at[0]:g} is not before the end ({duration:g} s)")
    if spec.every is not None and spec.every[0] <= 0:
        raise ScenarioError(f"{where}every: must be positive")
    return spec


def _check_params(spec: FaultSpec, where: str, nodes: int) -> None:
    restarts = ("restart", "rolling-restart", "full-restart")
    if spec.kind in restarts and spec.param("signal") not in ("term", "kill"):
        raise ScenarioError(f"{where}signal: 'term' or 'kill', not {spec.param('signal')!r}")
    if spec.kind in ("partition", "flapping"):
        mode = spec.param("mode")
        if mode not in PARTITION_MODES:
            raise ScenarioError(f"{where}mode: one of {', '.join(PARTITION_MODES)}, not {mode!r}")
        if spec.param("leader") not in ("minority", "majority", "any"):
            raise ScenarioError(f"{where}leader: 'minority', 'majority' or 'any'")
        if spec.param("direction") not in ("in", "out"):
            raise ScenarioError(f"{where}direction: 'in' or 'out'")
        if nodes < 2 or (mode == "bridge" and nodes < 3):
            raise ScenarioError(f"{where}mode: {mode} needs more nodes than {nodes}")
    if spec.kind == "flapping" and spec.param("period") <= 0:
        raise ScenarioError(f"{where}period: must be positive")
    if spec.kind == "lossy":
        for name in ("loss", "reset_rate"):
            if not 0 <= spec.param(name) <= 1:
                raise ScenarioError(f"{where}{name}: a probability between 0 and 1")
    if spec.kind in ("leave", "remove") and spec.target == "all":
        raise ScenarioError(f"{where}target: {spec.kind} acts on one node, not all")
    if spec.kind in PROCESS_KINDS - {"rolling-restart", "full-restart"} and spec.target == "all":
        raise ScenarioError(f"{where}target: use full-restart to act on all nodes at once")


def _only(doc: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    for key in doc:
        if key not in allowed:
            raise ScenarioError(f"{where}{key}: unknown key (known: {', '.join(sorted(allowed))})")


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ScenarioError(f"{key}: a table")
    return value


def _number(
    doc: dict[str, Any], key: str, default: float, where: str, *, minimum: float | None = None
) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{where}{key}: a number, not {value!r}")
    if minimum is not None and value < minimum:
        raise ScenarioError(f"{where}{key}: at least {minimum:g}, not {value!r}")
    return float(value)


def _int(
    doc: dict[str, Any],
    key: str,
    default: int,
    where: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where}{key}: an integer, not {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ScenarioError(f"{where}{key}: between {minimum} and {maximum}, not {value}")
    return value


def _str(doc: dict[str, Any], key: str, default: str, where: str) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise ScenarioError(f"{where}{key}: a string, not {value!r}")
    return value


def _bool(doc: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}{key}: true or false, not {value!r}")
    return value


def _range(doc: dict[str, Any], key: str, default: float | None, where: str) -> Any:
    if key not in doc:
        return None if default is None else (default, default)
    value = doc[key]
    if isinstance(value, list):
        if len(value) != 2:
            raise ScenarioError(f"{where}{key}: a number or a range [low, high]")
        lo = _number({"v": value[0]}, "v", 0.0, f"{where}{key}.", minimum=0.0)
        hi = _number({"v": value[1]}, "v", 0.0, f"{where}{key}.", minimum=0.0)
        if hi < lo:
            raise ScenarioError(f"{where}{key}: the range [{lo:g}, {hi:g}] is reversed")
        return (lo, hi)
    v = _number(doc, key, 0.0, where, minimum=0.0)
    return (v, v)


# ---------------------------------------------------------------------------- planning


def _draw(rng: random.Random, r: Range) -> float:
    return r[0] if r[0] == r[1] else rng.uniform(r[0], r[1])


def plan(scenario: Scenario, rng: random.Random) -> tuple[PlannedFault, ...]:
    """Every fault occurrence with its times drawn from ``rng``, in start order. Occurrences
    of one entry never overlap (the next starts after the previous ended); every fault ends
    by the scenario's ``duration``, when everything is healed."""
    out: list[tuple[float, int, FaultSpec, float]] = []
    for order, spec in enumerate(scenario.faults):
        start = _draw(rng, spec.at)
        n = 0
        while start < scenario.duration and (spec.count is None or n < spec.count):
            length = 0.0 if spec.kind in INSTANT_KINDS else _draw(rng, spec.duration)
            end = min(start + length, scenario.duration)
            out.append((start, order, spec, end))
            n += 1
            if spec.every is None:
                break
            start = max(start + _draw(rng, spec.every), end + 0.001)
    out.sort(key=lambda t: (t[0], t[1]))
    return tuple(
        PlannedFault(index=i, spec=spec, start=start, end=end)
        for i, (start, _o, spec, end) in enumerate(out)
    )


def find_scenarios(folder: pathlib.Path | str) -> list[pathlib.Path]:
    """The scenario files of a folder, sorted by name."""
    return sorted(pathlib.Path(folder).glob("*.toml"))
