"""s26-fuzz: a request that claims to be forwarded (``hops`` 1 and a ``client`` address) gets
no catch-up bucket of its own.

A node catches up with its leader before it answers an unknown token 401, at most
``ADDRESS_BURST`` times (then ``ADDRESS_RATE`` a second) per client address and ``NODE_BURST``
for all addresses (univrs/api/auth.py): one hostile address must not spend the node's bucket,
which every other client with a token created a moment ago needs. The address a request is
bounded by was the one it claims when it claims to be forwarded, and any client may claim
that: one connection naming a new ``client`` in each request (``hops`` 1) spent the whole
node's bucket (``NODE_BURST`` catch-ups, each a leader round; 15 here where its address's
burst is 5), and then another address's fresh token was answered 401 without a catch-up. A
caller now carries the address its connection really comes from (``Caller.via``), and the
catch-up bounds are that address's; the claimed one is still its identity without auth (a
follower forwards for many clients)."""

from __future__ import annotations

import pathlib

from tests.api.helpers import open_cluster
from tests.api.test_auth import bootstrap
from tests.api.test_catch_up_bounds import MADE_UP, REFUSED, _frozen
from tests.api.test_frame_batching import _exchange, _raw
from univrs.api.auth import ADDRESS_BURST, NODE_BURST, Caller
from univrs.api.limits import RateLimiter
from univrs.client import protocol


async def test_claimed_forwarded_addresses_share_the_connections_catch_ups(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path, size=1, auth_enabled=True) as cluster:
        (node,) = cluster.running()
        await bootstrap(cluster)
        authority = node.store.authority
        authority.by_address = RateLimiter(rate=2.0, burst=ADDRESS_BURST, clock=_frozen)
        authority.by_node = RateLimiter(rate=20.0, burst=NODE_BURST, clock=_frozen)
        before = authority.catch_ups
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            for i in range(3 * ADDRESS_BURST):
                request = {
                    "id": 1,
                    "op": "workload.list",
                    "args": {},
                    "token": f"{MADE_UP}{i}",
                    "hops": 1,
                    "client": f"198.51.100.{i}",  # a new address claimed each time
                }
                answer = (await _exchange(ws, [request]))[1]
                assert answer["error"]["code"] == "unauthenticated", answer
        assert authority.catch_ups == before + ADDRESS_BURST
        assert REFUSED in answer["error"]["message"]
        # Another client's made-up (or fresh) token still gets its catch-up: the node's
        # bucket was not spent by the one connection.
        other = Caller(token=f"{MADE_UP}other", address="203.0.113.7")
        refused = await authority.catch_up_for([other])
        assert other not in refused
        assert authority.catch_ups == before + ADDRESS_BURST + 1


def test_a_caller_by_its_address_alone_is_unchanged() -> None:
    """A request that claims nothing: one caller per connection, as before (equal callers
    are identified once per frame)."""
    assert Caller(token="t", address="a") == Caller(token="t", address="a")
    assert Caller(address="a").via is None
