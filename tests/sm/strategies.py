"""Hypothesis strategies: random command sequences over small id pools (so they collide).

A *step* is (command, wrap, time delta). ``wrap`` says how the command is sent: ``None`` bare,
``("session", k)`` as the next sequence number of the k-th open session, ``("owned", k, o)``
the same with owner ``o`` in the envelope (s14-owner), ``("retry", k)`` as
a copy of the k-th session envelope sent so far; the time delta moves a fake leader clock
(None: the entry carries no time). ``expected_version`` may be ``CURRENT``,
resolved just before applying to the object's current version (so conditional commands also
succeed, not only conflict). ``materialize`` turns steps into envelopes, deterministically.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

from univrs.sm import (
    BootstrapToken,
    CloseSession,
    ClusterStateMachine,
    Command,
    Created,
    CreateInstance,
    CreateToken,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    Envelope,
    InstanceSpec,
    InstanceStatus,
    MintCredits,
    NodeInfo,
    NodeStatus,
    OpenSession,
    Port,
    RegisterNode,
    Resources,
    Response,
    RevokeToken,
    ScaleWorkload,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    UpdateWorkload,
    WorkloadSpec,
)
from univrs.sm.validate import MAX_QUANTITY

CURRENT = "current"  # placeholder for "the object's current version"

workload_ids = st.sampled_from(["w0", "w1", "w2"])
instance_ids = st.sampled_from(["i0", "i1", "i2", "i3", "i4"])
node_ids = st.sampled_from(["n0", "n1", "n2"])
peers = st.sampled_from(["p0", "p1", "p2"])
some_bad_ids = st.sampled_from(["", "bad id", "x/y"])
expected_versions = st.one_of(
    st.none(), st.none(), st.just(CURRENT), st.just(CURRENT), st.integers(-1, 40)
)

good_specs = st.builds(
    WorkloadSpec,
    name=st.sampled_from(["web", "api", "db.main"]),
    image=st.sampled_from(["nginx:1", "redis:7"]),
    replicas=st.integers(0, 5),
    args=st.lists(st.sampled_from(["-v", "--x=1"]), max_size=2).map(tuple),
    env=st.dictionaries(st.sampled_from(["A", "B"]), st.sampled_from(["", "v"]), max_size=2),
    labels=st.dictionaries(
        st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]), max_size=2
    ),
    resources=st.builds(
        Resources, cpu_millis=st.integers(0, 4000), memory_bytes=st.integers(0, 1 << 30)
    ),
    ports=st.lists(st.builds(Port, container_port=st.integers(1, 3)), max_size=1).map(tuple),
)
any_specs = st.builds(
    WorkloadSpec,
    name=st.sampled_from(["web", "Bad", ""]),
    image=st.sampled_from(["nginx:1", ""]),
    replicas=st.integers(-1, 5),
    env=st.dictionaries(st.sampled_from(["A", "1bad"]), st.just("v"), max_size=2),
    resources=st.builds(Resources, cpu_millis=st.integers(-1, 1)),
    ports=st.lists(st.builds(Port, container_port=st.integers(0, 2)), max_size=2).map(tuple),
)
specs = st.one_of(good_specs, good_specs, good_specs, any_specs)
node_infos = st.builds(
    NodeInfo,
    id=st.one_of(node_ids, node_ids, node_ids, some_bad_ids),
    addresses=st.lists(st.sampled_from(["10.0.0.1:1", "h:2"]), max_size=2).map(tuple),
    capacity=st.builds(Resources, cpu_millis=st.integers(0, 8000), memory_bytes=st.integers(-1, 9)),
    labels=st.dictionaries(st.sampled_from(["zone"]), st.sampled_from(["a", "b"]), max_size=1),
)
amounts = st.one_of(
    st.integers(1, 60),
    st.integers(1, 60),
    st.integers(1, 60),
    st.integers(-1, 0),
    st.just(MAX_QUANTITY),
)
reasons = st.sampled_from(["grant", "grant", "grant", "", " "])
create_workloads = st.builds(
    CreateWorkload, id=st.one_of(workload_ids, workload_ids, workload_ids, some_bad_ids), spec=specs
)
create_instances = st.builds(
    CreateInstance,
    id=instance_ids,
    spec=st.builds(InstanceSpec, workload_id=workload_ids, node_id=st.one_of(st.none(), node_ids)),
)
register_nodes = st.builds(RegisterNode, info=node_infos, status=st.sampled_from(NodeStatus))
transfers = st.builds(
    TransferCredits,
    from_peer=st.sampled_from(["p0", "p1", "p0", "p2"]),
    to_peer=st.sampled_from(["p1", "p2", "p0"]),
    amount=amounts,
)
mints = st.builds(MintCredits, to_peer=peers, amount=amounts, reason=reasons)

commands: st.SearchStrategy[Any] = st.one_of(
    create_workloads,
    create_workloads,
    create_instances,
    create_instances,
    create_instances,
    register_nodes,
    mints,
    st.builds(UpdateWorkload, id=workload_ids, spec=specs, expected_version=expected_versions),
    st.builds(DeleteWorkload, id=workload_ids, expected_version=expected_versions),
    st.builds(
        ScaleWorkload,
        id=workload_ids,
        replicas=st.integers(-1, 6),
        expected_version=expected_versions,
    ),
    st.builds(
        UpdateInstanceStatus,
        id=instance_ids,
        status=st.sampled_from(InstanceStatus),
        message=st.sampled_from(["", "ok"]),
        node_id=st.one_of(st.none(), st.none(), node_ids),
        expected_version=expected_versions,
    ),
    st.builds(DeleteInstance, id=instance_ids, expected_version=expected_versions),
    register_nodes,
    st.builds(
        UpdateNodeStatus,
        id=node_ids,
        status=st.sampled_from(NodeStatus),
        expected_version=expected_versions,
    ),
    st.builds(DeregisterNode, id=node_ids, expected_version=expected_versions),
    transfers,
    transfers,
    mints,
    st.just(OpenSession()),
    st.builds(OpenSession, owner=st.sampled_from(["a", "b", ""])),
    st.builds(CloseSession, client_id=st.sampled_from(["c1", "c2", "c3", "c4"])),
    st.builds(
        CreateToken,
        id=st.sampled_from(["t1", "t2", "t3"]),
        name=st.sampled_from(["ci", "ops"]),
        roles=st.sampled_from([("read",), ("admin",), ("credits", "write"), ("write", "read")]),
        secret_hash=st.sampled_from(["ab" * 32, "cd" * 32, "ef" * 32, "xyz"]),
    ),
    st.builds(
        BootstrapToken,
        id=st.sampled_from(["t0", "t1"]),
        name=st.just("root"),
        secret_hash=st.sampled_from(["01" * 32, "ab" * 32]),
    ),
    st.builds(RevokeToken, id=st.sampled_from(["t0", "t1", "t2", "t9"])),
)
wraps = st.one_of(
    st.none(),
    st.tuples(st.just("session"), st.integers(0, 3)),
    st.tuples(st.just("session"), st.integers(0, 3)),
    st.tuples(st.just("retry"), st.integers(0, 50)),
    # s14-owner: the caller's identity in the envelope (the owner's, another's, or "")
    st.tuples(st.just("owned"), st.integers(0, 3), st.sampled_from(["a", "b", ""])),
)
time_steps = st.one_of(st.none(), st.integers(-20_000, 60_000))  # leader clock deltas
random_steps = st.lists(st.tuples(commands, wraps, time_steps), max_size=60)
# Every script starts from a small populated cluster, so short scripts already meet objects.
SETUP: list[Any] = [
    (CreateWorkload(id="w0", spec=WorkloadSpec(name="web", image="nginx:1", replicas=2)), None, 0),
    (CreateWorkload(id="w1", spec=WorkloadSpec(name="api", image="api:2")), None, None),
    (RegisterNode(info=NodeInfo(id="n0")), None, None),
    (RegisterNode(info=NodeInfo(id="n1")), None, 10),
    (CreateInstance(id="i0", spec=InstanceSpec(workload_id="w0", node_id="n0")), None, None),
    (CreateInstance(id="i1", spec=InstanceSpec(workload_id="w0")), None, None),
    (MintCredits(to_peer="p0", amount=100, reason="genesis"), None, None),
    (OpenSession(), None, 10),
    (OpenSession(owner="a"), None, None),  # an owner from the start (s14-owner)
]
steps = random_steps.map(lambda script: SETUP + script)


def resolve_version(command: Any, sm: ClusterStateMachine) -> Any:
    """Replace a CURRENT expected version by the addressed object's version (or None)."""
    if getattr(command, "expected_version", None) != CURRENT:
        return command
    if isinstance(command, UpdateWorkload | DeleteWorkload | ScaleWorkload):
        obj: Any = sm.get_workload(command.id)
    elif isinstance(command, UpdateInstanceStatus | DeleteInstance):
        obj = sm.get_instance(command.id)
    else:
        obj = sm.get_node(command.id)
    return attrs.evolve(command, expected_version=None if obj is None else obj.version)


@attrs.define
class Client:
    """Turns steps into what a client would send, learning session ids from responses."""

    sessions: list[str] = attrs.Factory(list)
    next_seq: dict[str, int] = attrs.Factory(dict)
    sent: list[Envelope] = attrs.Factory(list)  # session envelopes sent so far
    clock: int = 1_000_000

    def time(self, delta: int | None) -> int | None:
        """The leader-stamped time of the next entry (None: the entry carries none)."""
        if delta is None:
            return None
        self.clock += delta  # may go back: a new leader's clock can be behind
        return self.clock

    def envelope(self, command: Command, wrap: Any, sm: ClusterStateMachine) -> Any:
        command = resolve_version(command, sm)
        if wrap is None or isinstance(command, OpenSession | CloseSession):
            return command
        kind, k = wrap[:2]
        if kind == "retry":
            return self.sent[k % len(self.sent)] if self.sent else command
        if not self.sessions:
            return command
        client = self.sessions[k % len(self.sessions)]
        seq = self.next_seq.get(client, 0) + 1
        self.next_seq[client] = seq
        owner = wrap[2] if kind == "owned" else None
        envelope = Envelope(command=command, client_id=client, seq=seq, owner=owner)
        self.sent.append(envelope)
        return envelope

    def learn(self, sent: Any, response: Response) -> None:
        if isinstance(sent, OpenSession) and isinstance(response, Created):
            self.sessions.append(response.id)
