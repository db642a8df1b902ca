"""``RaftStateStore`` (univrs/api/store.py): the one StateStore of a node, whatever its role.

On real ``RaftRuntime`` drivers over the in-memory cluster (autojump clock) with the
in-process forwarder of ``test_write_outcomes``: a follower's store forwards writes to the
leader and returns once it applied them itself, raises the same typed errors as the leader's,
never forwards a term-fenced (leader-only) decision; an unconfirmed write is a timeout (its
outcome unknown), not "nothing applied"; the watch follows this node's history. And every
command's operation request builds the command back (how a write travels to the leader)."""

from __future__ import annotations

from contextlib import aclosing

import pytest
import trio

from tests.api.test_write_outcomes import IDS, api_cluster
from tests.runtime.memcluster import create, wait_leader, wait_until
from univrs.api.forward import request_of
from univrs.api.ops import handler
from univrs.api.store import RaftStateStore
from univrs.errors import NotFound, NotLeader, Timeout, VersionConflict
from univrs.sm.commands import (
    COMMAND_TYPES,
    BootstrapToken,
    CloseSession,
    Command,
    CreateInstance,
    CreateToken,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    MintCredits,
    OpenSession,
    RegisterNode,
    RevokeToken,
    ScaleWorkload,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    UpdateWorkload,
)
from univrs.sm.events import ObjectKind
from univrs.sm.model import (
    InstanceSpec,
    InstanceStatus,
    NodeInfo,
    NodeStatus,
    Port,
    Resources,
    WorkloadSpec,
)
from univrs.sm.store import ReadConsistency

SPEC = WorkloadSpec(
    name="web",
    image="nginx:1",
    replicas=3,
    args=("-v",),
    env={"A": "1"},
    labels={"tier": "web"},
    resources=Resources(cpu_millis=100, memory_bytes=1 << 20),
    ports=(Port(container_port=80, name="http"),),
)
EXAMPLES: list[Command] = [
    CreateWorkload(id="w", spec=SPEC),
    UpdateWorkload(id="w", spec=SPEC, expected_version=4),
    ScaleWorkload(id="w", replicas=5),
    DeleteWorkload(id="w", expected_version=2),
    CreateInstance(id="i", spec=InstanceSpec(workload_id="w", node_id="n")),
    CreateInstance(id="i", spec=InstanceSpec(workload_id="w")),
    UpdateInstanceStatus(id="i", status=InstanceStatus.RUNNING, message="up", node_id="n"),
    DeleteInstance(id="i"),
    RegisterNode(
        info=NodeInfo(
            id="n", addresses=("10.0.0.1",), capacity=Resources(cpu_millis=4000), labels={"z": "a"}
        ),
        status=NodeStatus.NOT_READY,
    ),
    UpdateNodeStatus(id="n", status=NodeStatus.DRAINING, expected_version=9),
    DeregisterNode(id="n"),
    MintCredits(to_peer="p", amount=5, reason="why"),
    TransferCredits(from_peer="p", to_peer="q", amount=2),
    OpenSession(),
    CloseSession(client_id="c"),
]


TOKEN_COMMANDS = {CreateToken, BootstrapToken, RevokeToken}


def test_every_command_travels_as_an_operation_that_builds_it_back() -> None:
    assert {type(c) for c in EXAMPLES} == set(COMMAND_TYPES) - TOKEN_COMMANDS
    for command in EXAMPLES:
        name, args = request_of(command)
        build = handler(name).build
        assert build is not None
        assert build(args)[0] == command, name


def test_a_term_fenced_or_token_command_is_never_forwarded() -> None:
    for command in (
        RevokeToken(id="t1"),
        CreateInstance(id="i", spec=InstanceSpec(workload_id="w"), fence_term=3),
        DeleteInstance(id="i", fence_term=3),
    ):
        with pytest.raises(NotLeader):
            request_of(command)


async def test_a_followers_store_forwards_writes_and_reads_them_back(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    cluster, services = await api_cluster(nursery)
    leader = await wait_leader(cluster)
    follower = next(services[n].store for n in IDS if n != leader.node_id)
    created = await follower.create_workload("w", WorkloadSpec(name="web", image="img"))
    assert created.id == "w" and created.spec.replicas == 1
    # Applied on the follower itself before the call returned: a local read shows it.
    assert await follower.get_workload("w", consistency=ReadConsistency.LOCAL) == created
    scaled = await follower.scale_workload("w", 4, expected_version=created.version)
    assert scaled.spec.replicas == 4
    with pytest.raises(VersionConflict):
        await follower.scale_workload("w", 5, expected_version=created.version)
    with pytest.raises(NotFound):
        await follower.delete_workload("missing")
    session = await follower.open_session()
    assert session
    await follower.register_node(NodeInfo(id="m1"))
    assert [n.id for n in await follower.list_nodes()] == ["m1"]
    with pytest.raises(NotLeader):
        await follower.execute(
            CreateInstance(id="i", spec=InstanceSpec(workload_id="w"), fence_term=1)
        )
    leader_store = services[leader.node_id].store
    term = leader.status().term
    response = await leader_store.run(
        CreateInstance(id="i", spec=InstanceSpec(workload_id="w"), fence_term=term)
    )
    assert response.version > 0


async def test_an_unconfirmed_write_is_a_timeout_not_nothing_applied(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The leader's entry went out (inbound cut) and may yet commit: the answer must say the
    outcome is unknown (``timeout``), not ``unavailable`` ("nothing was applied")."""
    cluster, services = await api_cluster(nursery)
    leader = await wait_leader(cluster)
    store: RaftStateStore = services[leader.node_id].store
    store.timeout = 0.5
    cluster.deaf.add(leader.node_id)
    with pytest.raises(Timeout) as caught:
        await store.execute(create("w1"))
    assert caught.value.code == "timeout"
    others = [i for i in IDS if i != leader.node_id]
    new = await wait_leader(cluster, others)
    await wait_until(lambda: new.sm.get_workload("w1") is not None, "w1 to commit after all")


async def test_the_store_watches_from_a_read_states_revision(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    cluster, services = await api_cluster(nursery)
    leader = await wait_leader(cluster)
    follower = next(services[n].store for n in IDS if n != leader.node_id)
    await follower.create_workload("before", WorkloadSpec(name="b", image="img"))
    state = await follower.read_state(ReadConsistency.LINEARIZABLE)
    start = state.last_applied_index + 1
    await follower.create_workload("after", WorkloadSpec(name="a", image="img"))
    kinds = frozenset({ObjectKind.WORKLOAD})
    with trio.fail_after(10):
        async with aclosing(follower.watch(kinds, from_revision=start)) as events:
            async for event in events:
                assert (event.id, event.type.value) == ("after", "put")
                break
    assert follower.node.runtime.watch_hub.watchers == 0


async def test_a_watch_read_for_its_first_event_renders_one_revision(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # The reconciler waits for one event, then reads the state: its watch must not render
    # every revision applied meanwhile (docs/performance.md, "Round 12 (s12-cpu2)"). With a
    # first poll of 1,000 events the four revisions below are all rendered.
    cluster, services = await api_cluster(nursery)
    leader = await wait_leader(cluster)
    store: RaftStateStore = services[leader.node_id].store
    state = await store.read_state(ReadConsistency.LINEARIZABLE)
    start = state.last_applied_index + 1
    for name in ("w1", "w2", "w3", "w4"):
        await store.create_workload(name, WorkloadSpec(name=name, image="img"))
    hub = store.node.runtime.watch_hub
    kinds = frozenset({ObjectKind.WORKLOAD})
    with trio.fail_after(10):
        async with aclosing(store.watch(kinds, from_revision=start)) as events:
            async for event in events:
                assert (event.id, event.type.value) == ("w1", "put")
                break
    assert len(hub._rendered) == 1
    # A watch read on renders the rest, in order.
    seen: list[str] = []
    with trio.fail_after(10):
        async with aclosing(store.watch(kinds, from_revision=start)) as events:
            async for event in events:
                seen.append(event.id)
                if len(seen) == 4:
                    break
    assert seen == ["w1", "w2", "w3", "w4"]
    assert len(hub._rendered) == 4
