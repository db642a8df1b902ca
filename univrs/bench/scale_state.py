"""A generated cluster state of N workloads and N instances (issue 17, ``scripts/bench_scale``).

The fast path of the scale benchmark: the tables are built directly with
``ClusterStateMachine.from_parts`` (the constructor a restore uses) instead of applying 2N
commands, which would take minutes at 1,000,000; the client sessions go through ``apply``.
Everything measured afterwards (snapshot, restore, a cluster seeded from it) goes through the
node's own code.
"""

from __future__ import annotations

from univrs.sm import (
    ClusterStateMachine,
    Created,
    Envelope,
    Instance,
    InstanceStatus,
    Node,
    NodeInfo,
    NodeStatus,
    OpenSession,
    Port,
    Resources,
    ScaleWorkload,
    WorkloadSpec,
)
from univrs.sm.objects import StoredWorkload
from univrs.sm.sessions import SessionPolicy

INSTANCES_PER_NODE = 100
TERM = 3  # the term of every generated entry
CLOCK_MS = 1_700_000_000_000
_STATUSES = (InstanceStatus.RUNNING,) * 8 + (InstanceStatus.PENDING, InstanceStatus.FAILED)


def workload_id(k: int) -> str:
    """The id of the k-th generated workload."""
    return f"wl-{k:08d}"


def node_id(k: int) -> str:
    """The id of the k-th generated node (machine)."""
    return f"node-{k:06d}"


def workload_spec(n: int) -> WorkloadSpec:
    """Specs as a real cluster has them: unique env, a few label sets, sizes and ports (also
    ``scripts/bench_sm.py``'s and ``bench_state_restart.py``'s)."""
    return WorkloadSpec(
        name=f"web-{n}",
        image=f"registry.example/app-{n % 200}:1.{n % 7}",
        replicas=1 + n % 5,
        args=("--port", str(8000 + n % 3)),
        env={"MODE": "prod", "INSTANCE": f"web-{n}"},
        labels={"app": f"app-{n % 200}", "tier": ("frontend", "backend", "batch")[n % 3]},
        resources=Resources(cpu_millis=250 * (1 + n % 4), memory_bytes=(128 << 20) * (1 + n % 4)),
        ports=(Port(container_port=8000 + n % 3, name="http"),),
    )


def node_count(n: int) -> int:
    """Nodes (machines) of a state of n instances: 100 instances each."""
    return max(1, n // INSTANCES_PER_NODE)


def build(n: int) -> ClusterStateMachine:
    """A state of n workloads, n instances (one per workload), n/100 nodes, 100 credit
    accounts and 4 client sessions with 32 cached responses each."""
    n_nodes = node_count(n)
    nodes = [
        Node(
            info=NodeInfo(
                id=node_id(k),
                addresses=(f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}:7000",),
                capacity=Resources(cpu_millis=64_000, memory_bytes=256 << 30),
                labels={"zone": f"z{k % 3}", "rack": f"r{k % 40}"},
            ),
            status=NodeStatus.READY,
            version=1 + k,
            created_index=1 + k,
        )
        for k in range(n_nodes)
    ]
    first = n_nodes + 1
    workloads = [
        StoredWorkload(
            id=workload_id(k), spec=workload_spec(k), version=first + k, created_index=first + k
        )
        for k in range(n)
    ]
    first += n
    instances = [
        Instance(
            id=f"in-{k:08d}",
            workload_id=workload_id(k),
            node_id=node_id(k % n_nodes),
            status=_STATUSES[k % len(_STATUSES)],
            message="" if k % 10 != 9 else "exit code 1",
            version=first + k,
            created_index=first + k,
        )
        for k in range(n)
    ]
    last = first + n - 1
    sm = ClusterStateMachine.from_parts(
        policy=SessionPolicy(),
        last_index=last,
        last_term=TERM,
        clock_ms=CLOCK_MS,
        workloads=workloads,
        instances=instances,
        nodes=nodes,
        balances=[(f"peer-{k}", 100 + k) for k in range(100)],
        sessions=[],
    )
    # Sessions with cached responses, through the real apply path.
    index = last
    for _ in range(4):
        index += 1
        opened = sm.apply(OpenSession(), index=index, term=TERM, time_ms=CLOCK_MS)
        assert isinstance(opened, Created)
        client = opened.id
        for seq in range(1, 33):
            index += 1
            cmd = ScaleWorkload(id=workload_id((seq * 7919) % n), replicas=seq % 5)
            sm.apply(Envelope(command=cmd, client_id=client, seq=seq), index=index, term=TERM)
    return sm
