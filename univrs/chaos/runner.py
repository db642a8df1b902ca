"""Running one scenario end to end: cluster, proxies, workload, faults, checks, report.

Phases (times in the history are seconds since the workload started):

1. *Setup*: a ``LocalCluster`` of real ``univrs node start`` processes on loopback, with a fault
   proxy on every ordered peer link (each node's ``[raft.dial]`` points at its proxies), and a
   first leader.
2. *Faults*: the workload runs while the planned faults start and end, for ``duration`` s.
3. *Heal*: every fault is healed at once (links pass, nodes resumed or restarted); the workload
   goes on for ``recovery`` s, so the report shows how service came back.
4. *Final*: the workload stops; a fresh client reads every key (linearizable, recorded in the
   history); the replicas must converge to one applied index with the same state digest and
   the same log; no node may have died. A scenario with ``[scale]`` (univrs.chaos.orchestrate)
   also needs the reconciler's scale to hold: exactly the replicas, none on a down machine.
5. *Verdict*: the history is checked for linearizability and lost acknowledged writes; the
   report goes to the out dir.
"""

from __future__ import annotations

import logging
import pathlib
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from univrs.chaos import checks, metrics, orchestrate
from univrs.chaos.faults import Injector
from univrs.chaos.history import EventType, Fn, Operation, pair
from univrs.chaos.linearizability import Verdict, check_history
from univrs.chaos.monitor import Monitor, leaderless_windows
from univrs.chaos.proxy import FaultProxy
from univrs.chaos.report import FAIL, PASS, UNKNOWN, RunResult, write_report
from univrs.chaos.scenario import NETWORK_KINDS, FaultSpec, PlannedFault, Scenario, plan
from univrs.chaos.workload import Recorder, Workload
from univrs.client import open_client
from univrs.tools.devcluster import LocalCluster

log = logging.getLogger("univrs.chaos")

STARTUP_TIMEOUT = 60.0
FINAL_READ_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 30.0


@attrs.frozen(kw_only=True)
class RunOptions:
    """How to run (not what: that is the scenario)."""

    seed: int | None = None  # None: the scenario's own seed
    check_timeout: float = 60.0  # seconds for the linearizability search
    keep_data: bool = False  # keep the nodes' data dirs after a passing run
    log_level: str = "info"  # the nodes' log level
    backend: str | None = None  # every node's [state] backend, over the scenario's


async def run_scenario(
    scenario: Scenario,
    out: pathlib.Path,
    options: RunOptions = RunOptions(),
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Run ``scenario`` with its output in ``out`` (created); returns the result."""
    seed = scenario.seed if options.seed is None else options.seed
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = RunResult(
        scenario=scenario.name,
        path=scenario.path,
        seed=seed,
        out=str(out),
        duration=scenario.duration,
        recovery=scenario.recovery,
    )
    started = time.monotonic()
    if not scenario.cluster.proxies and any(f.kind in NETWORK_KINDS for f in scenario.faults):
        raise ValueError("network faults need cluster.proxies = true")

    rng = random.Random(seed)
    planned = plan(scenario, rng)
    # A fresh cluster every run: old data would make the history lie.
    shutil.rmtree(out / "cluster", ignore_errors=True)
    cluster = LocalCluster.with_free_ports(
        out / "cluster",
        size=scenario.cluster.nodes,
        extra_config=scenario.cluster.raft,
        spares=scenario.cluster.spares,
        state_backend=options.backend or scenario.cluster.backend,
    )
    api = {n.node_id: n.api_addr for n in cluster.nodes}
    endpoints = [n.raft_addr for n in cluster.nodes if n.node_id not in cluster.spares]
    history_path = out / "history.jsonl"
    ops: list[Operation] = []
    with open(history_path, "w", encoding="utf-8") as history_file:
        async with trio.open_nursery() as nursery:
            proxies: dict[tuple[str, str], FaultProxy] = {}
            if scenario.cluster.proxies:
                for src in cluster.nodes:
                    for dst in cluster.nodes:
                        if src is dst:
                            continue
                        proxy = FaultProxy(
                            src=src.node_id,
                            dst=dst.node_id,
                            target=dst.raft_addr,
                            rng=random.Random(f"{seed}/proxy/{src.node_id}/{dst.node_id}"),
                        )
                        await nursery.start(proxy.run)
                        proxies[(src.node_id, dst.node_id)] = proxy
                        cluster.dial.setdefault(src.node_id, {})[dst.node_id] = proxy.address
            try:
                await _run_phases(
                    scenario, cluster, proxies, api, endpoints, planned, rng, seed,
                    history_file, options, result, echo,
                )  # fmt: skip
            except Exception as exc:  # a bug of ours or a surprise: report it, do not hide it
                log.exception("the chaos run failed")
                result.reasons.append(f"the chaos runner failed: {type(exc).__name__}: {exc}")
            finally:
                with trio.CancelScope(shield=True):
                    codes = await trio.to_thread.run_sync(_stop_all, cluster)
                for node_id, code in codes.items():
                    if code not in (0, None):
                        result.dead.append(f"{node_id} exited with code {code} on the final stop")
                nursery.cancel_scope.cancel()
    # The history on disk is the record; check what it says.
    from univrs.chaos.history import read_jsonl

    ops = pair(read_jsonl(history_path))
    _verdict(scenario, ops, result, options)
    result.wall_seconds = time.monotonic() - started
    write_report(result, ops, out)
    if result.verdict == PASS and not options.keep_data:
        for n in cluster.nodes:
            shutil.rmtree(n.data_dir, ignore_errors=True)
    return result


def _stop_all(cluster: LocalCluster) -> dict[str, int | None]:
    return {n.node_id: cluster.stop(n) for n in cluster.nodes}


async def wait_for_leader(
    leader_of: Callable[[], Awaitable[str | None]],
    any_running: Callable[[], bool],
    timeout: float,
    every: float = 0.2,
) -> str | None:
    """The first leader the nodes agree on within ``timeout`` s (sampled every ``every`` s), or
    None (or at once when no node runs any more: a bad config). The leader found is kept: a new
    leader may step down a moment later (CheckQuorum with followers starved of CPU), and asking
    again then made a started cluster look leaderless."""
    with trio.move_on_after(timeout):
        while (leader := await leader_of()) is None:
            if not any_running():
                return None  # every node exited: no point waiting
            await trio.sleep(every)
        return leader
    return None


def _follow_ports(
    cluster: LocalCluster,
    proxies: dict[tuple[str, str], FaultProxy],
    api: dict[str, str],
    endpoints: list[str],
) -> None:
    """The nodes' addresses after ``start_all``, which starts a fresh cluster again on other
    ports when another process took one before its node bound it (univrs/tools/started.py):
    the proxies forward there, the monitor and the workload ask there. The proxies' own ports
    are the kernel's (port 0), bound before the nodes start: no gap."""
    api.update({n.node_id: n.api_addr for n in cluster.nodes})
    endpoints[:] = [n.raft_addr for n in cluster.nodes if n.node_id not in cluster.spares]
    for (_, dst), proxy in proxies.items():
        proxy.target = cluster.node(dst).raft_addr


def endpoints_ids(cluster: LocalCluster) -> list[str]:
    """The bootstrap members (every node but the spares)."""
    return [n.node_id for n in cluster.nodes if n.node_id not in cluster.spares]


async def _run_phases(
    scenario: Scenario,
    cluster: LocalCluster,
    proxies: dict[tuple[str, str], FaultProxy],
    api: dict[str, str],
    endpoints: list[str],
    planned: tuple[Any, ...],
    rng: random.Random,
    seed: int,
    history_file: Any,
    options: RunOptions,
    result: RunResult,
    echo: Callable[[str], None],
) -> None:
    spares = f" (+{len(cluster.spares)} spares)" if cluster.spares else ""
    echo(f"[{scenario.name}] starting {len(endpoints)} nodes{spares} in {cluster.folder}")
    await trio.to_thread.run_sync(lambda: cluster.start_all(log_level=options.log_level))
    _follow_ports(cluster, proxies, api, endpoints)
    setup_monitor = Monitor(api=api, t0=trio.current_time())
    leader = await wait_for_leader(
        setup_monitor.leader_of, lambda: any(n.running() for n in cluster.nodes), STARTUP_TIMEOUT
    )
    if leader is None:
        result.reasons.append("no leader after starting the cluster")
        result.dead.extend(checks.dead_nodes(cluster, set(endpoints_ids(cluster))))
        return
    if scenario.scale is not None:
        await orchestrate.set_up(scenario.scale, endpoints)
    t0 = trio.current_time()
    monitor = Monitor(api=api, t0=t0)
    recorder = Recorder(t0=t0, out=history_file)
    workload = Workload(spec=scenario.workload, endpoints=endpoints, recorder=recorder, seed=seed)
    injector = Injector(cluster=cluster, proxies=proxies, monitor=monitor, rng=rng, t0=t0)
    echo(
        f"[{scenario.name}] leader {leader}; workload for {scenario.duration:g}s with "
        f"{len(planned)} faults, then {scenario.recovery:g}s healed"
    )
    stop = trio.Event()
    workload_done = trio.Event()

    async def run_workload() -> None:
        try:
            await workload.run(stop)
        finally:
            workload_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run)
        nursery.start_soon(injector.watch_processes)
        nursery.start_soon(run_workload)
        scale_notes: dict[str, Any] = {}
        if scenario.scale is not None:
            scale = scenario.scale

            async def kill_leader() -> None:
                start = trio.current_time() - t0
                fault = PlannedFault(
                    index=len(planned),
                    spec=FaultSpec(kind="kill", target="leader"),
                    start=start,
                    end=min(start + scale.kill_for, scenario.duration),
                )
                await injector.run(fault)

            nursery.start_soon(orchestrate.drive, scale, endpoints, t0, scale_notes, kill_leader)
        async with trio.open_nursery() as faults:
            for fault in planned:
                faults.start_soon(injector.run, fault)
            await trio.sleep_until(t0 + scenario.duration)
            faults.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await injector.heal_all()
        echo(f"[{scenario.name}] healed at {trio.current_time() - t0:.1f}s")
        await trio.sleep_until(t0 + scenario.duration + scenario.recovery)
        stop.set()
        with trio.move_on_after(scenario.workload.timeout * 4 + 10):
            await workload_done.wait()
        result.end = trio.current_time() - t0
        members = sorted(injector.active)
        finals = await _final_reads(workload, [cluster.node(n).raft_addr for n in members])
        result.final_values = {k: op_value for k, op_value in finals.items()}
        if scenario.scale is not None:
            live = [cluster.node(n).raft_addr for n in members]
            doc, why = await orchestrate.final_check(scenario.scale, live)
            result.scale = {**doc, **scale_notes}
            result.reasons.extend(f"scale: {reason}" for reason in why)
        conv = await checks.wait_converged({n: api[n] for n in members}, CONVERGE_TIMEOUT)
        result.convergence = {
            "converged": conv.converged,
            "same_state": conv.same_state,
            "same_log": conv.same_log,
            "applied_index": conv.applied_index,
            "detail": conv.detail,
            "digests": {n: (v or {}).get("state_digest") for n, v in conv.views},
            "first_index": {n: (v or {}).get("first_index") for n, v in conv.views},
            "members": members,
        }
        nursery.cancel_scope.cancel()
    history_file.flush()
    result.dead.extend(checks.dead_nodes(cluster, injector.active))
    result.dead.extend(injector.unexpected)
    result.snapshots_installed = checks.snapshots_installed(cluster)
    if scenario.expect_snapshot_installed and not result.snapshots_installed:
        result.reasons.append("expected a snapshot install (expect.snapshot_installed): none")
    bound = scenario.expect_leader_after_heal
    if bound is not None:
        late = [
            f"{node} {'never' if took is None else f'after {took:.2f}s'} ({r.label})"
            for r in injector.records
            for node, took in r.leader_after_heal.items()
            if took is None or took > bound
        ]
        if late:
            result.reasons.append(
                f"expected healed nodes to follow the leader within {bound:g}s "
                f"(expect.leader_after_heal): {'; '.join(late)}"
            )
    result.log_errors = checks.log_errors(cluster)
    result.errors = dict(workload.errors)
    result.leaderless = leaderless_windows(monitor.samples, len(cluster.nodes), 0.0, result.end)
    result.faults = [r.to_plain() for r in injector.records]


async def _final_reads(workload: Workload, endpoints: list[str]) -> dict[str, Any]:
    """A linearizable read of every key, retried until one succeeds (recorded)."""
    finals: dict[str, Any] = {}
    async with open_client(endpoints, timeout=5.0, connect_timeout=1.0) as client:
        for key in workload.keys:
            with trio.move_on_after(FINAL_READ_TIMEOUT):
                while True:
                    process = workload.new_process()
                    outcome = await workload.run_one(client, process, Fn.READ, key, None)
                    if outcome.type is EventType.OK:
                        finals[key] = {"process": process, "value": outcome.value}
                        break
                    await trio.sleep(0.5)
    return finals


def _verdict(
    scenario: Scenario, ops: list[Operation], result: RunResult, options: RunOptions
) -> None:
    result.counts = metrics.outcome_counts(ops)
    # while the workload was meant to run (not the final stop and reads)
    active_end = min(result.end, scenario.duration + scenario.recovery)
    gap = metrics.longest_unavailability(ops, 0.0, max(active_end, 0.0))
    result.longest_unavailability = (round(gap.start, 3), round(gap.end, 3))
    for f in result.faults:
        end = f["end"] if f["end"] is not None else f["start"]
        f["recovery"] = metrics.recovery(ops, f["start"], end)
    oks = [(op.ret - op.call) * 1000 for op in ops if op.status is EventType.OK]
    result.latency_ms = {
        "p50": metrics.percentile(oks, 0.5),
        "p99": metrics.percentile(oks, 0.99),
        "max": max(oks) if oks else None,
    }
    reasons = result.reasons
    if not ops:
        result.verdict = FAIL
        reasons.append("no history")
        return
    lin = check_history(ops, timeout=options.check_timeout)
    result.linearizability = {
        "verdict": lin.verdict.value,
        "summary": lin.summary(),
        "seconds": round(lin.seconds, 3),
        "keys": [
            {"key": k.key, "verdict": k.verdict.value, "operations": k.operations,
             "explanation": k.explanation}
            for k in lin.keys
        ],
    }  # fmt: skip
    finals_ops: dict[str, Operation] = {}
    final_procs = {v["process"]: k for k, v in result.final_values.items()}
    for op in ops:
        if op.process in final_procs and op.f is Fn.READ and op.status is EventType.OK:
            finals_ops[op.key] = op
    lost = checks.lost_writes(ops, finals_ops)
    result.lost_writes = [w.describe() for w in lost]
    result.final_values = {k: v["value"] for k, v in result.final_values.items()}

    if lin.verdict is Verdict.FAIL:
        reasons.append("the history is not linearizable")
    if lost:
        reasons.append(f"{len(lost)} acknowledged writes lost")
    missing = sorted(set(_keys(scenario)) - set(finals_ops))
    if missing and result.end:
        reasons.append(f"no final read succeeded for {', '.join(missing)}")
    conv = result.convergence
    if result.end and not (conv.get("converged") and conv.get("same_state")):
        reasons.append("replicas did not converge to one state: " + conv.get("detail", ""))
    elif result.end and not conv.get("same_log"):
        reasons.append("replicas differ in their applied log: " + conv.get("detail", ""))
    if result.dead:
        reasons.append("unexpected node failures: " + "; ".join(result.dead))
    if result.counts.get("all", {}).get("ok", 0) == 0:
        reasons.append("no operation succeeded")
    if reasons:
        result.verdict = FAIL
    elif lin.verdict is Verdict.UNKNOWN:
        result.verdict = UNKNOWN
        reasons.append("the linearizability search timed out")
    else:
        result.verdict = PASS


def _keys(scenario: Scenario) -> list[str]:
    from univrs.chaos.workload import key_names

    return key_names(scenario.workload.keys)
