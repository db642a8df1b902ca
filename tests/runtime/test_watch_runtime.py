"""The watch history fed by real runtimes (in-memory cluster, autojump clock): every replica
records the same events at the same revisions, and a follower that installs a snapshot from
the leader starts its history over at the snapshot's index (what came before is compacted)."""

from __future__ import annotations

import pytest
import trio

from tests.runtime.memcluster import create, start_cluster, wait_until
from univrs.errors import Compacted
from univrs.sm.events import ObjectKind

IDS = ["a", "b", "c"]
ALL = frozenset(ObjectKind)


async def test_replicas_record_the_same_events_and_a_snapshot_install_compacts(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    cluster, leader = await start_cluster(nursery, IDS)
    for i in range(3):
        await leader.propose(create(f"w{i}"))
    last = leader.applied_index
    runtimes = list(cluster.runtimes.values())
    await wait_until(lambda: all(r.applied_index >= last for r in runtimes), "all applied")
    views = [r.watch_hub.read(ALL, 1, limit=100) for r in runtimes]
    assert views[0] == views[1] == views[2]
    assert [e.id for e in views[0][0]] == ["w0", "w1", "w2"]

    lagging = next(r for r in runtimes if r is not leader)
    cluster.cut.add(lagging.node_id)
    for i in range(3, 6):
        await leader.propose(create(f"w{i}"))
    meta = await leader.take_snapshot()
    assert meta is not None and leader.status().first_index > meta.index
    await leader.propose(create("w6"))
    cluster.cut.clear()
    await wait_until(lambda: lagging.applied_index >= leader.applied_index, "the install")
    hub = lagging.watch_hub
    assert hub.compacted_revision == meta.index
    with pytest.raises(Compacted):
        hub.read(ALL, 1, limit=100)
    after = meta.index + 1
    assert hub.read(ALL, after, limit=100) == leader.watch_hub.read(ALL, after, limit=100)
    assert [e.id for e in hub.read(ALL, after, limit=100)[0]] == ["w6"]
