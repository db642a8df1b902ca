"""A cluster led by a core with one rule changed (``led_by_a_class``): the set-up the core
tests of a single leader rule share (tests/raft/test_raft_commit_notice.py,
test_raft_heartbeat_skip.py)."""

from __future__ import annotations

from collections.abc import Sequence

from harness import Cluster

from univrs.raft import RaftConfig, RaftNode


def led_by_a_class(
    nodes: Sequence[str], config: RaftConfig, leader_cls: type[RaftNode] = RaftNode
) -> Cluster:
    """A cluster of ``nodes`` whose first node, restarted as ``leader_cls`` (a core with one
    rule changed), is elected and has its no-op's commit told to the followers."""
    c = Cluster.bootstrap(nodes, config=config)
    first = nodes[0]
    c.classes[first] = leader_cls
    c.crash(first)
    c.restart(first)
    c.elect(first)
    c.tick(first)  # the no-op's commit reaches the followers
    c.stabilize()
    return c
