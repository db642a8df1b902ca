"""A seeded random command script, applied and summarised (run in a subprocess by the tests).

``python -m tests.sm.replay SEED N`` prints the state digest and a hash of the CBOR snapshot
bytes after applying N random commands generated from SEED with a ``random.Random``.
"""

from __future__ import annotations

import hashlib
import random
import sys
from typing import Any

import cbor2

from univrs.sm import (
    ClusterStateMachine,
    CreateInstance,
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
    RegisterNode,
    ScaleWorkload,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    WorkloadSpec,
    snapshot_plain,
    state_digest,
)


def script(seed: int, n: int) -> list[tuple[Any, int]]:
    """N (command or envelope, time_ms) pairs drawn from ``random.Random(seed)``."""
    rng = random.Random(seed)
    w = [f"w{k}" for k in range(20)]
    i = [f"i{k}" for k in range(60)]
    nodes = [f"n{k}" for k in range(5)]
    peers = [f"p{k}" for k in range(6)]
    out: list[tuple[Any, int]] = []
    sessions: list[str] = []
    seqs: dict[str, int] = {}
    for index in range(1, n + 1):
        pick = rng.randrange(12)
        cmd: Any
        if pick == 0:
            spec = WorkloadSpec(
                name=rng.choice(["web", "api"]),
                image="img:1",
                replicas=rng.randrange(4),
                env={rng.choice("ABC"): str(rng.randrange(9))},
                labels={"tier": rng.choice(["a", "b"])},
            )
            cmd = CreateWorkload(id=rng.choice(w), spec=spec)
        elif pick == 1:
            cmd = ScaleWorkload(id=rng.choice(w), replicas=rng.randrange(5))
        elif pick == 2:
            cmd = DeleteWorkload(id=rng.choice(w))
        elif pick in (3, 4):
            node = rng.choice([None, *nodes])
            spec_i = InstanceSpec(workload_id=rng.choice(w), node_id=node)
            cmd = CreateInstance(id=rng.choice(i), spec=spec_i)
        elif pick == 5:
            cmd = UpdateInstanceStatus(
                id=rng.choice(i), status=rng.choice(list(InstanceStatus)), node_id=None
            )
        elif pick == 6:
            cmd = DeleteInstance(id=rng.choice(i))
        elif pick == 7:
            cmd = RegisterNode(info=NodeInfo(id=rng.choice(nodes), labels={"z": "1"}))
        elif pick == 8:
            status = rng.choice(list(NodeStatus))
            cmd = UpdateNodeStatus(id=rng.choice(nodes), status=status)
        elif pick == 9:
            cmd = rng.choice([DeregisterNode(id=rng.choice(nodes)), OpenSession()])
        elif pick == 10:
            cmd = MintCredits(to_peer=rng.choice(peers), amount=rng.randrange(1, 50), reason="r")
        else:
            a, b = rng.sample(peers, 2)
            cmd = TransferCredits(from_peer=a, to_peer=b, amount=rng.randrange(1, 30))
        if isinstance(cmd, OpenSession):
            sessions.append(f"c{index}")
        elif sessions and rng.random() < 0.5:
            client = rng.choice(sessions)
            seq = seqs.get(client, 0) + rng.choice([0, 1, 1, 1]) or 1  # sometimes a retry
            seqs[client] = seq
            cmd = Envelope(command=cmd, client_id=client, seq=seq)
        out.append((cmd, 1000 * index + rng.randrange(-500, 500)))
    return out


def run(seed: int, n: int) -> tuple[str, str]:
    sm = ClusterStateMachine()
    for index, (cmd, time_ms) in enumerate(script(seed, n), start=1):
        sm.apply(cmd, index=index, term=1 + index // 100, time_ms=time_ms)
    assert sm.problems() == []
    snapshot_hash = hashlib.sha256(cbor2.dumps(snapshot_plain(sm))).hexdigest()
    return state_digest(sm), snapshot_hash


if __name__ == "__main__":
    digest, snapshot_hash = run(int(sys.argv[1]), int(sys.argv[2]))
    print(digest, snapshot_hash)
