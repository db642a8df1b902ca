"""s26-fuzz: a websocket message sent in ever more fragments is refused once its parts would
hold more than twice the listener's message size (univrs/net/wsfast.py ``PART_COST``).

trio-websocket bounds a message by the bytes of its parts (``max_message_size``, closing with
1009) and keeps every part wsproto yields in a list until the message ends. A part costs
about 64 bytes held whatever it carries, and an empty continuation frame is 6 bytes on the
wire and adds 0 to the count: a client that opened a fragmented message and then sent empty
continuation frames made the node hold about 10 bytes per byte sent, without end (no bound
was ever reached), on ``/client`` before and after its hello and on ``/raft`` before its
hello. The parts are now charged their cost too, and such a message is closed with 1009 as
an oversized one is; a message of few fragments is read as before."""

from __future__ import annotations

import os
import pathlib
import struct

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Pong, Request

from tests.api.helpers import open_cluster
from univrs.client import protocol

MAX_PAYLOAD = 256 * 1024  # the nodes' frame limit in these tests (a smaller one: fewer parts)


def _frame(first: int, payload: bytes) -> bytes:
    """A masked frame (a client's) with first byte ``first``."""
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n <= 0xFFFF:
        head = bytes((first, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, 0x80 | 127)) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawClient:
    """A websocket client over a TCP stream that writes frames as given."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(cls, address: str, path: str) -> RawClient:
        host, port = address.rsplit(":", 1)
        client = cls(await trio.open_tcp_stream(host, int(port)))
        await client.stream.send_all(client.ws.send(Request(host="127.0.0.1", target=path)))
        while True:
            event = await client.next_event()
            if isinstance(event, AcceptConnection):
                return client

    async def next_event(self) -> object:
        while True:
            for event in self.ws.events():
                return event
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)

    async def send_message(self, payload: bytes) -> None:
        await self.stream.send_all(_frame(0x82, payload))

    async def fragments(self, parts: int, size: int = 0) -> None:
        """A binary message opened and continued by ``parts`` fragments of ``size`` bytes,
        never finished."""
        await self.stream.send_all(_frame(0x02, b"x" * size))
        piece = _frame(0x00, b"y" * size)
        for first in range(0, parts, 4096):
            await self.stream.send_all(piece * min(4096, parts - first))

    async def after(self) -> object:
        """What comes back after a ping: the pong (the node read everything before it and
        the connection is open) or how it closed."""
        await self.stream.send_all(_frame(0x89, b"are you there"))
        while True:
            event = await self.next_event()
            if event is None or isinstance(event, Pong | CloseConnection):
                return event


@pytest.mark.parametrize(
    ("path", "hello", "size"),
    [
        ("/client", True, 0),
        ("/client", False, 0),
        ("/raft", False, 0),
        ("/client", True, 1),
    ],
    ids=["client-after-hello", "client-before-hello", "raft-before-hello", "client-1-byte"],
)
async def test_a_message_of_endless_tiny_fragments_is_closed_1009(
    tmp_path: pathlib.Path, path: str, hello: bool, size: int
) -> None:
    parts = 2 * MAX_PAYLOAD // 64 + 1000  # past the bound (twice the size, 64 bytes a part)
    async with open_cluster(
        tmp_path, size=1, max_payload_size=MAX_PAYLOAD, snapshot_max_chunk_size=64 * 1024
    ) as cluster:
        node = await cluster.wait_leader()
        client = await RawClient.open(cluster.client_address(node), path)
        if hello:
            await client.send_message(protocol.encode_client_hello())
            assert isinstance(await client.next_event(), BytesMessage)
        with trio.fail_after(15):
            await client.fragments(parts, size)
            end = await client.after()
        assert isinstance(end, CloseConnection), end
        assert end.code == 1009, end
        # The node serves on.
        other = await RawClient.open(cluster.client_address(node), "/client")
        await other.send_message(protocol.encode_client_hello())
        assert isinstance(await other.next_event(), BytesMessage)


async def test_a_message_in_a_few_fragments_is_still_read(tmp_path: pathlib.Path) -> None:
    """A request frame sent as a fragmented message (a few parts of any size) is answered."""
    frame = protocol.encode_requests(
        [protocol.Request(id=7, op="workload.list", args={}, consistency="local")]
    )
    async with open_cluster(
        tmp_path, size=1, max_payload_size=MAX_PAYLOAD, snapshot_max_chunk_size=64 * 1024
    ) as cluster:
        node = await cluster.wait_leader()
        client = await RawClient.open(cluster.client_address(node), "/client")
        await client.send_message(protocol.encode_client_hello())
        assert isinstance(await client.next_event(), BytesMessage)
        pieces = [frame[:1], frame[1:3], b"", frame[3:]]
        data = _frame(0x02, pieces[0])
        data += _frame(0x89, b"between")  # a ping between fragments is allowed
        data += b"".join(_frame(0x00, p) for p in pieces[1:-1]) + _frame(0x80, pieces[-1])
        await client.stream.send_all(data)
        with trio.fail_after(10):
            while True:
                event = await client.next_event()
                if isinstance(event, BytesMessage):
                    break
                assert isinstance(event, Pong), event
        _, (response,) = protocol.decode_responses(bytes(event.data))
        assert response["id"] == 7 and "ok" in response, response
