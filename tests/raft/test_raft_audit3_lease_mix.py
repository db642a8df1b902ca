"""s14-audit L1, at the core: a lease rests on *every* voter's vote hold, and ``read_lease``
and the election timeout are per node. A follower that runs leases off (or a shorter
election timeout) grants a vote sooner than the leader's lease counts on, and a new leader
commits a write the old one's lease read does not see. The runtime therefore checks the
members' announced holds before it lets the lease confirm a read (univrs/runtime/
capabilities.py ``lease_gate``; tests/runtime/test_audit3_lease_gate.py)."""

from __future__ import annotations

import pytest
from harness import Cluster

from univrs.raft import RaftConfig, RequestVote, Role
from univrs.runtime.capabilities import lease_hold_ms

LEASE = RaftConfig(election_ticks_min=10, election_ticks_max=20, read_lease=True)
OFF = RaftConfig(election_ticks_min=10, election_ticks_max=20)
SHORT = RaftConfig(election_ticks_min=4, election_ticks_max=8, read_lease=True)


@pytest.mark.parametrize(
    ("n2", "wait", "stale"),
    [(LEASE, 10, False), (OFF, 0, True), (SHORT, 4, True)],
    ids=["same", "off", "short"],
)
def test_a_member_with_a_shorter_vote_hold_lets_a_lease_read_go_stale(
    n2: RaftConfig, wait: int, stale: bool
) -> None:
    c = Cluster.bootstrap(["n1", "n2", "n3"], config=LEASE)
    c.configs["n2"] = n2
    c.crash("n2")
    c.restart("n2")  # now with n2's own settings
    c.elect("n1")
    c.tick("n1")  # a heartbeat round: n1's lease runs from it
    c.stabilize()
    assert c.status("n1").lease
    c.crash("n2")
    c.restart("n2")  # a quick restart of n2 (a deploy)...
    c.isolate("n1")  # ...and n1 cut off, its lease still running
    for _ in range(wait):  # every clock runs while n2 waits out its own vote hold
        for nid in ("n1", "n2", "n3"):
            c.tick(nid)
        c.network = []
    c.nodes["n3"].campaign()
    c.process("n3")
    c.deliver(dst="n2", type=RequestVote)
    c.stabilize()
    assert c.role("n3") is Role.LEADER
    c.propose("n3", b"written")
    c.stabilize()
    written = c.status("n3").commit
    c.nodes["n1"].read_index(9, lease=True)
    c.process("n1")
    served = [r.index for r in c.reads["n1"]]
    # Only a lease can serve it (n1 is cut off): served at all means served stale.
    assert (served != [] and served[0] < written) is stale, (served, written)


def test_the_announced_hold_orders_these_settings_as_the_core_behaves() -> None:
    tick = 50
    need = lease_hold_ms(LEASE, tick)
    assert need == 9 * tick
    assert lease_hold_ms(OFF, tick) == 0 < need
    assert lease_hold_ms(SHORT, tick) < need
    assert lease_hold_ms(LEASE, 2 * tick) > need  # the same ticks, longer: holds longer
