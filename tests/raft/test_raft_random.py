"""Randomized fault runs through the harness: its invariants hold at every step, and the
cluster recovers once the faults stop. (The full simulator lives in univrs/sim; this is the
core's own quick smoke test of the same idea.)"""

from __future__ import annotations

import contextlib
import random

import pytest
from harness import Cluster

from univrs.errors import NotLeader, ProposalDropped
from univrs.raft import InitialState, Membership, RaftConfig, Role, bootstrap_state

NODES = ["n1", "n2", "n3", "n4", "n5"]
JOINER = "n9"


def run(seed: int, steps: int = 1500) -> Cluster:
    rng = random.Random(seed)
    cfg = RaftConfig(
        election_ticks_min=8,
        election_ticks_max=16,
        max_entries_per_msg=rng.choice([1, 3, 64]),
        max_inflight=rng.choice([1, 4, 64]),
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        snapshot_chunk_bytes=rng.choice([16, 200, 1 << 20]),
        snapshot_window=rng.choice([1, 2, 8]),
    )
    voters = NODES[: rng.choice([3, 5])]
    m0 = Membership(voters=frozenset(voters))
    # "n9" starts empty, waiting to be joined (as a learner, maybe promoted, maybe removed).
    initial = {n: bootstrap_state(m0) for n in voters} | {JOINER: InitialState()}
    c = Cluster(initial, config=cfg, seed=seed)
    live = sorted(c.nodes)
    ctx = 0
    for step in range(steps):
        r = rng.random()
        if r < 0.35 and c.network:
            m = c.network.pop(rng.randrange(len(c.network)))  # reorder
            if rng.random() < 0.05:
                c.network.append(m)  # duplicate
            if rng.random() < 0.9:
                c._deliver(m)
        elif r < 0.6:
            c.tick(rng.choice(live))
        elif r < 0.7:
            n = c.leader() if rng.random() < 0.8 else rng.choice(live)
            if n is not None and n not in c.crashed:
                with contextlib.suppress(NotLeader, ProposalDropped):
                    c.propose(n, f"{seed}-{step}".encode())
        elif r < 0.75:
            ctx += 1
            n = rng.choice(live)
            if n not in c.crashed:
                c.read_index(n, ctx)
        elif r < 0.8:
            n = rng.choice(live)
            if n in c.held:
                c.release_disk(n)
            elif n not in c.crashed:
                c.hold_disk(n)
        elif r < 0.83:
            n = rng.choice(live)
            if n in c.crashed:
                c.restart(n)
            elif len(c.crashed) < (len(live) - 1) // 2:
                c.crash(n)
        elif r < 0.85:
            if c.blocked:
                c.heal()
            else:
                group = rng.sample(live, rng.randint(1, len(live) // 2))
                c.partition(group)
        elif r < 0.87:
            n = rng.choice(live)
            if n not in c.crashed:
                c.persist(n)
        elif r < 0.88:
            # One single-server change, as the leader sees it: demote, promote, add as a
            # learner, or remove (removals only with PreVote, which keeps a removed node
            # that missed its removal from disrupting the cluster, dissertation 4.2.3).
            leader = c.leader()
            if leader is not None:
                mem = c.status(leader).membership
                target = rng.choice(live)
                remove = cfg.pre_vote and rng.random() < 0.3
                if target in mem.voters and len(mem.voters) > 2:
                    learners = mem.learners if remove else mem.learners | {target}
                    new = Membership(voters=mem.voters - {target}, learners=learners)
                elif target in mem.learners:
                    if remove:
                        new = Membership(voters=mem.voters, learners=mem.learners - {target})
                    else:
                        new = Membership(
                            voters=mem.voters | {target}, learners=mem.learners - {target}
                        )
                elif target not in mem.members:
                    new = Membership(voters=mem.voters, learners=mem.learners | {target})
                else:
                    continue
                with contextlib.suppress(NotLeader, ProposalDropped):
                    c.nodes[leader].propose_membership(new)
                    c.process(leader)
        elif r < 0.9:
            # Snapshot a node's state machine and compact (keeping a small margin, or none).
            n = rng.choice(live)
            applied = c.applied[n][-1].index if c.applied[n] else 0
            # (Not right after an install whose write is still pending: see snapshot_taken.)
            if n not in c.crashed and 0 < applied <= c.status(n).persisted:
                c.snapshot(n, keep=rng.choice([0, 0, 2, 10]))
    # Heal everything and check that the cluster converges and still commits.
    c.heal()
    for n in live:
        if n in c.crashed:
            c.restart(n)
        c.held.discard(n)
        c.persist(n)
    leader = None

    def members() -> frozenset[str]:
        return c.status(leader).membership.members if leader else frozenset(live)

    for _ in range(400):
        c.tick_all(deliver=True)
        leader = c.leader()
        if leader is not None and len({c.status(n).applied for n in members()}) == 1:
            break
    assert leader is not None, f"seed {seed}: no leader after healing"
    _, idx = c.propose(leader, b"final")
    for _ in range(50):
        c.tick_all(deliver=True)
        if all(c.status(n).applied >= idx for n in members()):
            break
    for n in members():
        assert c.status(n).applied >= idx, f"seed {seed}: {n} stuck at {c.status(n)}"
        assert c.applied[n][-1].data == b"final" or c.status(n).applied > idx
    assert sum(c.role(n) is Role.LEADER for n in live) == 1
    return c


@pytest.mark.parametrize("seed", range(16))
def test_random_faults_keep_invariants_and_recover(seed: int) -> None:
    run(seed)
