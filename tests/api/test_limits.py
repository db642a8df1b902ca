"""Limits on what one client can make a node do: body size (bounded memory), JSON depth,
connections per address, session floods, the storage quota (NOSPACE alarm)."""

from __future__ import annotations

import pathlib
import tracemalloc

import h11
import pytest
import trio
from trio_websocket import wrap_client_stream

from tests.api.helpers import WORKLOAD, open_cluster, wait_until
from univrs.client import protocol
from univrs.client.connection import Connection
from univrs.errors import ConnectionLost, NoSpace

BIG = 64 * 1024 * 1024
CHUNK = b"x" * 65536


async def post_streamed(addr: str, path: str, size: int) -> tuple[int, bytes]:
    """POST ``size`` bytes of body in chunks, stopping as soon as the server answers; returns
    (status, body). The body is never built in memory here either."""
    host, port = addr.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    conn = h11.Connection(h11.CLIENT)
    head = [
        ("Host", addr),
        ("Content-Type", "application/json"),
        ("Content-Length", str(size)),
    ]
    await stream.send_all(conn.send(h11.Request(method="POST", target=path, headers=head)))
    answered = trio.Event()
    status = 0
    body = bytearray()

    async def send() -> None:
        sent = 0
        with trio.move_on_after(60):
            while sent < size and not answered.is_set():
                try:
                    await stream.send_all(CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                sent += len(CHUNK)

    async def receive() -> None:
        nonlocal status
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and status:
                    return
            elif isinstance(event, h11.Response):
                status = event.status_code
                answered.set()
            elif isinstance(event, h11.Data):
                body.extend(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await receive()
            nursery.cancel_scope.cancel()
    await stream.aclose()
    return status, bytes(body)


@pytest.mark.parametrize("path", ["/v1/cluster/members", "/v1/cluster/join", "/v1/workloads"])
async def test_an_oversized_body_gets_413_without_being_held(
    tmp_path: pathlib.Path, path: str
) -> None:
    """The /v1/cluster/* endpoints read whole bodies (1.5 GB took a node to 3 GB RSS): a
    64 MiB body must be refused at the 1 MiB limit with 413, the node's allocations staying
    far below the body's size."""
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            status, body = await post_streamed(cluster.api(node), path, BIG)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 413, body[:200]
        assert b"payload-too-large" in body
        assert peak < 16 * 1024 * 1024, f"{peak} bytes allocated for a refused body"
        assert (await cluster.http(node, "GET", "/v1/health")).status == 200


@pytest.mark.parametrize("path", ["/v1/cluster/members", "/v1/cluster/transfer-leader"])
@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000])
async def test_deep_json_is_a_clear_400(tmp_path: pathlib.Path, path: str, raw: bytes) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        r = await cluster.http(node, "POST", path, raw_body=raw)
        assert r.status == 400, r.body
        assert r.body["error"]["code"] == "malformed-request"
        assert "nested deeper than" in r.body["error"]["message"]


async def test_fast_protocol_connections_per_address_are_bounded(tmp_path: pathlib.Path) -> None:
    async with (
        open_cluster(tmp_path, size=1, max_connections_per_address=3) as cluster,
        trio.open_nursery() as nursery,
    ):
        (node,) = cluster.running()
        address = cluster.client_address(node)
        conns = [await Connection.open(nursery, address) for _ in range(3)]
        with pytest.raises(ConnectionLost, match="429"):
            await Connection.open(nursery, address)
        for conn in conns:  # the ones admitted still work
            await conn.request("workload.list", {})
        conns[0].close()
        again = await wait_until(lambda: _try_open(nursery, address), "a slot freed", every=0.05)
        await again.request("workload.list", {})
        for conn in (*conns[1:], again):
            conn.close()


async def _try_open(nursery: trio.Nursery, address: str) -> Connection | None:
    try:
        return await Connection.open(nursery, address)
    except ConnectionLost:
        return None


async def _open_from(nursery: trio.Nursery, source: str, address: str) -> object:
    """A fast-protocol websocket to ``address`` from the local address ``source``."""
    host, port = address.rsplit(":", 1)
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect((host, int(port)))
    ws = await wrap_client_stream(nursery, trio.SocketStream(sock), host, protocol.PATH)
    await ws.send_message(protocol.encode_client_hello())
    protocol.decode_server_hello(await ws.get_message())
    return ws


async def test_a_session_flood_from_another_client_does_not_evict_a_session(
    tmp_path: pathlib.Path,
) -> None:
    """Issue 12: 10,500 ``session.open`` calls evicted a real client's session (its keyed
    retries then failed with session-expired: exactly-once lost). The flood comes from
    another address; the victim's session must survive it (fails on the old code)."""
    async with open_cluster(tmp_path, size=1) as cluster, trio.open_nursery() as nursery:
        (node,) = cluster.running()
        address = cluster.client_address(node)
        victim = await Connection.open(nursery, address)
        opened, _ = await victim.request("session.open", {})
        client_id = opened["client_id"]
        ws = await _open_from(nursery, "127.0.0.2", address)
        answered = 0
        for batch in range(21):  # 21 frames of 500: 10,500 session opens
            reqs = [
                protocol.Request(id=batch * 500 + i, op="session.open", args={}) for i in range(500)
            ]
            await ws.send_message(protocol.encode_requests(reqs))  # type: ignore[attr-defined]
            got = 0
            while got < 500:
                _, responses = protocol.decode_responses(
                    await ws.get_message()  # type: ignore[attr-defined]
                )
                got += len(responses)
            answered += got
        assert answered == 10_500
        assert node.runtime.sm.has_session(client_id)
        created, _ = await victim.request(
            "workload.create", {"id": "w", "spec": WORKLOAD}, key=(client_id, 1)
        )
        again, _ = await victim.request(
            "workload.create", {"id": "w", "spec": WORKLOAD}, key=(client_id, 1)
        )
        assert again["version"] == created["version"]  # a retry, answered once: exactly-once
        victim.close()
        await ws.aclose()  # type: ignore[attr-defined]


async def test_storage_quota_raises_nospace_and_keeps_reads_and_deletes(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        open_cluster(
            tmp_path, size=1, quota_backend_bytes=400_000, snapshot_trailing_entries=0
        ) as cluster,
        trio.open_nursery() as nursery,
    ):
        (node,) = cluster.running()
        conn = await Connection.open(nursery, cluster.client_address(node))
        spec = {**WORKLOAD, "args": ["x" * 4000] * 10}
        created = []
        with pytest.raises(NoSpace) as refused:
            for n in range(1000):
                await conn.request("workload.create", {"id": f"w{n}", "spec": spec})
                created.append(f"w{n}")
                await trio.sleep(0.01)  # the quota is measured every half second at most
        assert "quota" in refused.value.message and created
        r = await cluster.http(node, "POST", "/v1/workloads", {"spec": WORKLOAD})
        assert r.status == 507 and r.body["error"]["code"] == "no-space"
        status = (await cluster.http(node, "GET", "/v1/node/status")).body
        assert [a["alarm"] for a in status["alarms"]] == ["NOSPACE"]
        assert "univrs_storage_quota_alarm 1" in node.metrics.render()
        # Reads, deletes and compaction still work; the node is fine.
        await conn.request("workload.get", {"id": created[0]})
        for wid in created:
            await conn.request("workload.delete", {"id": wid})
        assert (await cluster.http(node, "POST", "/v1/cluster/snapshot", {})).status == 200
        assert node.status().leader == node.node_id
        conn.close()


async def test_rest_connections_per_address_are_bounded(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1, max_connections_per_address=2) as cluster:
        (node,) = cluster.running()
        host, port = cluster.api(node).rsplit(":", 1)
        held = [await trio.open_tcp_stream(host, int(port)) for _ in range(2)]
        extra = await trio.open_tcp_stream(host, int(port))
        with trio.fail_after(10):  # refused: closed by the node before any HTTP
            try:
                await extra.send_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await extra.receive_some(1024)
            except trio.BrokenResourceError:
                answer = b""
            assert answer == b""
        await extra.aclose()
        await held[0].aclose()

        async def health() -> bool:
            try:
                return (await cluster.http(node, "GET", "/v1/health")).status == 200
            except OSError:
                return False

        await wait_until(health, "a slot freed", every=0.05)
        for stream in held[1:]:
            await stream.aclose()
