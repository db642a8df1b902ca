"""The bounds on catching up for unknown tokens (univrs/api/auth.py, ``Authority.catch_up_for``;
docs/security.md, "Tokens and roles"): a well-formed token a node does not know makes it wait
for one read confirmation with its leader before it answers 401, so a hostile client sending
made-up tokens must not get one leader round per request or frame. The old code caught up for
every request (and every frame): each test here fails there.

The unit tests drive an ``Authority`` over a stand-in node whose catch-up barrier is counted
(and, where it matters, held until released); the last one sends frames and REST requests with
made-up tokens to a real one-node cluster."""

from __future__ import annotations

import hashlib
import logging
import pathlib
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from tests.api.helpers import open_cluster
from tests.api.test_auth import bootstrap, call, code
from tests.api.test_frame_batching import _exchange, _raw
from univrs.api.auth import ADDRESS_BURST, NODE_BURST, Authority, Caller
from univrs.api.limits import RateLimiter
from univrs.client import protocol
from univrs.errors import Unauthenticated

MADE_UP = "univrs.made-up-"
REFUSED = "did not check with its leader again"


def _frozen() -> float:
    """A clock that does not move: the buckets never refill during a test."""
    return 0.0


@attrs.define
class _Token:
    id: str
    roles: frozenset[str]
    name: str


@attrs.define
class _StateMachine:
    known: dict[str, _Token] = attrs.field(factory=dict)
    tokens_bootstrapped: bool = True

    def token_by_hash(self, digest: str) -> _Token | None:
        return self.known.get(digest)

    def learn(self, secret: str) -> None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        self.known[digest] = _Token(id="t1", roles=frozenset({"read"}), name="fresh")


@attrs.define
class _Node:
    """What an ``Authority`` reads of its node: the auth switch and the applied tokens."""

    sm: _StateMachine = attrs.field(factory=_StateMachine)

    @property
    def config(self) -> Any:
        return attrs.make_class("Config", {"auth_enabled": attrs.field(default=True)})()

    @property
    def runtime(self) -> Any:
        return self


@attrs.define
class _Barrier:
    """The catch-up barrier: counts its calls; ``hold`` makes each wait for ``release``."""

    calls: int = 0
    hold: bool = False
    released: trio.Event = attrs.field(factory=trio.Event)
    then: Any = None  # called once released (the catch-up "applies" what the leader had)

    async def __call__(self) -> None:
        self.calls += 1
        if self.hold:
            await self.released.wait()
        if self.then is not None:
            self.then()


def _authority(barrier: _Barrier, node: _Node | None = None) -> Authority:
    authority = Authority(node or _Node(), catch_up=barrier)  # type: ignore[arg-type]
    authority.by_address = RateLimiter(rate=2.0, burst=ADDRESS_BURST, clock=_frozen)
    authority.by_node = RateLimiter(rate=20.0, burst=NODE_BURST, clock=_frozen)
    return authority


async def test_made_up_tokens_from_one_address_cost_at_most_a_burst_of_catch_ups(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client sending one made-up token after another gets ``ADDRESS_BURST`` catch-ups, then
    its 401s at once, saying why; the refusal is logged once. The old code caught up for each
    of the 50."""
    barrier = _Barrier()
    authority = _authority(barrier)
    messages = []
    with caplog.at_level(logging.WARNING, logger="univrs.api"):
        for i in range(50):
            caller = Caller(token=f"{MADE_UP}{i}", address="203.0.113.9")
            with pytest.raises(Unauthenticated) as refused:
                await authority.authorize_fresh(caller, "read", "a list")
            messages.append(refused.value.message)
    assert barrier.calls == ADDRESS_BURST
    assert authority.catch_ups_refused == 50 - ADDRESS_BURST
    assert all(REFUSED not in m for m in messages[:ADDRESS_BURST])
    assert all(REFUSED in m and "203.0.113.9" in m for m in messages[ADDRESS_BURST:])
    warnings = [r for r in caplog.records if "without catching up" in r.getMessage()]
    assert len(warnings) == 1, warnings
    # Another address still gets its own catch-up.
    with pytest.raises(Unauthenticated) as other:
        await authority.authorize_fresh(Caller(token=MADE_UP, address="198.51.100.1"), "read", "x")
    assert REFUSED not in other.value.message and barrier.calls == ADDRESS_BURST + 1


async def test_many_addresses_share_the_nodes_bucket(caplog: pytest.LogCaptureFixture) -> None:
    """Made-up tokens from ever new addresses: at most ``NODE_BURST`` catch-ups for the node,
    the refusal logged once for that kind too."""
    barrier = _Barrier()
    authority = _authority(barrier)
    with caplog.at_level(logging.WARNING, logger="univrs.api"):
        for i in range(2 * NODE_BURST):
            caller = Caller(token=MADE_UP, address=f"10.0.{i // 250}.{i % 250}")
            with pytest.raises(Unauthenticated):
                await authority.authorize_fresh(caller, "read", "a list")
    assert barrier.calls == NODE_BURST
    assert authority.catch_ups_refused == NODE_BURST
    warnings = [r for r in caplog.records if "without catching up" in r.getMessage()]
    assert len(warnings) == 1, warnings


async def test_a_burst_with_one_fresh_token_catches_up_once() -> None:
    """Forty concurrent requests from one address with a token the node learns by catching up:
    one catch-up in flight for the address, the others wait for it and look again; every
    request is served. (The old code started forty.)"""
    node = _Node()
    barrier = _Barrier(hold=True)
    barrier.then = lambda: node.sm.learn("univrs.fresh")
    authority = _authority(barrier, node)
    served = 0

    async def request() -> None:
        nonlocal served
        caller = Caller(token="univrs.fresh", address="203.0.113.9")
        identity = await authority.authorize_fresh(caller, "read", "a list")
        assert identity.key == "token:t1"
        served += 1

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(request)
            await trio.testing.wait_all_tasks_blocked()
            assert barrier.calls == 1
            barrier.released.set()
    assert served == 40 and barrier.calls == 1 and authority.catch_ups_refused == 0


async def test_a_waiter_whose_token_is_still_unknown_catches_up_itself() -> None:
    """A request that waited for its address's catch-up and still does not know its token
    starts its own (one requested after it arrived), within the bounds."""
    barrier = _Barrier(hold=True)
    authority = _authority(barrier)
    outcomes: list[str] = []

    async def request(token: str) -> None:
        try:
            await authority.authorize_fresh(Caller(token=token, address="a"), "read", "x")
        except Unauthenticated as exc:
            outcomes.append(exc.message)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(request, f"{MADE_UP}1")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(request, f"{MADE_UP}2")
            await trio.testing.wait_all_tasks_blocked()
            assert barrier.calls == 1  # the second waits for the first's catch-up
            barrier.released.set()
    assert barrier.calls == 2 and len(outcomes) == 2


async def test_made_up_tokens_over_the_fast_protocol_and_rest(tmp_path: pathlib.Path) -> None:
    """A real node: frames of made-up tokens on one connection, then REST requests (a state
    endpoint, the watch, the cluster status, an admin endpoint), from one address. After the
    address's burst each is answered 401 at once, saying why; the store's authority counted
    every catch-up (the REST endpoints outside the state API used to make an ``Authority`` of
    their own per request, unbounded)."""
    async with open_cluster(tmp_path, size=1, auth_enabled=True) as cluster:
        (node,) = cluster.running()
        await bootstrap(cluster)
        authority = node.store.authority
        authority.by_address = RateLimiter(rate=2.0, burst=ADDRESS_BURST, clock=_frozen)
        before = authority.catch_ups
        async with await _raw(node) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            for i in range(3 * ADDRESS_BURST):
                frame = [{"id": 1, "op": "workload.list", "args": {}, "token": f"{MADE_UP}{i}"}]
                answer = (await _exchange(ws, frame))[1]
                assert answer["error"]["code"] == "unauthenticated", answer
        assert authority.catch_ups == before + ADDRESS_BURST
        assert REFUSED in answer["error"]["message"]
        for method, path in (
            ("GET", "/v1/workloads"),
            ("GET", "/v1/watch"),
            ("GET", "/v1/cluster/status"),
            ("GET", "/v1/node/digest"),
            ("POST", "/v1/cluster/snapshot"),
        ):
            status, body = await call(cluster, node, method, path, MADE_UP)
            assert status == 401 and code(body) == "unauthenticated", (path, body)
            assert REFUSED in body["error"]["message"], (path, body)
        assert authority.catch_ups == before + ADDRESS_BURST
