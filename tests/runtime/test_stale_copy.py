"""An older copy of a member's data dir put back, with real nodes on loopback (docs/security.md,
"A data dir copied back from an older copy").

n3's data dir is copied while it is stopped (last night's ``cp -a``); n3 starts again and its
peers record that start; then the copy is put back in its place and started. The copy keeps
n3's incarnation, so the incarnation check takes it; its start counter names the same start
as the one the peers recorded, with another boot id: they refuse it, and it stops taking part
(``transport.fenced``) while the cluster goes on without it. On the code before start counters
the copy rejoined as n3, free to vote again in a term it had voted in."""

from __future__ import annotations

import pathlib
import shutil

import trio

from tests.api.helpers import wait_until
from tests.runtime.nodes import Nodes, configs, settled_leader
from univrs.server.node import describe
from univrs.storage import LogStore
from univrs.storage.starts import stored_start


def start_on_disk(data_dir: pathlib.Path, node_id: str) -> tuple[str, int, str]:
    store = LogStore.open(data_dir, node_id=node_id, create=False)
    try:
        start = stored_start(store)
        assert start is not None
        return store.incarnation, start.counter, start.boot
    finally:
        store.close()


async def test_an_older_copy_of_a_data_dir_is_refused_and_stops_taking_part(
    tmp_path: pathlib.Path,
) -> None:
    cfgs = configs(tmp_path / "nodes", members=3, spares=0)
    async with trio.open_nursery() as nursery:
        nodes = Nodes(nursery=nursery, configs=cfgs)
        for nid in ("n1", "n2", "n3"):
            await nodes.start(nid)
        leader = await settled_leader(nodes)
        victim = next(n for n in ("n3", "n2") if n != leader.node_id)
        others = [n for n in ("n1", "n2", "n3") if n != victim]
        data_dir = cfgs[victim].data_dir
        copy = tmp_path / "copy"
        await nodes.kill(victim)
        shutil.copytree(data_dir, copy)  # last night's copy, taken during start 1
        incarnation, counter, _ = start_on_disk(data_dir, victim)
        assert counter == 1

        await nodes.start(victim)  # start 2 of the original: its peers record it

        def recorded() -> tuple[int, str] | None:
            seen = {
                nodes.nodes[n].transport.start_book.recorded(victim, incarnation) for n in others
            }
            one = seen.pop() if len(seen) == 1 else None
            return one if one is not None and one[0] == 2 else None

        later = await wait_until(recorded, f"the peers to record {victim}'s second start")
        await nodes.kill(victim)
        # The start every peer recorded is the one on the original's disk (durable before
        # its first hello named it).
        assert (incarnation, *later) == start_on_disk(data_dir, victim)

        shutil.rmtree(data_dir)
        shutil.copytree(copy, data_dir)  # the copy put back in its place
        node = await nodes.start(victim)
        await wait_until(lambda: node.transport.fenced, f"the copy of {victim} to be fenced")
        assert node.transport.statistics().fenced is not None
        assert describe(node)["transport"]["fenced"] == node.transport.fenced  # /v1/node/status
        # The cluster goes on without it: a write commits on the two others.
        await settled_leader(nodes)
        for n in others:
            assert nodes.nodes[n].transport.start_book.recorded(victim, incarnation) == later
            assert nodes.nodes[n].transport.statistics().rejected_connections >= 1
        # A peer restarted keeps the record (it was synced before the copy's first message).
        await nodes.kill(others[0])
        peer = await nodes.start(others[0])
        assert peer.transport.start_book.recorded(victim, incarnation) == later
        await nodes.kill(victim)
        _, counter, boot = start_on_disk(data_dir, victim)
        assert counter == 2 and boot != later[1]  # the same counter, its own boot id
        nursery.cancel_scope.cancel()
