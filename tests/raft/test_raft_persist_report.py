"""``RaftNode.persist_report_may_wait``: a durable report it says may wait changes nothing the
core does until its next input (issue 14, round 16: the driver then takes the report at its
next step, before that step's input, instead of waking for it, univrs/runtime/step.py
``_on_persisted``). On a follower and on a leader (whose report may wait when counting itself
commits nothing).

Checked at every durable report of the harness's randomized fault runs (elections, partitions,
crashes, snapshots, a joining member): when the answer is yes, giving the report changes
neither whether the core has a Ready nor anything of its status but ``persisted``.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import harness
import pytest
from harness import Cluster
from test_raft_random import run

from univrs.raft import Role
from univrs.raft.interpreter import Persisted, report_persisted


def slow_disks(seed: int, steps: int = 400) -> None:
    """One client's writes through a 3-node cluster whose disks are slow at random (held,
    then flushed): a leader's own report then often comes after an ack, and commits."""
    rng = random.Random(seed)
    c = Cluster.bootstrap(["n1", "n2", "n3"])
    c.elect("n1")
    for step in range(steps):
        r = rng.random()
        node = rng.choice(["n1", "n2", "n3"])
        if r < 0.1:  # the leader's disk and a follower's slow: the other's ack comes first
            c.hold_disk("n1")
            c.hold_disk(rng.choice(["n2", "n3"]))
            c.propose("n1", b"w%d" % step)
            c.stabilize()
            c.release_disk("n1")
        elif r < 0.15:
            c.hold_disk(node)
        elif r < 0.35:
            c.release_disk(node)
        elif r < 0.5:
            c.propose("n1", b"w%d" % step)
        elif r < 0.95:
            c.deliver(limit=rng.randint(1, 3))
            c.process()
        else:
            c.tick_all()
    for node in ["n1", "n2", "n3"]:
        c.release_disk(node)
    c.stabilize()


def test_a_report_that_may_wait_changes_nothing_until_the_next_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = {"may wait": 0, "urgent": 0, "a leader's may wait": 0, "a leader's commits": 0}
    report = report_persisted

    def checked(node: Any, p: Persisted) -> None:
        may_wait = node.persist_report_may_wait(p.index, p.hard_state)
        had_ready, before = node.has_ready(), node.status()
        report(node, p)
        if not may_wait:
            counts["urgent"] += 1
            counts["a leader's commits"] += node.status().commit > before.commit
            return
        counts["may wait"] += 1
        counts["a leader's may wait"] += before.role is Role.LEADER
        assert node.has_ready() == had_ready, (p, before)
        assert attrs.evolve(node.status(), persisted=before.persisted) == before, p

    monkeypatch.setattr(harness, "report_persisted", checked)
    for seed in range(8):
        run(seed, steps=800)
    for seed in range(8):
        slow_disks(seed)
    assert counts["may wait"] > 50 and counts["urgent"] > 50, counts
    assert counts["a leader's may wait"] > 20, counts
    assert counts["a leader's commits"] > 20, counts
