"""An older copy of a member's data dir, over real sockets on 127.0.0.1 (port 0).

A data dir put back from an older copy (a VM snapshot rolled back, last night's ``cp -a``)
keeps its incarnation while its hard state goes back (docs/security.md). Every hello names the
sender's start (univrs/raft/starts.py); a receiver that recorded a later start of the same data
dir refuses the copy (``CLOSE_STALE_START``), before a single message of it reaches the core,
and the copy, told so, stops taking part (``RaftTransport.fenced``): it sends no vote and no
acknowledgement to anyone, and refuses every connection. Without the check the copy's
messages are delivered (each test below fails)."""

from __future__ import annotations

import logging

import attrs
import pytest
import trio

from tests.net.helpers import addr, heartbeat, make_transport, receive, wait_until
from univrs.errors import StorageError
from univrs.net.peer import CLOSE_STALE_START
from univrs.net.transport import RaftTransport, open_transport
from univrs.raft.messages import Message
from univrs.raft.starts import Records, Start, StartBook

INC = "0123456789abcdef"
A, B, C = "a" * 16, "b" * 16, "c" * 16
FIRST = Start(counter=1, boots=(A,))
LATER = FIRST.following(B)  # the original, started again after the copy was taken
COPY = FIRST.following(C)  # the copy put back: the same counter, its own boot id


def member(
    node_id: str,
    start: Start | None,
    *,
    records: Records | None = None,
    saves: list[tuple[Records, int]] | None = None,
    bound: dict[str, str] | None = None,
) -> tuple[RaftTransport, trio.MemoryReceiveChannel[Message]]:
    """A transport of ``node_id`` (incarnation INC for "a") announcing ``start``; ``bound``:
    the incarnation its configuration binds per peer."""
    own = INC if node_id == "a" else f"{node_id}-inc"
    t, inbox = make_transport(node_id, incarnation=own, bound=bound)
    t.start = start
    t.start_book = StartBook(dict(records or {}))
    if saves is not None:

        def save(records: Records) -> None:
            # Durable before the connection delivers anything: nothing of it is in the inbox.
            saves.append((records, inbox.statistics().current_buffer_used))

        t.save_starts = save
    return t, inbox


def dial(sender: RaftTransport, peer: RaftTransport, ctx: int) -> None:
    """``sender`` lists only ``peer``, at its address, and sends it a heartbeat (``ctx``)."""
    sender.set_peer_addresses({peer.node_id: addr(peer)})
    sender.send(heartbeat(sender.node_id, peer.node_id, ctx=ctx))


async def test_a_copy_started_after_a_later_start_is_refused_and_fences_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    saves: list[tuple[Records, int]] = []
    b, b_inbox = member("b", LATER, saves=saves)
    original, _ = member("a", LATER)
    copy, copy_inbox = member("a", COPY)
    c, c_inbox = member("c", FIRST)
    async with open_transport(b), open_transport(c):
        b.set_peer_addresses({"a": "127.0.0.1:1"})  # b lists a (it records listed peers)
        async with open_transport(original):
            dial(original, b, ctx=1)
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
        assert b.start_book.recorded("a", INC) == (2, B)
        assert saves == [({("a", INC): (2, B)}, 0)]
        async with open_transport(copy):
            copy.set_peer_addresses({"b": addr(b), "c": addr(c)})
            copy.send(heartbeat("a", "b", ctx=2))
            await wait_until(lambda: copy.fenced is not None, timeout=20)
            assert "b refused it as an older copy" in (copy.fenced or "")
            assert str(CLOSE_STALE_START) in copy.stopped_links()["b"]
            assert copy.statistics().fenced == copy.fenced
            # Fenced: nothing more leaves it, to b or to anyone (c never saw the later start
            # and would take it: the window docs/security.md names).
            for ctx in range(3, 6):
                copy.send(heartbeat("a", "c", ctx=ctx))
                copy.send(heartbeat("a", "b", ctx=ctx))
            # ... and it refuses every connection: c dialing it delivers nothing.
            dial(c, copy, ctx=9)
            await wait_until(lambda: copy.statistics().rejected_connections > 0, timeout=20)
            assert copy_inbox.statistics().current_buffer_used == 0
            assert c_inbox.statistics().current_buffer_used == 0
            assert b_inbox.statistics().current_buffer_used == 0
            assert copy.statistics().peer("c").dropped >= 3
        assert b.start_book.recorded("a", INC) == (2, B)  # the copy moved nothing
        assert len(saves) == 1
    said = [r.getMessage() for r in caplog.records]
    refusals = [m for m in said if "refusing raft connection from a" in m]
    assert len(refusals) == 1 and "older copy of its data dir" in refusals[0]
    assert "--replace" in refusals[0]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "older copy" in r.msg]
    assert len(errors) == 1


async def test_an_older_build_on_an_older_copy_is_refused_but_never_before_it_announced() -> None:
    # A VM snapshot from before the upgrade: older code (no start in its hello) on older data.
    b, b_inbox = member("b", LATER, records={("a", INC): (2, B)})
    old_build, _ = member("a", None)
    async with open_transport(b), open_transport(old_build):
        b.set_peer_addresses({"a": "127.0.0.1:1"})
        dial(old_build, b, ctx=1)
        await wait_until(lambda: "b" in old_build.stopped_links(), timeout=20)
        assert "named no start counter" in old_build.stopped_links()["b"]
        assert b_inbox.statistics().current_buffer_used == 0
    # The rolling upgrade: a member that never announced a start is heard as before.
    b, b_inbox = member("b", LATER)
    old_build, _ = member("a", None)
    async with open_transport(b), open_transport(old_build):
        b.set_peer_addresses({"a": "127.0.0.1:1"})
        dial(old_build, b, ctx=2)
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
        assert b.start_book.records() == {}


async def test_starts_of_unlisted_ids_are_not_recorded() -> None:
    # Only a listed member's start is kept (bounded by the configuration): a made-up id's
    # hellos grow nothing durable.
    saves: list[tuple[Records, int]] = []
    b, b_inbox = member("b", LATER, saves=saves)
    stranger, _ = member("x", LATER)
    async with open_transport(b), open_transport(stranger):
        dial(stranger, b, ctx=1)
        assert await receive(b_inbox) == heartbeat("x", "b", ctx=1)
    assert b.start_book.records() == {} and saves == []


async def test_a_copy_dialed_by_a_peer_that_saw_a_later_start_stops_before_reading() -> None:
    # The leader dials the copy first (its hello names the start of the copy's data dir it
    # recorded, ``Hello.seen``): the copy must not take the heartbeat, whose commit index the
    # leader derived from the original's acknowledgements (the simulator found a copy
    # applying a commit at an entry its own log held differently).
    b, _ = member("b", LATER)
    original, _ = member("a", LATER)
    copy, copy_inbox = member("a", COPY, bound={"b": "b-inc"})
    async with open_transport(b), open_transport(copy):
        b.set_peer_addresses({"a": "127.0.0.1:1"})
        copy.set_peer_addresses({"b": "127.0.0.1:1"})  # the copy lists b (dials nothing)
        async with open_transport(original):
            dial(original, b, ctx=1)
            await wait_until(lambda: b.start_book.recorded("a", INC) == (2, B), timeout=20)
        dial(b, copy, ctx=2)  # the original's address, now the copy's
        await wait_until(lambda: copy.fenced is not None, timeout=20)
        assert "b saw a later start of this data dir" in (copy.fenced or "")
        assert copy_inbox.statistics().current_buffer_used == 0
        # The original's own hello names what it is: b's hello does not fence it.
        original, original_inbox = member("a", LATER)
        async with open_transport(original):
            dial(b, original, ctx=3)
            assert await receive(original_inbox) == heartbeat("b", "a", ctx=3)
            assert original.fenced is None


async def test_only_a_listed_member_under_its_bound_incarnation_can_fence() -> None:
    # A fence stops a node until it restarts: a ``seen`` from a made-up id (plaintext hellos
    # are not authenticated) or from a listed id under another incarnation than the one the
    # configuration binds must not fence, or one forged hello per node would stop the cluster.
    records: Records = {("a", INC): (2, B)}  # "we recorded a later start of a": a forgery
    copy, copy_inbox = member("a", COPY, bound={"b": "b-inc"})
    stranger, _ = member("x", LATER, records=records)
    impostor, _ = make_transport("b", incarnation="not-b-inc")
    impostor.start, impostor.start_book = LATER, StartBook(dict(records))
    async with open_transport(copy), open_transport(stranger), open_transport(impostor):
        copy.set_peer_addresses({"b": "127.0.0.1:1"})
        for sender in (stranger, impostor):
            dial(sender, copy, ctx=1)
        await wait_until(lambda: copy_inbox.statistics().current_buffer_used >= 1, timeout=20)
        await wait_until(lambda: "a" in impostor.stopped_links(), timeout=20)
        assert copy.fenced is None
        assert copy_inbox.statistics().current_buffer_used == 1  # the stranger's, for the core


def _reconnects(t: RaftTransport, peer: str) -> int:
    """Sessions ``t``'s link to ``peer`` opened after its first (the hello sent; its verdict
    aside)."""
    return next((p.reconnects for p in t.statistics().peers if p.id == peer), 0)


async def test_a_start_that_cannot_be_made_durable_delivers_nothing_and_is_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # s15-review2: a failed save crashed the listener (and the node) with the record kept in
    # memory; the member's next hello of that start then moved nothing, so it was delivered on
    # a record that a crash of b would lose. Now: refused (try again), the record forgotten,
    # the next hello saved and delivered.
    failures = [StorageError("disk full")]
    saved: list[Records] = []
    b, b_inbox = member("b", LATER)

    def save(records: Records) -> None:
        if failures:
            raise failures.pop()
        saved.append(records)

    b.save_starts = save
    original, _ = member("a", LATER)
    async with open_transport(b), open_transport(original):
        b.set_peer_addresses({"a": "127.0.0.1:1"})
        dial(original, b, ctx=1)
        await wait_until(lambda: b.statistics().rejected_connections == 1, timeout=20)
        assert b.start_book.records() == {}  # forgotten: not durable
        # The first heartbeat went with the refused session. Send the next once a's link is on
        # its next session: sent while the link had not yet seen the close, it would go into
        # the dying session and be lost like the first (CI under load, session 18).
        await wait_until(lambda: _reconnects(original, "b") >= 1, timeout=30)
        original.send(heartbeat("a", "b", ctx=2))
        assert await receive(b_inbox) == heartbeat("a", "b", ctx=2)
        assert saved == [{("a", INC): (2, B)}]  # delivered only once durable
        assert original.fenced is None
    assert any("cannot record the start of a" in r.getMessage() for r in caplog.records)


async def test_a_fenced_copy_dials_nobody() -> None:
    # s15-review2: the fence emptied the links' queues but left them running: the copy went on
    # dialing every peer, and a peer that never heard the later start (c) recorded the copy's
    # forked start, durably, from its hellos.
    b, _ = member("b", LATER, records={("a", INC): (2, B)})
    c_saves: list[tuple[Records, int]] = []
    c, _ = member("c", FIRST, saves=c_saves)
    dials: list[str] = []

    async def connector(host: str, port: int) -> trio.abc.Stream:
        dials.append(f"{host}:{port}")
        return await trio.open_tcp_stream(host, port)

    copy, _ = make_transport("a", incarnation=INC, connector=connector)
    copy.start = COPY
    async with open_transport(b), open_transport(c), open_transport(copy):
        b.set_peer_addresses({"a": "127.0.0.1:1"})
        c.set_peer_addresses({"a": "127.0.0.1:1"})
        dial(copy, b, ctx=1)
        await wait_until(lambda: copy.fenced is not None, timeout=20)
        dialed = len(dials)
        copy.set_peer_addresses({"b": addr(b), "c": addr(c)})  # c listed after the fence
        # c dials the copy and is refused: by then the copy's own link to c (if it ran) had
        # long connected.
        dial(c, copy, ctx=2)
        await wait_until(lambda: copy.statistics().rejected_connections > 0, timeout=20)
        assert len(dials) == dialed
        assert all(link._closed for link in copy._links.values())
    assert c.start_book.records() == {} and c_saves == []


async def test_forged_hellos_cost_a_bounded_number_of_synced_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # s15-review2: a forger under a listed member's id (plaintext: hellos are not
    # authenticated) named a higher start in each hello: each one moved the record, so each
    # cost b one fsync in the log env, under its write lock, beside the log's own commits. Now
    # a record moves at most once per start_record_interval per id; a faster hello is refused
    # with 1013 (try again), the book as it was, one WARNING for them all.
    caplog.set_level(logging.DEBUG, logger="univrs.net")
    saves: list[tuple[Records, int]] = []
    b, b_inbox = member("b", LATER, saves=saves)
    b.settings = attrs.evolve(b.settings, start_record_interval=3600.0)
    async with open_transport(b):
        b.set_peer_addresses({"a": "127.0.0.1:1"})
        start = FIRST
        for n in range(20):
            start = start.following(f"{n:016x}")
            forger, _ = member("a", start)
            refused = b.statistics().rejected_connections
            async with open_transport(forger):
                dial(forger, b, ctx=n)
                if n == 0:
                    assert await receive(b_inbox) == heartbeat("a", "b", ctx=0)
                else:  # refused, or (without the bound) recorded again

                    def answered(before: int = refused) -> bool:
                        return b.statistics().rejected_connections > before or len(saves) > 1

                    await wait_until(answered, timeout=20)
                    assert len(saves) == 1
        assert b.start_book.recorded("a", INC) == (2, "0" * 16)  # the first forger's only
        assert b_inbox.statistics().current_buffer_used == 0  # nothing of the refused ones
    assert len(saves) == 1
    lines = [
        r
        for r in caplog.records
        if r.getMessage().startswith("closing raft connection") and "was recorded" in r.getMessage()
    ]
    assert len(lines) >= 19 and [r.levelno for r in lines].count(logging.WARNING) == 1


async def test_a_member_restarted_within_the_interval_is_delivered_after_its_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A legitimate restart sooner than start_record_interval after the last record move is
    # only delayed: refused with 1013, its link redials with backoff and is delivered once
    # the interval has passed (one synced write per move); one WARNING on each side.
    caplog.set_level(logging.DEBUG, logger="univrs.net")
    saves: list[tuple[Records, int]] = []
    b, b_inbox = member("b", LATER, saves=saves)
    b.settings = attrs.evolve(b.settings, start_record_interval=0.5)
    first, _ = member("a", FIRST)
    again, _ = member("a", LATER)
    async with open_transport(b):
        b.set_peer_addresses({"a": "127.0.0.1:1"})
        async with open_transport(first):
            dial(first, b, ctx=1)
            assert await receive(b_inbox) == heartbeat("a", "b", ctx=1)
        async with open_transport(again):
            dial(again, b, ctx=2)
            await wait_until(lambda: b.statistics().rejected_connections >= 1, timeout=20)
            await wait_until(lambda: b.start_book.recorded("a", INC) == (2, B), timeout=20)
            # ctx=2 went with a refused session; the one the record moved for delivers.
            again.send(heartbeat("a", "b", ctx=3))
            assert await receive(b_inbox, timeout=20) == heartbeat("a", "b", ctx=3)
    assert [records for records, _ in saves] == [{("a", INC): (1, A)}, {("a", INC): (2, B)}]
    refusals = [r for r in caplog.records if "was recorded less than" in r.getMessage()]
    assert len(refusals) >= 2  # refused and logged on both sides
    assert [r.levelno for r in refusals].count(logging.WARNING) == 2
