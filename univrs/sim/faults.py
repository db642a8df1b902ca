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

TICK = 10  # simulated time units per Raft tick (the simulator's clock resolution)


class FaultKind(enum.Enum):
    """What a fault does while it is active."""

    CRASH = "crash"  # the node dies, losing what was not durable, and restarts after duration
    POWER_LOSS = "power-loss"  # several nodes (a rack, the room) die at once; each restarts
    PAUSE = "pause"  # the process stops (GC, SIGSTOP); input queues up until it resumes
    PARTITION = "partition"  # random symmetric split of the cluster into two sides
    ISOLATE = "isolate"  # cut one node off from everyone, both ways
    ONE_WAY = "one-way"  # one node can send but not receive, or receive but not send
    DEAF = "deaf"  # the leader stops hearing anyone (inbound cut) but still sends: it keeps
    # taking writes it cannot commit while the others elect a leader that commits and
    # compacts past them (issue 10, bug 5)
    FLAP = "flap"  # one node's links go down and up every few ticks (a flapping port)
    FLAKY = "flaky"  # every node's port flaps independently for a while (bad switch firmware)
    CHURN = "churn"  # random partitions re-drawn every few ticks (a switch rebooting, rerouting)
    LOSSY = "lossy"  # heavy message loss on every link
    SICK = "sick"  # a starved VM: its timers run `factor` times slow and it is cut off
    GRAY = "gray"  # most of what one node sends is lost (a failing NIC): it half works
    SLOW_DISK = "slow-disk"  # one node's writes take `factor` times longer
    SLOW_CLOCK = "slow-clock"  # one node ticks `factor` times slower
    TRANSFER = "transfer"  # the leader hands leadership to another node
    RESTART = "restart"  # the process is killed and restarted at once (a supervisor, a deploy)
    CRASH_LOOP = "crash-loop"  # the process dies a moment after each time it becomes leader
    WIPE = "wipe"  # a member's disk is lost: it restarts empty, as a new incarnation


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
    # Per node: how many times slower than disk_min..disk_max its disk is. Clusters are rarely
    # uniform (an HDD among SSDs, a noisy neighbour); a leader on a slow disk acknowledges its
    # own entries last, which is exactly when counting them correctly matters.
    disk_speed: tuple[int, ...]
    # Tail latency (fsync stalls): the chance that one write takes up to disk_tail units more.
    disk_stall: float
    disk_tail: int
    # Snapshots and compaction: a node snapshots its state machine every ``snap_every`` applied
    # entries (0: never) and keeps ``snap_keep`` entries before it; InstallSnapshot streams in
    # chunks of ``snap_chunk`` bytes, ``snap_window`` unacknowledged at once.
    snap_every: int = 0
    snap_keep: int = 0
    snap_chunk: int = 1 << 20
    snap_window: int = 4
    # Core options this seed runs with (production runs with both on; off exercises the
    # plainer protocol of the paper, with disruptive elections).
    pre_vote: bool = True
    check_quorum: bool = True
    election_max: int = 20  # election timeouts drawn from [10, election_max] ticks
    # ``RaftConfig.unlisted_leaders``: on as with TLS (node ids are authenticated), off as a
    # plaintext node runs (docs/security.md). Drawn per seed by the simulation with its own RNG
    # (cluster.py), so the rest of a seed is the same in both modes.
    unlisted_leaders: bool = True
    # Membership changes (membership.py): ``spares`` extra nodes start with empty disks, and
    # the operator starts a batch of changes every ``member_every`` ticks on average (0: never),
    # keeping at least ``min_voters`` voters.
    spares: int = 0
    member_every: int = 0
    min_voters: int = 3
    # The simulated runtime reports applied() up to ``apply_lag`` units after applying (0: at
    # once), so its snapshots can be ahead of what the core knows is applied.
    apply_lag: int = 0
    # Clients (clients.py): the chance per tick that an idle client starts an operation, and
    # the deadline of a write at the API (api.py; the real default, 10 s, is about 25
    # election timeouts).
    load: float = 0.15
    api_deadline: int = 100 * TICK
    read_anywhere: float = 0.25  # share of reads sent to any member, not the believed leader
    clients: int = 3  # concurrent clients, each running one operation at a time


@attrs.frozen(kw_only=True)
class Schedule:
    """Everything the seed decides up front about faults."""

    family: str
    profile: Profile
    faults: tuple[Fault, ...]


_K = FaultKind


@attrs.frozen(kw_only=True)
class Family:
    """A kind of bad day: which faults dominate and how often they come in storms.

    Real incidents are rarely a uniform mix; each seed draws one family, so faults of one kind
    compound (a flapping network, a crash-looping rack) as they do in production.
    """

    name: str
    weight: int
    kinds: tuple[tuple[FaultKind, int], ...]
    storm_chance: tuple[float, ...]  # per fault: the chance a storm starts there


FAMILIES: tuple[Family, ...] = (
    Family(
        name="mixed",
        weight=3,
        kinds=(
            (_K.CRASH, 6),
            (_K.POWER_LOSS, 2),
            (_K.PAUSE, 2),
            (_K.PARTITION, 3),
            (_K.ISOLATE, 3),
            (_K.ONE_WAY, 2),
            (_K.DEAF, 2),
            (_K.FLAP, 2),
            (_K.FLAKY, 1),
            (_K.CHURN, 1),
            (_K.LOSSY, 1),
            (_K.SLOW_DISK, 3),
            (_K.SLOW_CLOCK, 2),
            (_K.SICK, 2),
            (_K.GRAY, 1),
            (_K.TRANSFER, 1),
            (_K.RESTART, 2),
            (_K.CRASH_LOOP, 1),
            (_K.WIPE, 1),
        ),
        storm_chance=(0.0, 0.1, 0.2, 0.3),
    ),
    Family(
        name="network",
        weight=3,
        kinds=(
            (_K.FLAP, 4),
            (_K.FLAKY, 1),
            (_K.ISOLATE, 3),
            (_K.PARTITION, 2),
            (_K.ONE_WAY, 1),
            (_K.DEAF, 2),
            (_K.CHURN, 1),
            (_K.LOSSY, 1),
            (_K.GRAY, 1),
            (_K.CRASH, 1),
        ),
        storm_chance=(0.2, 0.5, 1.0),
    ),
    Family(
        name="hardware",
        weight=2,
        kinds=(
            (_K.CRASH, 4),
            (_K.POWER_LOSS, 2),
            (_K.SLOW_DISK, 3),
            (_K.PAUSE, 2),
            (_K.SICK, 1),
            (_K.ISOLATE, 1),
            (_K.RESTART, 2),
            (_K.CRASH_LOOP, 2),
            (_K.WIPE, 2),
        ),
        storm_chance=(0.0, 0.2, 0.5),
    ),
    Family(
        name="overload",
        weight=1,
        kinds=(
            (_K.PAUSE, 3),
            (_K.SLOW_CLOCK, 3),
            (_K.SICK, 3),
            (_K.SLOW_DISK, 2),
            (_K.LOSSY, 2),
            (_K.ISOLATE, 1),
            (_K.TRANSFER, 1),
        ),
        storm_chance=(0.0, 0.2, 0.5),
    ),
)


def _duration(rng: random.Random, lo: int, hi: int) -> int:
    # Log-uniform: mostly short faults, some long ones.
    return int(lo * (hi / lo) ** rng.random())


def draw_schedule(rng: random.Random, ticks: int, n_nodes: int) -> Schedule:
    """Draw the profile and faults for ``n_nodes`` nodes and a fault phase of ``ticks`` ticks.

    ``n_nodes`` is the initial number of voters; spare nodes (drawn last, so a seed's network,
    disks and faults do not depend on them) come on top.
    """
    profile = Profile(
        drop=rng.choice((0.0, 0.0, 0.01, 0.03, 0.1)),
        dup=rng.choice((0.0, 0.01, 0.05)),
        lat_min=1,
        lat_max=rng.choice((3, 8, 15, 30)),
        spike=rng.choice((0.0, 0.01, 0.05)),
        disk_min=1,
        disk_max=rng.choice((5, 10, 20, 40)),
        disk_speed=tuple(rng.choice((1, 1, 2, 3, 4)) for _ in range(n_nodes)),
        disk_stall=rng.choice((0.02, 0.05, 0.1)),
        disk_tail=rng.choice((100, 300)),
        snap_every=rng.choice((0, 5, 10, 25, 60)),
        snap_keep=rng.choice((0, 0, 3, 20)),
        snap_chunk=rng.choice((8, 32, 128, 1 << 20)),
        snap_window=rng.choice((1, 2, 4)),
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        election_max=rng.choice((12, 20, 20, 30)),
    )
    family = rng.choices(FAMILIES, [f.weight for f in FAMILIES])[0]
    mean_gap = rng.choice((25, 50, 100))
    # Storms: bursts of short faults a few ticks apart (a flapping switch, a crash-looping
    # rack, cascading overload). They make elections race and leave logs diverging in their
    # uncommitted suffixes, which is where the subtle Raft bugs live (a leader cut off right
    # after its election leaves its entries on a minority: the setting of paper Figure 8).
    storm_chance = rng.choice(family.storm_chance)
    storm_gap = rng.choice((3, 5, 8))
    kinds = [k for k, _ in family.kinds]
    weights = [w for _, w in family.kinds]
    faults: list[Fault] = []
    t = 20 + int(rng.expovariate(1 / mean_gap))
    storm_end = -1
    while t < ticks:
        if t >= storm_end and rng.random() < storm_chance:
            storm_end = t + rng.randint(30, 150)
        storm = t < storm_end
        kind = rng.choices(kinds, weights)[0]
        # A crash loop only acts on a node that gets elected, so it always targets the leader
        # (a random node is mostly one that never leads: a learner of a lone voter, a follower).
        # The coin is still drawn, so the rest of the schedule does not move.
        leader = kind is FaultKind.DEAF or rng.random() < 0.5 or kind is FaultKind.CRASH_LOOP
        if kind in (FaultKind.TRANSFER, FaultKind.WIPE):
            duration = 0
        elif kind is FaultKind.RESTART:
            duration = rng.randint(0, 1)
        elif kind is FaultKind.CRASH_LOOP:
            duration = _duration(rng, 30, 200)
        elif kind is FaultKind.DEAF:
            duration = _duration(rng, 30, 150)
        elif kind in (FaultKind.CRASH, FaultKind.POWER_LOSS):
            duration = _duration(rng, 3, 30 if storm else 200)
        elif kind is FaultKind.PAUSE:
            duration = _duration(rng, 3, 20 if storm else 80)
        else:
            duration = _duration(rng, 5 if storm else 10, 40 if storm else 300)
        faults.append(
            Fault(
                at=t,
                kind=kind,
                leader=leader,
                duration=duration,
                factor=rng.choice((2, 3, 5, 10)),
                rate=rng.choice((0.2, 0.4, 0.7)),
            )
        )
        t += 1 + int(rng.expovariate(1 / (storm_gap if storm else mean_gap)))
    # Membership in about three seeds of four, with one or two spare nodes; some seeds go
    # down to a single voter (with learners), some 3-node seeds to 2 voters. Some seeds
    # report applied() late (at most 6 ticks).
    every = rng.choice((0, 30, 60, 120, 250))
    spares = rng.choice((1, 2)) if every else 0
    profile = attrs.evolve(
        profile,
        disk_speed=profile.disk_speed + tuple(rng.choice((1, 1, 2, 3)) for _ in range(spares)),
        spares=spares,
        member_every=every,
        min_voters=rng.choices((1, 2, 3), (1, 1 if n_nodes == 3 else 0, 4))[0],
        apply_lag=rng.choice((0, 0, 0, 20, 60)),
        load=rng.choice((0.15, 0.3, 0.6)),
        api_deadline=rng.choice((100, 200, 300)) * TICK,
        read_anywhere=rng.choice((0.25, 0.25, 0.6)),
        clients=rng.choice((3, 3, 5)),
    )
    return Schedule(family=family.name, profile=profile, faults=tuple(faults))
