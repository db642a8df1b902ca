"""A follower forwards a client frame's writes to the leader as one hop (univrs/api/forward.py
``Forwarder.call_many``, ``RaftStateStore.submit_many``): one forward per frame, no task per
write, while each write keeps its own answer, its own error and exactly-once."""

from __future__ import annotations

import pathlib
from collections import Counter
from typing import Any

import trio
from trio_websocket import open_websocket

from tests.api.helpers import WORKLOAD, open_cluster, wait_until
from tests.api.test_frame_batching import _api_tasks, _exchange, _TaskCounter
from univrs.api.forward import Forwarder
from univrs.client import protocol
from univrs.client.connection import Connection
from univrs.server.node import Node


def _count_forwards(monkeypatch: Any) -> Counter[str]:
    """Count the Forwarder's hops (``call``: one request; ``call_many``: a frame's)."""
    counts: Counter[str] = Counter()
    for name in ("call", "call_many"):
        real = getattr(Forwarder, name)

        async def counted(self: Forwarder, *args: Any, _real: Any = real, _n: str = name) -> Any:
            counts[_n] += 1
            return await _real(self, *args)

        monkeypatch.setattr(Forwarder, name, counted)
    return counts


def _follower(nodes: list[Node]) -> Node:
    return next(n for n in nodes if n.status().leader not in (None, n.node_id))


async def test_a_followers_frame_of_writes_is_one_forward(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    """Eight writes in one frame to a follower: one hop to the leader, one frame on the
    forwarding connection, one serving task on the follower and none on the leader (which
    serves a frame of writes in its connection's reader, s16-api). The old code forwarded each
    write on its own (eight ``Forwarder.call``, a task each): this fails there."""
    async with open_cluster(tmp_path, size=3) as cluster:
        follower = _follower(cluster.running())
        port = follower.raft_port
        assert port is not None
        async with open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            created = await _exchange(
                ws,
                [
                    {"id": i, "op": "workload.create", "args": {"id": f"w{i}", "spec": WORKLOAD}}
                    for i in range(8)
                ],
            )
            assert all("ok" in r for r in created.values()), created
            store = follower.store
            assert store is not None
            conns = list(store.forwarder._conns.values())  # the forwarder's one connection
            assert len(conns) == 1
            before = conns[0].statistics()
            counts = _count_forwards(monkeypatch)
            tasks = _TaskCounter()
            trio.lowlevel.add_instrument(tasks)
            try:
                written = await _exchange(
                    ws,
                    [
                        {"id": i, "op": "workload.scale", "args": {"id": f"w{i}", "replicas": 3}}
                        for i in range(8)
                    ],
                )
            finally:
                trio.lowlevel.remove_instrument(tasks)
            after = conns[0].statistics()
        assert all("ok" in r for r in written.values()), written
        assert len({r["meta"]["index"] for r in written.values()}) == 8  # applied once each
        assert counts == {"call_many": 1}, counts  # one hop for the frame
        assert after.frames_sent - before.frames_sent == 1
        assert after.requests_sent - before.requests_sent == 8
        # One serving task on the follower, none on the leader (the nodes share this
        # process), none per write.
        assert _api_tasks(tasks) == {"univrs.api.fast._ClientConnection._handle_frame": 1}
        assert all(r["ok"]["spec"]["replicas"] == 3 for r in written.values()), written


async def test_a_forwarded_frame_answers_each_write_for_itself(tmp_path: pathlib.Path) -> None:
    """A mixed frame on a follower: good writes, a write refused on the follower (a bad
    spec, never forwarded), writes the leader refuses (not found, already exists) and a
    keyed write twice: each answered on its own, the keyed one applied once; the frame sent
    again (a client's retry) answers the keyed writes with their first application."""
    async with open_cluster(tmp_path, size=3) as cluster, trio.open_nursery() as nursery:
        follower = _follower(cluster.running())
        conn = await Connection.open(nursery, cluster.client_address(follower))
        opened, _ = await conn.request("session.open", {})
        client = opened["client_id"]
        conn.close()
        port = follower.raft_port
        assert port is not None
        frame = [
            {"id": 1, "op": "workload.create", "args": {"id": "good", "spec": WORKLOAD}},
            {"id": 2, "op": "workload.create", "args": {"id": "bad", "spec": {"x": 1}}},
            {"id": 3, "op": "workload.scale", "args": {"id": "nope", "replicas": 1}},
            {"id": 4, "op": "workload.create", "args": {"spec": WORKLOAD}, "key": [client, 1]},
            {"id": 5, "op": "workload.create", "args": {"spec": WORKLOAD}, "key": [client, 1]},
            {"id": 6, "op": "workload.create", "args": {"id": "good2", "spec": WORKLOAD}},
        ]
        async with open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            first = await _exchange(ws, frame)
            again = await _exchange(ws, frame)
        codes = {rid: r.get("error", {}).get("code") for rid, r in first.items()}
        assert codes == {1: None, 2: "invalid-argument", 3: "not-found", 4: None, 5: None, 6: None}
        assert first[4]["meta"]["index"] == first[5]["meta"]["index"]  # applied once
        assert first[4]["ok"]["id"] == first[5]["ok"]["id"]
        again_codes = {rid: r.get("error", {}).get("code") for rid, r in again.items()}
        assert again_codes == {
            1: "already-exists",
            2: "invalid-argument",
            3: "not-found",
            4: None,
            5: None,
            6: "already-exists",
        }, again
        assert again[4]["meta"]["index"] == first[4]["meta"]["index"]
        leader = cluster.leader()
        assert leader is not None
        await wait_until(
            lambda: follower.runtime.applied_index >= leader.runtime.applied_index, "catch-up"
        )
        names = sorted(w.id for w in leader.runtime.sm.iter_workloads())
        assert len(names) == 3 and {"good", "good2"} <= set(names)  # and the keyed one, once


async def test_a_forwarding_connection_lost_after_sending_keeps_each_writes_rules(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    """The follower's connection to the leader breaks right after the frame's writes were
    sent: the keyless write is answered outcome-unknown (it may have applied: never resent),
    the keyed one is sent again on a new connection and applies once (the session answers a
    duplicate with the first response)."""
    async with open_cluster(tmp_path, size=3) as cluster, trio.open_nursery() as nursery:
        follower = _follower(cluster.running())
        conn = await Connection.open(nursery, cluster.client_address(follower))
        opened, _ = await conn.request("session.open", {})
        client = opened["client_id"]
        conn.close()
        real_send = Connection._send_batch
        broken: list[int] = []

        async def send_then_break(self: Connection, ws: Any, batch: list[Any]) -> None:
            await real_send(self, ws, batch)
            if not broken and any(r["op"] == "workload.create" for r in batch):
                broken.append(len(batch))
                self.close()  # after the frame left: its writes' outcome is unknown

        monkeypatch.setattr(Connection, "_send_batch", send_then_break)
        port = follower.raft_port
        assert port is not None
        frame = [
            {"id": 1, "op": "workload.create", "args": {"id": "keyless", "spec": WORKLOAD}},
            {"id": 2, "op": "workload.create", "args": {"spec": WORKLOAD}, "key": [client, 1]},
        ]
        async with open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            answers = await _exchange(ws, frame)
        assert broken == [2]  # both writes left in the frame that broke
        assert answers[1]["error"]["code"] == "outcome-unknown", answers
        assert "ok" in answers[2], answers
        leader = cluster.leader()
        assert leader is not None
        keyed = answers[2]["ok"]["id"]
        assert leader.runtime.sm.get_workload(keyed) is not None
        # Applied once: only the keyed write and (maybe) the keyless one exist.
        names = {w.id for w in leader.runtime.sm.iter_workloads()}
        assert names - {"keyless"} == {keyed}
