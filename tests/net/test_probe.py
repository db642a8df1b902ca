"""The bootstrap probe: a node about to bootstrap on an empty data dir asks its bootstrap peers
whether its id already served in their cluster, and refuses to start a second history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace

import cbor2
import pytest
import trio

from univrs.config import BootstrapNode, NodeConfig
from univrs.errors import ProtocolError
from univrs.net.probe import (
    PROBE_PATH,
    ProbeAnswer,
    ProbeQuestion,
    ask_peer,
    decode_answer,
    decode_question,
    encode_answer,
    encode_question,
    probe_route,
)
from univrs.net.server import WebSocketRouter
from univrs.raft.messages import Membership
from univrs.server.incarnation import (
    BootstrapRefused,
    check_bootstrap,
    history_problem,
    probe_answerer,
)
from univrs.tools.ports import free_ports

INC = "0123456789abcdef"


def answer(**kw: object) -> ProbeAnswer:
    base: dict[str, object] = {
        "node": "n1",
        "same_cluster": True,
        "history": True,
        "member": True,
        "bound": None,
    }
    return ProbeAnswer(**{**base, **kw})  # type: ignore[arg-type]


def test_frames_round_trip_and_garbage_is_refused() -> None:
    q = ProbeQuestion(src="n3", cluster="c-1")
    assert decode_question(encode_question(q)) == q
    a = answer(bound=INC)
    assert decode_answer(encode_answer(a)) == a
    assert decode_answer(encode_answer(answer())).bound is None
    for bad in (b"\xff", cbor2.dumps({"probe": "other"}), cbor2.dumps({"probe": "univrs-raft"})):
        with pytest.raises(ProtocolError):
            decode_answer(bad)
    with pytest.raises(ProtocolError, match="'src'"):
        decode_question(cbor2.dumps({"probe": "univrs-raft", "version": 1, "cluster": "c"}))


@asynccontextmanager
async def peers(
    answers: dict[str, Callable[[ProbeQuestion], ProbeAnswer]],
) -> AsyncIterator[dict[str, int]]:
    """One probe listener per peer on 127.0.0.1; yields their ports."""
    ports: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        for nid, fn in answers.items():
            router = WebSocketRouter(max_message_size=1 << 16, handshake_timeout=2.0)
            router.add_route(PROBE_PATH, probe_route(fn, 2.0))
            ports[nid] = await nursery.start(router.serve, "127.0.0.1", 0)
        yield ports
        nursery.cancel_scope.cancel()


async def test_ask_peer_gets_the_answer_or_none() -> None:
    asked: list[ProbeQuestion] = []

    def fn(q: ProbeQuestion) -> ProbeAnswer:
        asked.append(q)
        return answer(bound=INC)

    async with peers({"n1": fn}) as ports:
        question = ProbeQuestion(src="n3", cluster="c")
        got = await ask_peer(f"127.0.0.1:{ports['n1']}", question, timeout=5)
    assert got == answer(bound=INC)
    assert asked == [ProbeQuestion(src="n3", cluster="c")]
    (closed,) = free_ports(1)
    assert await ask_peer(f"127.0.0.1:{closed}", asked[0], timeout=5) is None
    # A node without /probe (an older version) answers 404: no answer, not an error.
    async with trio.open_nursery() as nursery:
        router = WebSocketRouter(max_message_size=1 << 16, handshake_timeout=2.0)
        port = await nursery.start(router.serve, "127.0.0.1", 0)
        assert await ask_peer(f"127.0.0.1:{port}", asked[0], timeout=5) is None
        nursery.cancel_scope.cancel()


def config_for(ports: dict[str, int]) -> NodeConfig:
    (own,) = free_ports(1)
    nodes = [BootstrapNode(id=nid, addr=f"127.0.0.1:{p}") for nid, p in sorted(ports.items())]
    nodes.append(BootstrapNode(id="n3", addr=f"127.0.0.1:{own}"))
    return NodeConfig(node_id="n3", raft_addr=f"127.0.0.1:{own}", bootstrap=tuple(nodes))


@pytest.mark.parametrize(
    ("peer_answer", "refused"),
    [
        (answer(bound=INC), f"n1 holds a history in which n3 is incarnation {INC}"),
        (answer(member=False), "no longer lists n3 (it was removed)"),
        (answer(same_cluster=False), "history of another cluster"),
        (answer(), None),  # n3 is listed unbound: it never served (a late start)
        (answer(history=False, bound=INC), None),  # the peer is new too
    ],
)
async def test_bootstrap_is_refused_when_a_peer_shows_the_id_already_served(
    peer_answer: ProbeAnswer, refused: str | None
) -> None:
    async with peers({"n1": lambda q: peer_answer, "n2": lambda q: answer(node="n2")}) as ports:
        config = config_for(ports)
        if refused is None:
            await check_bootstrap(config, "c-1", "feedfeedfeedfeed")
        else:
            with pytest.raises(BootstrapRefused) as info:
                await check_bootstrap(config, "c-1", "feedfeedfeedfeed")
            assert refused in str(info.value)
            assert "initial_cluster_state" in str(info.value)
            assert "univrs cluster join <member-api> --replace" in str(info.value)


async def test_unreachable_peers_count_as_new() -> None:
    ports = dict(zip(("n1", "n2"), free_ports(2), strict=True))
    await check_bootstrap(config_for(ports), "c-1", INC)  # nobody answers: a new cluster


def test_a_probe_of_another_cluster_learns_nothing_of_the_membership() -> None:
    """Fails on the old code: any asker, whatever cluster it named, learned whether an id is
    a member here and the incarnation it is bound to."""
    membership = Membership(voters=frozenset({"n1", "n3"}), incarnations=(("n3", INC),))
    node = SimpleNamespace(
        node_id="n1",
        cluster_id="c-1",
        status=lambda: SimpleNamespace(membership=membership, last_index=7, pinned=()),
        runtime=SimpleNamespace(last_snapshot_index=0),
    )
    answer_for = probe_answerer(node)
    ours = answer_for(ProbeQuestion(src="n3", cluster="c-1"))
    assert ours == answer(same_cluster=True, member=True, bound=INC)
    theirs = answer_for(ProbeQuestion(src="n3", cluster="guess"))
    assert theirs == answer(same_cluster=False, member=False, bound=None)
    # What the asker concludes is unchanged: another cluster's history forbids bootstrapping.
    assert "another cluster" in (history_problem("n3", "n1", theirs) or "")


def test_a_peer_that_pinned_the_id_shows_it_served() -> None:
    """Fails on the old code: a member that served only while the bootstrap configuration
    listed it unbound (before the leader's binding change) and then lost its data dir was
    not recognised, and bootstrapped a second history under its id. A peer that took a
    message from it pinned it (durably, univrs/raft/gate.py ``_maybe_pin``) and says so."""
    membership = Membership(voters=frozenset({"n1", "n2", "n3"}))  # unbound
    pinned: tuple[tuple[str, str], ...] = (("n3", INC),)
    node = SimpleNamespace(
        node_id="n1",
        cluster_id="c-1",
        status=lambda: SimpleNamespace(membership=membership, last_index=2, pinned=pinned),
        runtime=SimpleNamespace(last_snapshot_index=0),
    )
    answer_for = probe_answerer(node)
    ours = answer_for(ProbeQuestion(src="n3", cluster="c-1"))
    assert ours == answer(bound=INC)
    assert f"n1 holds a history in which n3 is incarnation {INC}" in (
        history_problem("n3", "n1", ours) or ""
    )
    assert answer_for(ProbeQuestion(src="n2", cluster="c-1")) == answer()  # not pinned
    assert answer_for(ProbeQuestion(src="n3", cluster="guess")).bound is None
    bound = Membership(voters=membership.voters, incarnations=(("n3", "f" * 16),))
    membership = bound  # a binding decides over a pin
    assert answer_for(ProbeQuestion(src="n3", cluster="c-1")).bound == "f" * 16
