"""In-process nodes on loopback for runtime tests: ``run_node`` tasks, each in its own cancel
scope, so a test can stop one abruptly (what it persisted stays) and start it again (the
client-surface tests' ``Cluster``, with joiners and spares)."""

from __future__ import annotations

import pathlib

import attrs

from tests.api.helpers import Cluster
from univrs.config import BootstrapNode, NodeConfig
from univrs.raft.ready import Role
from univrs.server.node import Node
from univrs.tools.ports import free_ports


@attrs.define(eq=False)
class Nodes(Cluster):
    """In-process nodes, each in its own cancel scope (kill = an abrupt stop)."""

    def leader(self) -> Node | None:
        """A node that says it leads (the others need not know it yet)."""
        for node in self.nodes.values():
            if node.status().role is Role.LEADER:
                return node
        return None


def configs(folder: pathlib.Path, members: int, spares: int) -> dict[str, NodeConfig]:
    ids = [f"n{i + 1}" for i in range(members + spares)]
    ports = free_ports(2 * len(ids))
    raft = {nid: f"127.0.0.1:{ports[2 * i]}" for i, nid in enumerate(ids)}
    api = {nid: f"127.0.0.1:{ports[2 * i + 1]}" for i, nid in enumerate(ids)}
    boot = tuple(BootstrapNode(id=n, addr=raft[n], api=api[n]) for n in ids[:members])
    return {
        nid: NodeConfig(
            node_id=nid,
            cluster_id="c-join" if i < members else None,
            data_dir=folder / nid,
            raft_addr=raft[nid],
            api_addr=api[nid],
            bootstrap=boot if i < members else (),
            max_payload_size=128 * 1024,  # the smallest allowed: append batches of 64 KB
            snapshot_max_chunk_size=64 * 1024,
        )
        for i, nid in enumerate(ids)
    }


async def settled_leader(nodes: Nodes) -> Node:
    """The leader, once it has committed its whole log (its no-op too: it may change the
    configuration then) and bound every member to its incarnation.

    A new leader records the members' incarnations with a configuration change of its own
    (``record_incarnations``) soon after its no-op commits; until that change has committed,
    a test's own change is refused (``MembershipBusy``). So "committed everything" alone is
    not settled: on a loaded machine a test could slip its change in between."""
    from tests.api.helpers import wait_until

    def probe() -> Node | None:
        leader = nodes.leader()
        if leader is None:
            return None
        s = leader.status()
        m = s.membership
        bound = all(m.incarnation_of(n) is not None for n in m.members)
        return leader if s.commit == s.last_index and s.commit > 1 and bound else None

    return await wait_until(probe, "a leader that committed its log")
