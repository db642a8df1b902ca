"""The state-machine set-up the apply benchmarks share (scripts/bench_state_apply.py,
bench_follower_apply.py, bench_session_window.py) and their tests rebuild to check a run's
digest: client sessions opened one per entry, and keyed writes spread round-robin over them,
each session numbering its own from 1 (exactly-once: none of them is a retry)."""

from __future__ import annotations

from collections.abc import Callable

from univrs.sm import ClusterStateMachine, Envelope, OpenSession, ScaleWorkload
from univrs.sm.responses import Created


def open_sessions(
    sm: ClusterStateMachine, count: int, *, index: int, time_ms: int | None = None
) -> tuple[list[str], int]:
    """Open ``count`` sessions on ``sm``, one entry each after ``index``; returns their client
    ids and the last index used."""
    clients = []
    for _ in range(count):
        index += 1
        opened = sm.apply(OpenSession(), index=index, term=1, time_ms=time_ms)
        if not isinstance(opened, Created):
            raise AssertionError(f"a session did not open: {opened!r}")
        clients.append(opened.id)
    return clients, index


def keyed_scales(
    clients: list[str],
    count: int,
    *,
    workloads: int,
    prefix: str = "bench-",
    replicas: Callable[[int], int] = lambda k: k % 10,
) -> list[Envelope]:
    """``count`` keyed scale writes: the k-th scales workload ``prefix + (k mod workloads)`` to
    ``replicas(k)`` under session ``clients[k mod len(clients)]``, with that session's next
    sequence number."""
    seqs = dict.fromkeys(clients, 0)
    writes = []
    for k in range(count):
        client = clients[k % len(clients)]
        seqs[client] += 1
        cmd = ScaleWorkload(id=f"{prefix}{k % workloads}", replicas=replicas(k))
        writes.append(Envelope(command=cmd, client_id=client, seq=seqs[client]))
    return writes
