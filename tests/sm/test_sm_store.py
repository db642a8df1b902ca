"""The StateStore interface through InMemoryStateStore (async, no Raft)."""

from __future__ import annotations

import pytest

from tests.sm.helpers import node_info, small_policy, spec
from univrs.sm import (
    AlreadyExists,
    ClusterStateMachine,
    Envelope,
    ErrorCode,
    Failure,
    InMemoryStateStore,
    InstanceSpec,
    InstanceStatus,
    InsufficientCredits,
    InvalidArgument,
    MintCredits,
    NodeStatus,
    NotFound,
    ReadConsistency,
    SessionExpired,
    StateStore,
    Success,
    VersionConflict,
    WorkloadPhase,
    failure_to_exception,
)

LOCAL = ReadConsistency.LOCAL


async def test_workload_life_cycle() -> None:
    store: StateStore = InMemoryStateStore()
    created = await store.create_workload("w1", spec("web"))
    assert (created.id, created.version, created.created_index) == ("w1", 1, 1)
    assert created.status.phase == WorkloadPhase.PROGRESSING
    assert await store.get_workload("w1") == created
    assert await store.get_workload("w1", consistency=LOCAL) == created
    scaled = await store.scale_workload("w1", 5, expected_version=1)
    assert (scaled.spec.replicas, scaled.version) == (5, 2)
    updated = await store.update_workload("w1", spec("web", image="nginx:2", replicas=5))
    assert (updated.spec.image, updated.version, updated.created_index) == ("nginx:2", 3, 1)
    await store.create_workload("w0", spec("api"))
    assert [w.id for w in await store.list_workloads()] == ["w0", "w1"]
    await store.delete_workload("w1", expected_version=3)
    assert await store.get_workload("w1") is None
    assert [w.id for w in await store.list_workloads(consistency=LOCAL)] == ["w0"]


async def test_failures_are_typed_exceptions() -> None:
    store = InMemoryStateStore()
    await store.create_workload("w1", spec("web"))
    with pytest.raises(AlreadyExists):
        await store.create_workload("w1", spec("web"))
    with pytest.raises(NotFound):
        await store.scale_workload("nope", 1)
    with pytest.raises(InvalidArgument):
        await store.scale_workload("w1", -1)
    with pytest.raises(VersionConflict) as conflict:
        await store.delete_workload("w1", expected_version=9)
    assert conflict.value.current_version == 1
    assert conflict.value.code == ErrorCode.VERSION_CONFLICT.value
    with pytest.raises(InsufficientCredits):
        await store.transfer_credits("alice", "bob", 1)
    assert await store.get_workload("w1") is not None  # the failed delete changed nothing


async def test_instances_and_nodes() -> None:
    store = InMemoryStateStore()
    await store.create_workload("w1", spec("web", replicas=1))
    node = await store.register_node(node_info("n1"))
    assert (node.id, node.status, node.version) == ("n1", NodeStatus.READY, 2)
    await store.register_node(node_info("n2"), status=NodeStatus.NOT_READY)
    assert [n.id for n in await store.list_nodes()] == ["n1", "n2"]
    instance = await store.create_instance("i1", InstanceSpec(workload_id="w1"))
    assert (instance.status, instance.node_id) == (InstanceStatus.PENDING, None)
    running = await store.update_instance_status(
        "i1", InstanceStatus.RUNNING, node_id="n1", message="up", expected_version=4
    )
    assert (running.status, running.node_id, running.message, running.version) == (
        InstanceStatus.RUNNING,
        "n1",
        "up",
        5,
    )
    assert await store.get_instance("i1") == running
    workload = await store.get_workload("w1")
    assert workload is not None and workload.status.phase == WorkloadPhase.READY
    await store.create_instance("i2", InstanceSpec(workload_id="w1", node_id="n2"))
    assert [i.id for i in await store.list_instances(node_id="n1")] == ["i1"]
    assert [i.id for i in await store.list_instances(workload_id="w1")] == ["i1", "i2"]
    down = await store.update_node_status("n1", NodeStatus.DOWN)
    assert down.status == NodeStatus.DOWN
    lost = await store.get_instance("i1", consistency=LOCAL)
    assert lost is not None and lost.status == InstanceStatus.UNKNOWN
    await store.deregister_node("n1")
    assert await store.get_node("n1") is None
    assert [i.id for i in await store.list_instances()] == ["i2"]
    await store.delete_instance("i2")
    assert await store.list_instances() == []
    with pytest.raises(NotFound):
        await store.delete_instance("i2")


async def test_credits() -> None:
    store = InMemoryStateStore()
    await store.mint_credits("alice", 100, "genesis")
    await store.transfer_credits("alice", "bob", 30)
    assert await store.get_balance("alice") == 70
    assert await store.get_balance("bob", consistency=LOCAL) == 30
    assert await store.get_balance("carol") == 0
    with pytest.raises(InvalidArgument):
        await store.mint_credits("alice", 5, "")


async def test_sessions_through_the_store_with_an_injected_leader_clock() -> None:
    now = [1_000]
    store = InMemoryStateStore(
        state_machine=ClusterStateMachine(small_policy(ttl_ms=500)), clock_ms=lambda: now[0]
    )
    client = await store.open_session()
    mint = MintCredits(to_peer="alice", amount=5, reason="r")
    first = await store.execute(Envelope(command=mint, client_id=client, seq=1))
    assert first == Success(version=2)
    assert await store.execute(Envelope(command=mint, client_id=client, seq=1)) == first
    assert await store.get_balance("alice") == 5
    now[0] = 1_600  # the leader's clock moved past the session's time to live
    expired = await store.execute(Envelope(command=mint, client_id=client, seq=2))
    assert isinstance(expired, Failure)
    with pytest.raises(SessionExpired):
        raise failure_to_exception(expired)
    other = await store.open_session()
    await store.close_session(other)
    assert not store.state_machine.has_session(other)


def test_state_store_is_abstract() -> None:
    with pytest.raises(TypeError):
        StateStore()  # type: ignore[abstract]
