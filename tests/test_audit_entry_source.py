"""s13-audit: a made-up peer's leader message at a high term does not cut a member off the
unlisted leader its core answers.

The transport adopts the sender of the newest-term AppendEntries/Heartbeat/InstallSnapshot as
the entry source when it receives it, before the core judges it (only a term above
``MAX_TERM`` was kept out): a stranger's heartbeat at any higher term (the core refuses it)
took the source over and ``_sync_links`` closed the link to the real, unlisted leader (a
member that lagged behind the change adding it, a joiner). Every answer to that leader was
then dropped ("no address known"), and, its term being the highest, the stranger kept the
source until an honest term overtook it: the member could not follow its leader."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
import trio.testing

from tests.net.helpers import receive
from tests.net.test_entry_source import Network, ack, entries, node
from univrs.net.transport import RaftTransport, open_transport
from univrs.raft import MAX_TERM
from univrs.raft.messages import AppendEntriesResponse, Heartbeat


async def test_a_strangers_high_term_does_not_cut_the_answered_leader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fails on the old code: the answer to the leader after the forged heartbeat is dropped
    (the receive below times out)."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        leader, leader_inbox = node(net, "n5", peers={"j": "j:1"}, advertise="n5:7005")
        stranger, _ = node(net, "x", peers={"j": "j:1"}, advertise="x:6666")
        member, member_inbox = node(net, "j", peers={"n1": "n1:1"})  # its map lacks n5
        async with open_transport_all(leader, stranger, member):
            leader.send(entries("n5", "j"))
            await receive(member_inbox)
            member.send(ack("j", "n5"))  # the core accepted n5 and answers it
            assert await receive(leader_inbox) == ack("j", "n5")
            forged = Heartbeat(term=MAX_TERM, src="x", dst="j", commit=0, ctx=1)
            stranger.send(forged)
            assert await receive(member_inbox) == forged  # the core refuses it: no answer
            leader.send(entries("n5", "j"))
            await receive(member_inbox)
            member.send(ack("j", "n5"))
            assert await receive(leader_inbox) == ack("j", "n5")
            assert member.statistics().peer("n5").dropped == 0
            assert "x:6666" not in net.dials
            # A newer leader the core answers is followed, and the old one forgotten.
            newer, newer_inbox = node(net, "n6", peers={"j": "j:1"}, advertise="n6:7006")
            async with open_transport_all(newer):
                newer.send(entries("n6", "j", term=4))
                await receive(member_inbox)
                member.send(ack("j", "n6", term=4))
                assert await receive(newer_inbox) == ack("j", "n6", term=4)
                assert set(member.peer_addresses()) == {"n1", "n6"}
                # Once the core answers a listed leader, the unlisted one answered before
                # goes too.
                member.send(ack("j", "n1", term=5))
                assert set(member.peer_addresses()) == {"n1"}
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def open_transport_all(*transports: RaftTransport) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for transport in transports:
            await stack.enter_async_context(open_transport(transport))
        yield


async def test_a_stale_listed_leaders_rejection_keeps_the_unlisted_leaders_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """s14-small (s13-review: A6's remainder). While a stranger holds the newest term, the
    core rejects a stale listed member's append (the answer carries our higher term): that
    used to make the listed member the answered source, closing the link to the unlisted
    leader the core follows until the next answer to it dialed it again. Fails on the old
    code: n5 leaves the peer map and is dialed a second time."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery)
        leader, leader_inbox = node(net, "n5", peers={"j": "j:1"}, advertise="n5:7005")
        stranger, _ = node(net, "x", peers={"j": "j:1"}, advertise="x:6666")
        stale, _ = node(net, "n1", peers={"j": "j:1"})
        member, member_inbox = node(net, "j", peers={"n1": "n1:1"})  # its map lacks n5
        async with open_transport_all(leader, stranger, stale, member):
            leader.send(entries("n5", "j"))
            await receive(member_inbox)
            member.send(ack("j", "n5"))
            assert await receive(leader_inbox) == ack("j", "n5")
            stranger.send(Heartbeat(term=MAX_TERM, src="x", dst="j", commit=0, ctx=1))
            await receive(member_inbox)  # refused by the core: no answer
            stale.send(entries("n1", "j", term=1))  # a stale leader of an older term
            await receive(member_inbox)
            rejection = AppendEntriesResponse(term=3, src="j", dst="n1", success=False, index=0)
            member.send(rejection)  # the core's rejection carries its term
            assert set(member.peer_addresses()) == {"n1", "n5"}
            leader.send(entries("n5", "j"))
            await receive(member_inbox)
            member.send(ack("j", "n5"))
            assert await receive(leader_inbox) == ack("j", "n5")
            assert net.dials.count("n5:7005") == 1  # never closed, never dialed again
            # The listed member leading at our term is answered and followed.
            stale.send(entries("n1", "j", term=4))
            await receive(member_inbox)
            member.send(ack("j", "n1", term=4))
            assert set(member.peer_addresses()) == {"n1"}
        nursery.cancel_scope.cancel()
