"""A scale under faults: the reconciler's chaos check (a scenario's ``[scale]`` table).

Theory of operation. Before the workload starts, the runner registers ``machines`` machines
(``m1`` ...) and creates the workload ``scaled`` with 0 replicas. At ``at`` seconds it scales
it to ``replicas``; at ``down_at`` it sets the last ``down`` machines ``down`` (as liveness
would when their heartbeats stop). With ``kill_leader_after = N`` it kills the leader with
SIGKILL (for ``kill_for`` s, through the runner's fault injector) as soon as N instances exist:
mid-placement, however fast the machine. The scenario's own faults run meanwhile too. The
leader's reconciler places the instances and a new leader's finishes the job. After healing,
the verdict waits (at most ``converge`` s) for ``reconcile.status`` to report nothing left to
do, then requires:

* exactly ``replicas`` instances of the workload exist, with distinct ids;
* none is on a ``down`` machine (those were replaced elsewhere);
* every one is on a registered machine.

The nodes must run the reconciler (``reconcile_resync_ms`` above 0, the default) and should
not expire the machines (``node_ttl_ms = 0``: nobody heartbeats for them); the scenario's
``cluster.raft`` says so. Every call goes through ``univrs.client`` (keyed writes, leader
following), retried until its deadline: a write whose outcome a fault made unknown is simply
sent again (scaling to N twice is scaling to N).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from univrs.client import open_client
from univrs.errors import AlreadyExists, UnivrsError

log = logging.getLogger("univrs.chaos")

WORKLOAD_ID = "scaled"
SPEC = {"name": "scaled", "image": "chaos/scale:1", "replicas": 0}
CALL_DEADLINE = 30.0  # seconds per setup or scale call, retries included
RETRY_PAUSE = 0.5


@attrs.frozen(kw_only=True)
class ScaleSpec:
    """A scenario's ``[scale]`` table."""

    machines: int = 5
    replicas: int = 50
    at: float = 1.0  # seconds after the workload starts: scale 0 -> replicas
    down: int = 1  # how many machines are set down ...
    down_at: float = 3.0  # ... at this time
    converge: float = 60.0  # seconds after healing for the reconciler to finish
    # kill -9 the leader once this many instances exist (0: no kill of its own), for
    # `kill_for` seconds: mid-placement, whatever the machine's speed
    kill_leader_after: int = 0
    kill_for: float = 4.0

    def machine_ids(self) -> list[str]:
        return [f"m{i}" for i in range(1, self.machines + 1)]

    def down_ids(self) -> list[str]:
        return self.machine_ids()[self.machines - self.down :]


async def _retry(what: str, call: Any, deadline: float) -> Any:
    """``await call()`` until it succeeds or ``deadline`` (trio time) passes."""
    while True:
        try:
            return await call()
        except AlreadyExists:
            return None  # a retried create that applied the first time
        except UnivrsError as exc:
            if trio.current_time() >= deadline:
                raise
            log.info("chaos scale: %s failed (%s), retrying", what, exc.code)
            await trio.sleep(RETRY_PAUSE)


async def set_up(spec: ScaleSpec, endpoints: list[str]) -> None:
    """Register the machines and create the workload with 0 replicas."""
    deadline = trio.current_time() + CALL_DEADLINE
    async with open_client(endpoints, timeout=5.0, connect_timeout=1.0) as client:
        for machine in spec.machine_ids():
            await _retry(f"register {machine}", lambda m=machine: client.register_node(m), deadline)
        await _retry(
            "create the workload",
            lambda: client.create_workload(dict(SPEC), id=WORKLOAD_ID),
            deadline,
        )


async def drive(
    spec: ScaleSpec,
    endpoints: list[str],
    t0: float,
    notes: dict[str, Any],
    kill_leader: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Scale at ``t0 + at``, kill the leader once ``kill_leader_after`` instances exist (with
    ``kill_leader``, which the runner gives: a fault of its injector), set machines down at
    ``t0 + down_at``; the times are noted in ``notes``."""
    async with (
        open_client(endpoints, timeout=5.0, connect_timeout=1.0) as client,
        trio.open_nursery() as nursery,
    ):
        steps = [(spec.at, "scaled_at")]
        if spec.down:
            steps.append((spec.down_at, "down_at"))
        for at, name in sorted(steps):
            await trio.sleep_until(t0 + at)
            deadline = trio.current_time() + CALL_DEADLINE
            if name == "scaled_at":
                await _retry(
                    f"scale to {spec.replicas}",
                    lambda: client.scale_workload(WORKLOAD_ID, spec.replicas),
                    deadline,
                )
                if spec.kill_leader_after and kill_leader is not None:
                    nursery.start_soon(_kill_midway, spec, endpoints, t0, notes, kill_leader)
            else:
                for machine in spec.down_ids():
                    await _retry(
                        f"set {machine} down",
                        lambda m=machine: client.update_node_status(m, "down"),
                        deadline,
                    )
            notes[name] = round(trio.current_time() - t0, 3)


async def _kill_midway(
    spec: ScaleSpec,
    endpoints: list[str],
    t0: float,
    notes: dict[str, Any],
    kill_leader: Callable[[], Awaitable[None]],
) -> None:
    """Kill the leader as soon as ``kill_leader_after`` instances exist (local reads: what
    some replica applied)."""
    async with open_client(endpoints, timeout=2.0, connect_timeout=1.0) as client:
        while True:
            try:
                page = await client.list_instances(
                    workload_id=WORKLOAD_ID, limit=1000, consistency="local"
                )
                if len(page["items"]) >= spec.kill_leader_after:
                    notes["instances_at_kill"] = len(page["items"])
                    break
            except UnivrsError:
                pass
            await trio.sleep(0.01)
    notes["killed_at"] = round(trio.current_time() - t0, 3)
    await kill_leader()


def judge(spec: ScaleSpec, instances: list[dict[str, Any]], converged: bool) -> list[str]:
    """The verdict's reasons (empty: the scale holds), from the instances after healing."""
    reasons = []
    if not converged:
        reasons.append(f"the reconciler did not converge within {spec.converge:g}s of healing")
    if len(instances) != spec.replicas:
        reasons.append(f"{len(instances)} instances of {WORKLOAD_ID}, not {spec.replicas}")
    ids = [i["id"] for i in instances]
    if len(set(ids)) != len(ids):
        reasons.append("instance ids repeat")
    down = set(spec.down_ids())
    on_down = sorted(i["id"] for i in instances if i.get("node_id") in down)
    if on_down:
        reasons.append(f"{len(on_down)} instances on a down machine: {', '.join(on_down[:5])}")
    known = set(spec.machine_ids())
    stray = sorted(i["id"] for i in instances if i.get("node_id") not in known)
    if stray:
        reasons.append(f"{len(stray)} instances not on a registered machine")
    return reasons


async def _all_instances(client: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = None
    while True:
        page = await client.list_instances(workload_id=WORKLOAD_ID, limit=1000, after=after)
        items.extend(page["items"])
        after = page.get("next")
        if not after:
            return items


async def final_check(spec: ScaleSpec, endpoints: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Wait for the reconciler to converge, then judge: (the report's document, reasons)."""
    instances: list[dict[str, Any]] = []
    converged = False
    status: dict[str, Any] = {}
    async with open_client(endpoints, timeout=5.0, connect_timeout=1.0) as client:
        with trio.move_on_after(spec.converge):
            while True:
                try:
                    status = await client.reconcile_status()
                    if status["converged"]:
                        converged = True
                        break
                except UnivrsError as exc:
                    log.info("chaos scale: reconcile status failed (%s), retrying", exc.code)
                await trio.sleep(RETRY_PAUSE)
        with trio.move_on_after(CALL_DEADLINE):
            while True:
                try:
                    instances = await _all_instances(client)
                    break
                except UnivrsError:
                    await trio.sleep(RETRY_PAUSE)
    by_node: dict[str, int] = {}
    for i in instances:
        by_node[str(i.get("node_id"))] = by_node.get(str(i.get("node_id")), 0) + 1
    doc = {
        "replicas": spec.replicas,
        "instances": len(instances),
        "converged": converged,
        "down": spec.down_ids(),
        "by_machine": dict(sorted(by_node.items())),
        "revision": status.get("revision"),
    }
    return doc, judge(spec, instances, converged)
