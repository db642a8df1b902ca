"""Which nodes the chaos injector picks while a spare joins (no processes: the injector's
process actions and HTTP requests are replaced by fakes that record what they were asked).

Chaos seed 603 of join-and-leave-under-load: `leave follower` picked the spare n4 eight
seconds after its start, before its process listened (a load of 10), and failed at once with
"no answer" (connection refused); `remove leader` went through the second spare the same way.
A spare whose join is still running is no fault's target nor the member a fault goes through.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import trio
import trio.testing

from univrs.chaos.faults import FaultRecord, Injector
from univrs.chaos.scenario import FaultSpec, PlannedFault
from univrs.net.http import HttpResponse


@attrs.define
class _Node:
    node_id: str
    api_addr: str


@attrs.define
class _Cluster:
    nodes: list[_Node]
    spares: list[str]

    def node(self, node_id: str) -> _Node:
        return next(n for n in self.nodes if n.node_id == node_id)


class _Monitor:
    async def leader_of(self) -> str | None:
        return "n1"


class _FakeInjector(Injector):
    """Processes and the API faked: a spare's join answers ``adding`` until ``promoted`` is
    set; every other request is answered 200 and recorded as (node asked, method, path)."""

    promoted: trio.Event
    asked: list[tuple[str, str, str]]

    async def _proc(self, action: str, node_id: str) -> None:
        if action.startswith("join "):
            self.active.add(node_id)
        elif action == "retire":
            self.active.discard(node_id)

    async def _api(
        self, node_id: str, method: str, path: str, body: object = None, timeout: float = 30.0
    ) -> HttpResponse | None:
        if path == "/v1/cluster/join":
            state = "voter" if self.promoted.is_set() else "adding"
            await trio.sleep(0.25)
            return HttpResponse(status=200, headers={}, body={"state": state})
        self.asked.append((node_id, method, path))
        doc: dict[str, Any] = {"voters": []}
        return HttpResponse(status=200, headers={}, body=doc)


def _injector(seed: int) -> _FakeInjector:
    names = ["n1", "n2", "n3", "n4", "n5"]
    cluster = _Cluster(
        nodes=[_Node(n, f"127.0.0.1:{9000 + i}") for i, n in enumerate(names)],
        spares=["n4", "n5"],
    )
    inj = _FakeInjector(
        cluster=cluster,  # type: ignore[arg-type]
        proxies={},
        monitor=_Monitor(),  # type: ignore[arg-type]
        rng=random.Random(seed),
        t0=0.0,
    )
    inj.promoted = trio.Event()
    inj.asked = []
    return inj


def _planned(index: int, kind: str, target: str) -> PlannedFault:
    return PlannedFault(index=index, spec=FaultSpec(kind=kind, target=target), start=0, end=0)


async def _run(inj: Injector, fault: PlannedFault) -> FaultRecord:
    rec = FaultRecord(index=fault.index, label=fault.label(), kind=fault.kind, start=0.0)
    await inj._membership(fault, rec)
    return rec


async def test_a_joining_spare_is_no_target_and_no_member_to_go_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    leave_targets, remove_vias = set(), set()
    for seed in range(12):
        inj = _injector(seed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, inj, _planned(0, "join", "random"))
            with trio.fail_after(5):
                while "n4" not in inj.active:
                    await trio.sleep(0.01)
            # n4 runs but is still joining: a leave picks a member, a removal goes through one.
            rec = await _run(inj, _planned(1, "leave", "follower"))
            assert rec.targets and rec.targets[0] in ("n2", "n3"), rec.targets
            rec = await _run(inj, _planned(2, "remove", "leader"))
            assert rec.targets == ("n1",)
            leave_targets.add(inj.asked[0][0])
            remove_vias.add(inj.asked[1][0])
            inj.promoted.set()
        assert "n4" in inj.active
        # Once a voter, the spare is a member like the others.
        assert "n4" in inj._up()
    assert leave_targets <= {"n2", "n3"} and remove_vias <= {"n2", "n3"}
