"""The fault schedule of one simulated run, drawn entirely from the run's seed.

A schedule is a network/disk profile (how lossy, slow and jittery this run is) plus a list of
timed faults. Faults name a *kind* of target ("the leader" or "any node") rather than a node:
the simulator resolves it when the fault fires, so "isolate the leader" hits whoever leads at
that moment. Every fault heals after its duration, and all of them heal when the fault phase
ends (the quiet period in which liveness is checked).

The mix is meant to be realistic rather than tuned per mutant: crashes that lose unsynced
writes, process pauses, slow disks, slow clocks (starved VMs), symmetric and one-way partitions,
lossy periods and leadership transfers, at a rate that varies from calm to stormy per seed.
"""

from __future__ import annotations

import enum
import random

import attrs


class FaultKind(enum.Enum):
    """What a fault does while it is active."""

    CRASH = "crash"  # the node dies, losing what was not durable, and restarts after duration
    PAUSE = "pause"  # the process stops (GC, SIGSTOP); input queues up until it resumes
    PARTITION = "partition"  # random symmetric split of the cluster into two sides
    ISOLATE = "isolate"  # cut one node off from everyone, both ways
    ONE_WAY = "one-way"  # one node can send but not receive, or receive but not send
    LOSSY = "lossy"  # heavy message loss on every link
    SLOW_DISK = "slow-disk"  # one node's writes take `factor` times longer
    SLOW_CLOCK = "slow-clock"  # one node ticks `factor` times slower
    TRANSFER = "transfer"  # the leader hands leadership to another node


@attrs.frozen(kw_only=True)
class Fault:
    """One timed fault. ``at`` and ``duration`` are in ticks."""

    at: int
    kind: FaultKind
    leader: bool  # target the current leader (else a random node)
    duration: int
    factor: int = 1  # SLOW_DISK / SLOW_CLOCK slowdown
    rate: float = 0.0  # LOSSY loss probability


@attrs.frozen(kw_only=True)
class Profile:
    """The steady behaviour of network and disks during the fault phase (times in units)."""

    drop: float
    dup: float
    lat_min: int
    lat_max: int
    spike: float
    disk_min: int
    disk_max: int


@attrs.frozen(kw_only=True)
class Schedule:
    """Everything the seed decides up front about faults."""

    profile: Profile
    faults: tuple[Fault, ...]


_KINDS: tuple[tuple[FaultKind, int], ...] = (
    (FaultKind.CRASH, 6),
    (FaultKind.PAUSE, 2),
    (FaultKind.PARTITION, 3),
    (FaultKind.ISOLATE, 3),
    (FaultKind.ONE_WAY, 2),
    (FaultKind.LOSSY, 1),
    (FaultKind.SLOW_DISK, 3),
    (FaultKind.SLOW_CLOCK, 2),
    (FaultKind.TRANSFER, 1),
)


def _duration(rng: random.Random, lo: int, hi: int) -> int:
    # Log-uniform: mostly short faults, some long ones.
    return int(lo * (hi / lo) ** rng.random())


def draw_schedule(rng: random.Random, ticks: int) -> Schedule:
    """Draw the profile and faults for a fault phase of ``ticks`` ticks."""
    profile = Profile(
        drop=rng.choice((0.0, 0.0, 0.01, 0.03, 0.1)),
        dup=rng.choice((0.0, 0.01, 0.05)),
        lat_min=1,
        lat_max=rng.choice((3, 8, 15, 30)),
        spike=rng.choice((0.0, 0.01, 0.05)),
        disk_min=1,
        disk_max=rng.choice((3, 8, 20, 50)),
    )
    mean_gap = rng.choice((25, 50, 100))
    kinds = [k for k, _ in _KINDS]
    weights = [w for _, w in _KINDS]
    faults: list[Fault] = []
    t = 20 + int(rng.expovariate(1 / mean_gap))
    while t < ticks:
        kind = rng.choices(kinds, weights)[0]
        leader = rng.random() < 0.5
        if kind is FaultKind.CRASH:
            duration = _duration(rng, 3, 200)
        elif kind is FaultKind.PAUSE:
            duration = _duration(rng, 3, 80)
        elif kind is FaultKind.TRANSFER:
            duration = 0
        else:
            duration = _duration(rng, 10, 300)
        faults.append(
            Fault(
                at=t,
                kind=kind,
                leader=leader,
                duration=duration,
                factor=rng.choice((2, 3, 5, 10, 30)),
                rate=rng.choice((0.2, 0.4, 0.7)),
            )
        )
        t += 1 + int(rng.expovariate(1 / mean_gap))
    return Schedule(profile=profile, faults=tuple(faults))
