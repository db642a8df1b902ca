"""``RaftNode.persist_report_may_wait``: a durable report it says may wait changes nothing the
core does until its next input (issue 14, round 16: a follower's driver then takes the report
at its next step instead of waking for it, univrs/runtime/step.py ``_on_persisted``).

Checked at every durable report of the harness's randomized fault runs (elections, partitions,
crashes, snapshots, a joining member): when the answer is yes, giving the report changes
neither whether the core has a Ready nor anything of its status but ``persisted``.
"""

from __future__ import annotations

from typing import Any

import attrs
import harness
import pytest
from test_raft_random import run

from univrs.raft.interpreter import Persisted, report_persisted


def test_a_report_that_may_wait_changes_nothing_until_the_next_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = {"may wait": 0, "urgent": 0}
    report = report_persisted

    def checked(node: Any, p: Persisted) -> None:
        may_wait = node.persist_report_may_wait(p.index, p.hard_state)
        had_ready, before = node.has_ready(), node.status()
        report(node, p)
        if not may_wait:
            counts["urgent"] += 1
            return
        counts["may wait"] += 1
        assert node.has_ready() == had_ready, (p, before)
        assert attrs.evolve(node.status(), persisted=before.persisted) == before, p

    monkeypatch.setattr(harness, "report_persisted", checked)
    for seed in range(8):
        run(seed, steps=800)
    assert counts["may wait"] > 50 and counts["urgent"] > 50, counts
