"""The leader's liveness task (univrs/runtime/liveness.py) against a scripted runtime, on
trio's autojump clock: who is marked down and when, the grace period of a new leader, the
task following leadership."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from univrs.raft.ready import Role
from univrs.runtime.liveness import Liveness
from univrs.sm import ClusterStateMachine, Envelope, NodeInfo, RegisterNode, Response


@attrs.frozen
class _Status:
    role: Role
    term: int


@attrs.define(eq=False)
class FakeRuntime:
    """What Liveness uses of RaftRuntime: status, wait_changed, sm, propose (applied at once)."""

    sm: ClusterStateMachine = attrs.field(factory=ClusterStateMachine)
    role: Role = Role.FOLLOWER
    term: int = 1
    proposed: list[Any] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def status(self) -> _Status:
        return _Status(self.role, self.term)

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def become(self, role: Role, term: int) -> None:
        self.role, self.term = role, term
        self._changed.set()
        self._changed = trio.Event()

    async def propose(self, envelope: Envelope) -> Response:
        self.proposed.append(envelope.command)
        index = self.sm.last_applied_index + 1
        return self.sm.apply(envelope, index=index, term=self.term)

    def register(self, *ids: str) -> None:
        for ident in ids:
            index = self.sm.last_applied_index + 1
            self.sm.apply(RegisterNode(info=NodeInfo(id=ident)), index=index, term=self.term)


def statuses(runtime: FakeRuntime) -> dict[str, str]:
    return {n.id: n.status.value for n in runtime.sm.list_nodes()}


async def test_silent_nodes_go_down_counting_from_the_leaderships_start(
    autojump_clock: Any,
) -> None:
    runtime = FakeRuntime()
    runtime.register("a", "b", "c")
    liveness = Liveness(runtime, ttl_ms=10_000)  # type: ignore[arg-type]
    liveness.heartbeat("a")  # heard long before this leadership: counts from its start
    await trio.sleep(60)
    started = trio.current_time()
    await trio.sleep(9)
    liveness.heartbeat("b")
    await liveness.check(started, 10.0)
    assert statuses(runtime) == {"a": "ready", "b": "ready", "c": "ready"}  # grace period
    await trio.sleep(1)
    await liveness.check(started, 10.0)
    assert statuses(runtime) == {"a": "down", "b": "ready", "c": "down"}
    assert liveness.marked_down == 2
    await liveness.check(started, 10.0)
    assert liveness.marked_down == 2  # a down node is not proposed again


async def test_the_task_runs_only_while_leading_and_a_new_leader_grants_grace(
    autojump_clock: Any,
) -> None:
    runtime = FakeRuntime()
    runtime.register("a")
    liveness = Liveness(runtime, ttl_ms=10_000)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(liveness.run)
        await trio.sleep(100)
        assert runtime.proposed == []  # a follower marks nobody down
        runtime.become(Role.LEADER, 2)
        await trio.sleep(9.5)
        assert statuses(runtime) == {"a": "ready"}  # within the grace period
        await trio.sleep(1)
        assert statuses(runtime) == {"a": "down"}
        # Lost the leadership, then won it again: a new grace period before anyone goes down.
        runtime.register("b")
        runtime.become(Role.FOLLOWER, 3)
        await trio.sleep(50)
        assert statuses(runtime)["b"] == "ready"
        runtime.become(Role.LEADER, 4)
        await trio.sleep(9.5)
        assert statuses(runtime)["b"] == "ready"
        await trio.sleep(1)
        assert statuses(runtime)["b"] == "down"
        nursery.cancel_scope.cancel()


async def test_a_ttl_of_zero_turns_liveness_off(autojump_clock: Any) -> None:
    runtime = FakeRuntime(role=Role.LEADER)
    runtime.register("a")
    with trio.fail_after(1):
        await Liveness(runtime, ttl_ms=0).run()  # type: ignore[arg-type]
    assert statuses(runtime) == {"a": "ready"}
