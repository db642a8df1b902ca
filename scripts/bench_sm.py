"""Benchmark of the cluster state machine: apply throughput and snapshot size/time.

Prints medians over ``--repeats`` runs of: apply commands/s (creating workloads, and a mixed
stream of instance/scale/credit commands), then for ``--objects`` workloads the snapshot
(plain data + CBOR encoding) time and size, the restore (CBOR decoding + restore) time, and
the state digest time. CBOR is cbor2's, as the codec layer uses it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import cbor2

from univrs.bench.scale_state import workload_spec
from univrs.sm import (
    ClusterStateMachine,
    Command,
    CreateInstance,
    CreateWorkload,
    Envelope,
    InstanceSpec,
    InstanceStatus,
    MintCredits,
    NodeInfo,
    OpenSession,
    RegisterNode,
    ScaleWorkload,
    TransferCredits,
    UpdateInstanceStatus,
    restore_plain,
    snapshot_plain,
    state_digest,
)


def creates(count: int) -> list[Command]:
    return [CreateWorkload(id=f"wl-{n:08d}", spec=workload_spec(n)) for n in range(count)]


def mixed(count: int, workloads: int) -> list[Any]:
    """Instances created, started, scaled; credits minted and moved; half in a session."""
    out: list[Any] = []
    for n in range(count):
        k = n % 5
        if k == 0:
            spec = InstanceSpec(workload_id=f"wl-{n % workloads:08d}", node_id="node-1")
            cmd: Any = CreateInstance(id=f"in-{n:08d}", spec=spec)
        elif k == 1:
            cmd = UpdateInstanceStatus(id=f"in-{n - 1:08d}", status=InstanceStatus.RUNNING)
        elif k == 2:
            cmd = ScaleWorkload(id=f"wl-{n % workloads:08d}", replicas=n % 7)
        elif k == 3:
            cmd = MintCredits(to_peer=f"peer-{n % 100}", amount=10, reason="reward")
        else:
            cmd = TransferCredits(
                from_peer=f"peer-{(n - 1) % 100}", to_peer=f"peer-{n % 97}", amount=3
            )
        out.append(Envelope(command=cmd, client_id="c2", seq=n + 1) if n % 2 else cmd)
    return out


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def apply_all(sm: ClusterStateMachine, commands: list[Any]) -> None:
    first = sm.last_applied_index + 1
    for offset, command in enumerate(commands):
        sm.apply(command, index=first + offset, term=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000, help="workloads to snapshot")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    n, repeats = args.objects, args.repeats

    create_rates, mixed_rates = [], []
    snap_plain, snap_cbor, sizes, loads, restores, digests = [], [], [], [], [], []
    for _ in range(repeats):
        sm = ClusterStateMachine()
        commands = creates(n)
        elapsed, _ = timed(apply_all, sm, commands)
        create_rates.append(n / elapsed)

        apply_all(sm, [RegisterNode(info=NodeInfo(id="node-1")), OpenSession()])
        stream = mixed(n, n)
        elapsed, _ = timed(apply_all, sm, stream)
        mixed_rates.append(n / elapsed)

        # The snapshot of exactly n workloads (no instances), as the issue asks.
        sm = ClusterStateMachine()
        apply_all(sm, commands)
        t_plain, plain = timed(snapshot_plain, sm)
        t_cbor, data = timed(cbor2.dumps, plain)
        snap_plain.append(t_plain)
        snap_cbor.append(t_cbor)
        sizes.append(len(data))
        t_loads, decoded = timed(cbor2.loads, data)
        t_restore, copy = timed(restore_plain, decoded)
        loads.append(t_loads)
        restores.append(t_restore)
        t_digest, digest = timed(state_digest, sm)
        digests.append(t_digest)
        assert state_digest(copy) == digest, "restore(snapshot(s)) must equal s"

    med = statistics.median
    print(f"state machine benchmark: {n} objects, median of {repeats} runs")
    print(f"apply create-workload        {med(create_rates):12,.0f} commands/s")
    print(f"apply mixed (50% sessions)   {med(mixed_rates):12,.0f} commands/s")
    print(
        f"snapshot {n} workloads      {med(snap_plain) + med(snap_cbor):8.3f} s"
        f"  (plain {med(snap_plain):.3f} s + cbor2 {med(snap_cbor):.3f} s)"
    )
    print(
        f"snapshot size                {med(sizes) / 1e6:10.2f} MB  ({med(sizes) / n:.0f} B/object)"
    )
    print(
        f"restore                      {med(loads) + med(restores):8.3f} s"
        f"  (cbor2 {med(loads):.3f} s + restore {med(restores):.3f} s)"
    )
    print(f"state digest                 {med(digests):8.3f} s")


if __name__ == "__main__":
    main()
