"""Membership faults of the chaos injector (``univrs.chaos.faults``, whose ``Injector`` has
this class as a base): a snapshot asked of members, a spare joining (optionally while the
member it goes through leaves), a member's disk wiped and the member rejoined under its id, a
member leaving or removed.

They change which nodes are expected to run (``Injector.active``): a joined spare becomes
active; a node that left or was removed is stopped and is no longer active. A spare whose join
still runs (``Injector.joining``) is no fault's target nor the member a fault goes through
(chaos seed 603 of join-and-leave-under-load: see ``univrs.chaos.faults``). They act through
the injector's process actions and API requests (``_proc``, ``_api``), which the tests replace
with fakes.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import trio

from univrs.chaos.fault_record import FaultRecord
from univrs.chaos.monitor import FETCH_ERRORS
from univrs.chaos.scenario import FaultSpec, PlannedFault
from univrs.net.http import HttpResponse, request_json
from univrs.tools.devcluster import LocalCluster


class MembershipFaults:
    """The membership faults of ``Injector`` (a base class of it: what it uses of the
    injector is declared here, the injector defines it)."""

    cluster: LocalCluster
    rng: random.Random
    unexpected: list[str]
    joining: set[str]
    spares_left: list[str]
    _fetch_errors: dict[str, str]
    _wiping: trio.Lock

    if TYPE_CHECKING:

        def _up(self) -> list[str]: ...

        async def _resolve(self, target: str) -> str | None: ...

        async def _proc(self, action: str, node_id: str) -> None: ...

    async def _api(
        self, node_id: str, method: str, path: str, body: object = None, timeout: float = 30.0
    ) -> HttpResponse | None:
        addr = self.cluster.node(node_id).api_addr
        try:
            return await request_json(addr, method, path, body=body, timeout=timeout)
        except FETCH_ERRORS as exc:
            self._fetch_errors[node_id] = f"{type(exc).__name__}: {exc}"[:160]
            return None

    def _problem(self, rec: FaultRecord, message: str) -> None:
        rec.note = message
        self.unexpected.append(f"{rec.label}: {message}")

    async def _membership(self, fault: PlannedFault, rec: FaultRecord) -> None:
        spec, kind = fault.spec, fault.kind
        timeout = spec.param("timeout") or 30.0
        if kind == "snapshot":
            one = await self._resolve(spec.target) if spec.target != "all" else None
            nodes = [one] if one else ([] if spec.target != "all" else self._up())
            rec.targets = tuple(nodes)
            done = []
            for node in nodes:
                resp = await self._api(node, "POST", "/v1/cluster/snapshot", {}, timeout=30.0)
                if resp is not None and resp.status == 200:
                    done.append(f"{node}@{resp.body['index']}")
                else:
                    done.append(f"{node}: failed")
            rec.note = "snapshots " + ", ".join(done)
            return
        if kind == "join":
            if not self.spares_left:
                rec.note = "skipped: no spare node left"
                return
            via = await self._resolve(spec.target)
            if via is None:
                rec.note = "skipped: no member running"
                return
            spare = self.spares_left.pop(0)
            rec.targets = (spare,)
            self.joining.add(spare)
            try:
                await self._join(spec, rec, spare, via, timeout)
            finally:
                self.joining.discard(spare)
            return
        if kind == "wipe":
            async with self._wiping:  # after the previous wipe's member is a voter again
                target = await self._resolve(spec.target)
                if target is None:
                    rec.note = f"skipped: no {spec.target} node available"
                    return
                await self._wipe(rec, target, timeout)
            return
        target = await self._resolve(spec.target)
        if target is None:
            rec.note = f"skipped: no {spec.target} node available"
            return
        await self._leave_or_remove(rec, kind, target, timeout)

    async def _join(
        self, spec: FaultSpec, rec: FaultRecord, spare: str, via: str, timeout: float
    ) -> None:
        """Start ``spare`` joining through ``via``; wait up to ``timeout`` for it to be a voter."""
        await self._proc(f"join {self.cluster.node(via).api_addr}", spare)
        started = trio.current_time()
        state = "?"
        left = "" if spec.param("via_leaves") else None  # "": not yet
        # With via_leaves the wait is shielded (like a wipe's rejoin): a join cut off by
        # the end of the fault phase would pass unjudged, and a learner that never gets
        # promoted still converges with the others.
        with trio.CancelScope(shield=left is not None), trio.move_on_after(timeout):
            while True:
                resp = await self._api(spare, "GET", "/v1/cluster/join", timeout=2.0)
                if resp is not None and resp.status == 200:
                    state = resp.body.get("state", "?")
                    if state in ("voter", "failed"):
                        break
                    if left == "" and state in ("adding", "catching-up", "promoting"):
                        left = await self._via_leaves(via, timeout)
                await trio.sleep(0.25)
        took = trio.current_time() - started
        after = f" ({via} {left} during the join)" if left else ""
        if state == "voter":
            rec.note = f"{spare} joined via {via}, a voter after {took:.1f}s{after}"
        else:
            self._problem(rec, f"{spare} joining via {via}: {state} after {took:.1f}s{after}")

    async def _wipe(self, rec: FaultRecord, node: str, timeout: float) -> None:
        """A member loses its disk (docs/operations.md "A disk was replaced"): kill -9, data
        dir deleted, started empty, rejoined under its id with ``replace`` through another
        member; a problem unless it is a voter again within ``timeout``."""
        rec.targets = (node,)
        others = [n for n in self._up() if n != node]
        if not others:
            rec.note = "skipped: no other member to join through"
            return
        via = self.rng.choice(others)
        # Shielded: once the disk is gone the rejoin finishes (within ``timeout``) even when
        # the fault phase ends meanwhile; healing cannot bring a wiped member back.
        with trio.CancelScope(shield=True):
            await self._wipe_and_rejoin(rec, node, via, others, timeout)

    async def _wipe_and_rejoin(
        self, rec: FaultRecord, node: str, via: str, others: list[str], timeout: float
    ) -> None:
        await self._proc("wipe", node)
        started = trio.current_time()
        state, asked = "?", False
        with trio.move_on_after(timeout):
            while True:
                if not asked:
                    body = {"target": self.cluster.node(via).api_addr, "replace": True}
                    resp = await self._api(node, "POST", "/v1/cluster/join", body, timeout=5.0)
                    if resp is not None and resp.status >= 400:
                        # As an operator would: through another member (this one may be down).
                        state = f"refused: {resp.status} {resp.body}"
                        others = [n for n in self._up() if n != node and n != via] or others
                        via = self.rng.choice(others)
                    else:
                        asked = resp is not None
                else:
                    resp = await self._api(node, "GET", "/v1/cluster/join", timeout=2.0)
                    if resp is not None and resp.status == 200:
                        state = resp.body.get("state", "?")
                        if state in ("voter", "failed"):
                            break
                await trio.sleep(0.25)
        took = trio.current_time() - started
        if state == "voter":
            rec.note = f"{node} wiped, rejoined via {via}, a voter after {took:.1f}s"
        else:
            self._problem(rec, f"{node} wiped, rejoining via {via}: {state} after {took:.1f}s")

    async def _via_leaves(self, via: str, timeout: float) -> str:
        """The member a join goes through leaves the cluster (and stops for good) while the
        join runs: what the join's fallback to the other members is for."""
        resp = await self._api(via, "POST", "/v1/cluster/leave", {}, timeout=timeout)
        if resp is None or resp.status != 200:
            return "could not leave" if resp is None else f"could not leave ({resp.status})"
        await self._proc("retire", via)
        return "left"

    async def _leave_or_remove(
        self, rec: FaultRecord, kind: str, node: str, timeout: float
    ) -> None:
        rec.targets = (node,)
        if kind == "leave":
            resp = await self._api(node, "POST", "/v1/cluster/leave", {}, timeout=timeout)
        else:
            others = [n for n in self._up() if n != node]
            if not others:
                rec.note = "skipped: no other member to ask"
                return
            via = self.rng.choice(others)
            resp = await self._api(via, "DELETE", f"/v1/cluster/members/{node}", timeout=timeout)
        if resp is None or resp.status != 200:
            if resp is None:
                why = f"no answer ({self._fetch_errors.get(via if kind != 'leave' else node)})"
            else:
                why = f"{resp.status} {resp.body}"
            self._problem(rec, f"{kind} of {node} failed: {why}")
            return
        await self._proc("retire", node)
        voters = resp.body.get("voters") if isinstance(resp.body, dict) else None
        rec.note = f"{node} {'left' if kind == 'leave' else 'removed'}" + (
            f"; voters {','.join(voters)}" if voters else ""
        )
