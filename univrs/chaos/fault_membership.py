"""Membership faults of the chaos injector (``univrs.chaos.faults``): a snapshot asked of
members, a spare joining (optionally while the member it goes through leaves), a member's disk
wiped and the member rejoined under its id, a member leaving or removed.

They change which nodes are expected to run (``Injector.active``): a joined spare becomes
active; a node that left or was removed is stopped and is no longer active. A spare whose join
still runs (``Injector.joining``) is no fault's target nor the member a fault goes through
(chaos seed 603 of join-and-leave-under-load: see ``univrs.chaos.faults``). The functions act
through the injector's process actions and API requests (``Injector._proc``, ``Injector._api``),
which the tests replace with fakes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from univrs.chaos.scenario import FaultSpec, PlannedFault

if TYPE_CHECKING:
    from univrs.chaos.faults import FaultRecord, Injector


def _problem(inj: Injector, rec: FaultRecord, message: str) -> None:
    rec.note = message
    inj.unexpected.append(f"{rec.label}: {message}")


async def run(inj: Injector, fault: PlannedFault, rec: FaultRecord) -> None:
    spec, kind = fault.spec, fault.kind
    timeout = spec.param("timeout") or 30.0
    if kind == "snapshot":
        one = await inj._resolve(spec.target) if spec.target != "all" else None
        nodes = [one] if one else ([] if spec.target != "all" else inj._up())
        rec.targets = tuple(nodes)
        done = []
        for node in nodes:
            resp = await inj._api(node, "POST", "/v1/cluster/snapshot", {}, timeout=30.0)
            if resp is not None and resp.status == 200:
                done.append(f"{node}@{resp.body['index']}")
            else:
                done.append(f"{node}: failed")
        rec.note = "snapshots " + ", ".join(done)
        return
    if kind == "join":
        if not inj.spares_left:
            rec.note = "skipped: no spare node left"
            return
        via = await inj._resolve(spec.target)
        if via is None:
            rec.note = "skipped: no member running"
            return
        spare = inj.spares_left.pop(0)
        rec.targets = (spare,)
        inj.joining.add(spare)
        try:
            await _join(inj, spec, rec, spare, via, timeout)
        finally:
            inj.joining.discard(spare)
        return
    if kind == "wipe":
        async with inj._wiping:  # after the previous wipe's member is a voter again
            target = await inj._resolve(spec.target)
            if target is None:
                rec.note = f"skipped: no {spec.target} node available"
                return
            await _wipe(inj, rec, target, timeout)
        return
    target = await inj._resolve(spec.target)
    if target is None:
        rec.note = f"skipped: no {spec.target} node available"
        return
    await _leave_or_remove(inj, rec, kind, target, timeout)


async def _join(
    inj: Injector, spec: FaultSpec, rec: FaultRecord, spare: str, via: str, timeout: float
) -> None:
    """Start ``spare`` joining through ``via``; wait up to ``timeout`` for it to be a voter."""
    await inj._proc(f"join {inj.cluster.node(via).api_addr}", spare)
    started = trio.current_time()
    state = "?"
    left = "" if spec.param("via_leaves") else None  # "": not yet
    # With via_leaves the wait is shielded (like a wipe's rejoin): a join cut off by
    # the end of the fault phase would pass unjudged, and a learner that never gets
    # promoted still converges with the others.
    with trio.CancelScope(shield=left is not None), trio.move_on_after(timeout):
        while True:
            resp = await inj._api(spare, "GET", "/v1/cluster/join", timeout=2.0)
            if resp is not None and resp.status == 200:
                state = resp.body.get("state", "?")
                if state in ("voter", "failed"):
                    break
                if left == "" and state in ("adding", "catching-up", "promoting"):
                    left = await _via_leaves(inj, via, timeout)
            await trio.sleep(0.25)
    took = trio.current_time() - started
    after = f" ({via} {left} during the join)" if left else ""
    if state == "voter":
        rec.note = f"{spare} joined via {via}, a voter after {took:.1f}s{after}"
    else:
        _problem(inj, rec, f"{spare} joining via {via}: {state} after {took:.1f}s{after}")


async def _wipe(inj: Injector, rec: FaultRecord, node: str, timeout: float) -> None:
    """A member loses its disk (docs/operations.md "A disk was replaced"): kill -9, data
    dir deleted, started empty, rejoined under its id with ``replace`` through another
    member; a problem unless it is a voter again within ``timeout``."""
    rec.targets = (node,)
    others = [n for n in inj._up() if n != node]
    if not others:
        rec.note = "skipped: no other member to join through"
        return
    via = inj.rng.choice(others)
    # Shielded: once the disk is gone the rejoin finishes (within ``timeout``) even when
    # the fault phase ends meanwhile; healing cannot bring a wiped member back.
    with trio.CancelScope(shield=True):
        await _wipe_and_rejoin(inj, rec, node, via, others, timeout)


async def _wipe_and_rejoin(
    inj: Injector, rec: FaultRecord, node: str, via: str, others: list[str], timeout: float
) -> None:
    await inj._proc("wipe", node)
    started = trio.current_time()
    state, asked = "?", False
    with trio.move_on_after(timeout):
        while True:
            if not asked:
                body = {"target": inj.cluster.node(via).api_addr, "replace": True}
                resp = await inj._api(node, "POST", "/v1/cluster/join", body, timeout=5.0)
                if resp is not None and resp.status >= 400:
                    # As an operator would: through another member (this one may be down).
                    state = f"refused: {resp.status} {resp.body}"
                    others = [n for n in inj._up() if n != node and n != via] or others
                    via = inj.rng.choice(others)
                else:
                    asked = resp is not None
            else:
                resp = await inj._api(node, "GET", "/v1/cluster/join", timeout=2.0)
                if resp is not None and resp.status == 200:
                    state = resp.body.get("state", "?")
                    if state in ("voter", "failed"):
                        break
            await trio.sleep(0.25)
    took = trio.current_time() - started
    if state == "voter":
        rec.note = f"{node} wiped, rejoined via {via}, a voter after {took:.1f}s"
    else:
        _problem(inj, rec, f"{node} wiped, rejoining via {via}: {state} after {took:.1f}s")


async def _via_leaves(inj: Injector, via: str, timeout: float) -> str:
    """The member a join goes through leaves the cluster (and stops for good) while the
    join runs: what the join's fallback to the other members is for."""
    resp = await inj._api(via, "POST", "/v1/cluster/leave", {}, timeout=timeout)
    if resp is None or resp.status != 200:
        return "could not leave" if resp is None else f"could not leave ({resp.status})"
    await inj._proc("retire", via)
    return "left"


async def _leave_or_remove(
    inj: Injector, rec: FaultRecord, kind: str, node: str, timeout: float
) -> None:
    rec.targets = (node,)
    if kind == "leave":
        resp = await inj._api(node, "POST", "/v1/cluster/leave", {}, timeout=timeout)
    else:
        others = [n for n in inj._up() if n != node]
        if not others:
            rec.note = "skipped: no other member to ask"
            return
        via = inj.rng.choice(others)
        resp = await inj._api(via, "DELETE", f"/v1/cluster/members/{node}", timeout=timeout)
    if resp is None or resp.status != 200:
        if resp is None:
            why = f"no answer ({inj._fetch_errors.get(via if kind != 'leave' else node)})"
        else:
            why = f"{resp.status} {resp.body}"
        _problem(inj, rec, f"{kind} of {node} failed: {why}")
        return
    await inj._proc("retire", node)
    voters = resp.body.get("voters") if isinstance(resp.body, dict) else None
    rec.note = f"{node} {'left' if kind == 'leave' else 'removed'}" + (
        f"; voters {','.join(voters)}" if voters else ""
    )
