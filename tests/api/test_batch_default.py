"""Batch entries on by default in a cluster of real nodes (sockets, hellos, LMDB): the
leader's gate (univrs/runtime/capabilities.py) opens on what the transport recorded from the
hellos, and the replicas agree."""

from __future__ import annotations

import pathlib

from trio_websocket import open_websocket

from tests.api.helpers import WORKLOAD, open_cluster, wait_until
from tests.api.test_frame_batching import _exchange
from univrs import codec
from univrs.client import protocol
from univrs.raft.messages import EntryKind
from univrs.sm import state_digest


async def test_a_real_cluster_packs_batch_entries_by_default(tmp_path: pathlib.Path) -> None:
    """The default configuration, nodes on real sockets: every node's hello announces
    payload version 2 from its incarnation, so the leader's gate opens and a frame of writes
    becomes batch entries on every node's log (the gate reads what the transport recorded:
    a mismatch there would keep every entry at version 1). Fails on the old code (batch
    entries off by default)."""
    async with open_cluster(tmp_path, size=3) as cluster:
        leader = cluster.leader()
        assert leader is not None
        port = leader.raft_port
        assert port is not None
        await wait_until(
            lambda: len(leader.transport.peer_payload_versions()) == 2, "both peers' hellos"
        )
        first = leader.storage.last_index() + 1
        async with open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            for round_ in range(3):  # a frame may go as one batch: three make it certain
                answers = await _exchange(
                    ws,
                    [
                        {"id": i, "op": "workload.create", "args": {"spec": WORKLOAD}}
                        for i in range(16)
                    ],
                )
                assert all("ok" in r for r in answers.values()), (round_, answers)
        last = leader.storage.last_index()
        versions = [
            codec.decode_plain(e.data, max_size=1 << 24)[0]
            for e in leader.storage.entries(first, last + 1)
            if e.kind is EntryKind.NORMAL and e.data
        ]
        assert 2 in versions, versions
        await wait_until(
            lambda: all(n.runtime.applied_index >= last for n in cluster.running()), "catch-up"
        )
        assert len({state_digest(n.runtime.sm) for n in cluster.running()}) == 1
