"""The raft listener's bound on open connections per remote host (docs/security.md, "The raft
listener without a credential"): connections beyond it are closed at once, before TLS or the
websocket handshake, counted and logged once; the per-id bounds behind it still hold."""

from __future__ import annotations

import logging
import random

import attrs
import pytest
import trio

from tests.net.helpers import FAST, make_transport, wait_until
from univrs.net.settings import PEER_CONNECTIONS_PER_ADDRESS, TransportSettings
from univrs.raft.messages import Message

BOUND = 3
# Admitted connections wait this long for a websocket handshake that never comes, then are
# dropped (well after the refused ones were closed).
SETTINGS = attrs.evolve(FAST, handshake_timeout=20.0, max_connections_per_address=BOUND)


async def closed_at_once(stream: trio.SocketStream) -> bool:
    """Whether the listener closed ``stream`` (EOF or reset) well before the handshake
    deadline of the admitted ones."""
    with trio.move_on_after(SETTINGS.handshake_timeout / 2):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True
    return False


async def test_connections_beyond_the_bound_per_address_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="univrs.net")
    transport, _inbox = make_transport("n1", settings=SETTINGS)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(transport.run)
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(BOUND)]
        await wait_until(lambda: transport.router.open_from("127.0.0.1") == BOUND)
        extra = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        for stream in extra:
            assert await closed_at_once(stream)
        assert transport.statistics().rejected_connections == 2
        assert transport.router.refused_per_address == 2
        warnings = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and "the bound per address" in r.getMessage()
        ]
        assert len(warnings) == 1  # once per host, however many are refused
        assert transport.router.open_from("127.0.0.1") == BOUND  # the held ones stay open
        # Once the host's connections are gone (dropped for never shaking hands), it is
        # admitted again.
        await wait_until(lambda: transport.router.open_from("127.0.0.1") == 0, timeout=60)
        again = await trio.open_tcp_stream("127.0.0.1", port)
        await wait_until(lambda: transport.router.open_from("127.0.0.1") == 1)
        assert transport.router.refused_per_address == 2
        for stream in (*held, *extra, again):
            await stream.aclose()
        nursery.cancel_scope.cancel()


def test_the_node_leaves_room_for_peers_beyond_the_fast_protocol_bound() -> None:
    from univrs.config import NodeConfig
    from univrs.server.wiring import transport_from_config

    config = NodeConfig(raft_addr="127.0.0.1:0", max_connections_per_address=10)
    send, _recv = trio.open_memory_channel[Message](1)
    transport = transport_from_config(config, inbox=send, rng=random.Random(0))
    assert transport.router.max_connections_per_address == 10 + PEER_CONNECTIONS_PER_ADDRESS
    with pytest.raises(ValueError):
        TransportSettings(max_connections_per_address=0)
