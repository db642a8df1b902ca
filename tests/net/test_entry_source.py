"""The address rule for the peer that sends us entries (issue 10, bug 6).

A brand-new member catching up from index 1 adopts the bootstrap configuration first; when the
leader is not in it, the runtime's map no longer lists the leader. The transport must still
answer the peer that sends it entries: at the address the map last gave it, or the one its
hello advertised.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest
import trio
import trio.testing

from tests.net import fake_codec
from tests.net.helpers import CLUSTER, FAST, heartbeat, receive, wait_until
from univrs.net.transport import RaftTransport, open_transport
from univrs.raft import MAX_TERM
from univrs.raft.messages import AppendEntries, AppendEntriesResponse, Entry, Heartbeat, Message


class Network:
    """Each dial of ``host:port`` opens a memory stream served by the transport named ``host``
    (whatever the port); dials are recorded."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.nodes: dict[str, RaftTransport] = {}
        self.dials: list[str] = []

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        self.dials.append(f"{host}:{port}")
        target = self.nodes.get(host)
        if target is None:
            raise OSError(f"connection refused by {host}")
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(target.router.handle_connection, server)
        return client


def node(
    net: Network,
    node_id: str,
    *,
    peers: Mapping[str, str] | None = None,
    advertise: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> tuple[RaftTransport, trio.MemoryReceiveChannel[Message]]:
    send, recv = trio.open_memory_channel[Message](100)
    transport = RaftTransport(
        node_id=node_id,
        cluster_id=CLUSTER,
        inbox=send,
        rng=random.Random(0),
        listen_addr=None,
        peers=dict(peers or {}),
        settings=FAST,
        encode=fake_codec.encode,
        decode=fake_codec.decode,
        encode_batch=fake_codec.encode_batch,
        connector=net.connect,
        advertise_addr=advertise,
        dial_overrides=dict(overrides or {}),
    )
    net.nodes[node_id] = transport
    return transport, recv


def entries(src: str, dst: str, term: int = 3) -> AppendEntries:
    return AppendEntries(
        term=term,
        src=src,
        dst=dst,
        prev_log_index=0,
        prev_log_term=0,
        entries=(Entry(term=1, index=1, data=b"config"),),
        commit=0,
    )


def ack(src: str, dst: str, term: int = 3) -> AppendEntriesResponse:
    return AppendEntriesResponse(term=term, src=src, dst=dst, success=True, index=1)


async def test_a_joiner_answers_its_leader_though_no_map_lists_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fails on the old code: the joiner dropped its answers ("no address known")."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        leader, leader_inbox = node(net, "n5", peers={"j": "j:1"}, advertise="n5:7005")
        joiner, joiner_inbox = node(net, "j")  # empty map: a joiner without join addresses
        async with open_transport(leader), open_transport(joiner):
            leader.send(entries("n5", "j"))
            assert await receive(joiner_inbox) == entries("n5", "j")
            # The joiner appended the bootstrap configuration, which lacks its leader.
            joiner.set_peer_addresses({"n1": "n1:7001", "n2": "n2:7002", "n3": "n3:7003"})
            joiner.send(ack("j", "n5"))
            assert await receive(leader_inbox) == ack("j", "n5")
            assert joiner.peer_addresses()["n5"] == "n5:7005"
            assert joiner.entry_source == "n5"
            assert joiner.statistics().peer("n5").dropped == 0
        nursery.cancel_scope.cancel()


async def test_a_map_that_drops_the_leader_does_not_cut_the_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fails on the old code: the joiner closed its link to the leader (its map had it from
    the join) as soon as it adopted an old configuration."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        # No advertised address: the map's last address is what the joiner keeps.
        leader, leader_inbox = node(net, "n5", peers={"j": "j:1"})
        joiner, joiner_inbox = node(net, "j", peers={"n5": "n5:1"})
        async with open_transport(leader), open_transport(joiner):
            leader.send(entries("n5", "j"))
            assert await receive(joiner_inbox) == entries("n5", "j")
            joiner.set_peer_addresses({"n1": "n1:1"})
            for i in range(3):
                joiner.send(ack("j", "n5", term=3 + i))
                assert await receive(leader_inbox) == ack("j", "n5", term=3 + i)
            assert joiner.peer_addresses() == {"n1": "n1:1", "n5": "n5:1"}
        nursery.cancel_scope.cancel()


async def test_a_newer_leader_takes_over_and_the_old_unlisted_one_is_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        old, _ = node(net, "n4", peers={"j": "j:1"}, advertise="n4:1")
        new, new_inbox = node(net, "n5", peers={"j": "j:1"}, advertise="n5:1")
        joiner, joiner_inbox = node(net, "j")
        async with open_transport(old), open_transport(new), open_transport(joiner):
            old.send(entries("n4", "j", term=3))
            await receive(joiner_inbox)
            assert joiner.peer_addresses() == {}  # dialed once the core answers it
            joiner.send(ack("j", "n4", term=3))
            assert joiner.peer_addresses() == {"n4": "n4:1"}
            new.send(heartbeat("n5", "j"))  # term 1: an older leader does not take over
            await receive(joiner_inbox)
            assert joiner.entry_source == "n4"
            new.send(entries("n5", "j", term=4))
            await receive(joiner_inbox)
            assert joiner.entry_source == "n5"
            joiner.send(ack("j", "n5", term=4))
            assert joiner.peer_addresses() == {"n5": "n5:1"}
            assert await receive(new_inbox) == ack("j", "n5", term=4)
            # Once the map lists the source, the map's address is the one used.
            joiner.set_peer_addresses({"n5": "n5:2", "n6": "n6:1"})
            assert joiner.peer_addresses() == {"n5": "n5:2", "n6": "n6:1"}
        nursery.cancel_scope.cancel()


async def test_dial_overrides_beat_the_advertised_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        leader, leader_inbox = node(net, "n5", peers={"j": "j:1"}, advertise="n5:7005")
        joiner, joiner_inbox = node(net, "j", overrides={"n5": "n5:9999"})  # e.g. a proxy
        async with open_transport(leader), open_transport(joiner):
            leader.send(entries("n5", "j"))
            await receive(joiner_inbox)
            joiner.send(ack("j", "n5"))
            assert await receive(leader_inbox) == ack("j", "n5")
            assert joiner.peer_addresses() == {"n5": "n5:9999"}
            await wait_until(lambda: "n5:9999" in net.dials)
            assert "n5:7005" not in net.dials
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", ["vote", "answer"])
async def test_only_entry_senders_are_kept(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    """A peer that merely asks for votes or answers us gets no link outside the map."""
    from univrs.raft.messages import RequestVote

    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        other, _ = node(net, "x", peers={"j": "j:1"}, advertise="x:1")
        joiner, joiner_inbox = node(net, "j")
        async with open_transport(other), open_transport(joiner):
            msg: Message
            if kind == "vote":
                msg = RequestVote(
                    term=9, src="x", dst="j", last_log_index=5, last_log_term=9, pre_vote=True
                )
            else:
                msg = ack("x", "j", term=9)
            other.send(msg)
            assert await receive(joiner_inbox) == msg
            assert joiner.peer_addresses() == {}
            assert joiner.entry_source is None
        nursery.cancel_scope.cancel()


async def test_a_term_the_core_refuses_does_not_take_over_the_entry_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fails on the old code: a stranger's heartbeat with a term above MAX_TERM (which the
    core refuses) made it the entry source for good: the joiner dialed the address its hello
    advertised and dropped its link to the real, unlisted leader."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        leader, leader_inbox = node(net, "n5", peers={"j": "j:1"}, advertise="n5:7005")
        stranger, _ = node(net, "x", peers={"j": "j:1"}, advertise="x:6666")
        joiner, joiner_inbox = node(net, "j")
        async with open_transport(leader), open_transport(stranger), open_transport(joiner):
            leader.send(entries("n5", "j"))
            await receive(joiner_inbox)
            assert joiner.entry_source == "n5"
            forged = Heartbeat(term=MAX_TERM + 1, src="x", dst="j", commit=0, ctx=1)
            stranger.send(forged)
            assert await receive(joiner_inbox) == forged  # the core refuses it, and counts it
            assert joiner.entry_source == "n5"
            joiner.send(ack("j", "n5"))
            assert joiner.peer_addresses() == {"n5": "n5:7005"}
            assert await receive(leader_inbox) == ack("j", "n5")
            assert "x:6666" not in net.dials
        nursery.cancel_scope.cancel()


async def test_a_refused_strangers_address_is_never_dialed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Red team; fails on the old code: a made-up peer's heartbeat at the current term made it
    the entry source, and the node dialed the address its hello advertised (any host and
    port an attacker names) though the core refused the heartbeat. An unlisted entry source
    is dialed only once the core answers it."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        stranger, _ = node(net, "x", peers={"j": "j:1"}, advertise="x:6666")
        joiner, joiner_inbox = node(net, "j", peers={"n1": "n1:1"})
        async with open_transport(stranger), open_transport(joiner):
            forged = Heartbeat(term=3, src="x", dst="j", commit=0, ctx=1)
            stranger.send(forged)
            assert await receive(joiner_inbox) == forged  # the core refuses it: no answer
            await trio.sleep(5)  # virtual time (autojump): the link would have dialed by now
            assert "x:6666" not in net.dials
            assert set(joiner.peer_addresses()) == {"n1"}
        nursery.cancel_scope.cancel()
