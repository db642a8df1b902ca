"""Red-team attacks on the raft listener of a real insecure (plaintext) 3-node cluster.

An attacker who reaches the raft port and speaks the project's own hello and codec, but holds
no member's data dir (so it does not know any member's incarnation), must not be able to
change committed data, kick members off their links or make a node grow without bound.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib

import cbor2
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.api.helpers import open_cluster, wait_until
from univrs.codec import encode_message
from univrs.net.hello import WIRE_VERSION, Hello, encode_hello
from univrs.net.transport import MAX_UNLISTED_PEERS
from univrs.raft.messages import AppendEntries, Entry, Heartbeat, Message
from univrs.runtime.payload import encode_payload
from univrs.server.node import Node
from univrs.sm.commands import Envelope, MintCredits
from univrs.sm.snapshot import state_digest

NEWEST = 2**63 - 1  # the largest configuration index a hello may claim


async def send_forged(node: Node, hello: Hello, msgs: list[Message], linger: float = 0.5) -> bool:
    """Dial ``node``'s raft port, send ``hello`` and ``msgs``, wait up to ``linger`` seconds
    for the node to close; True if all were sent before the node closed the connection."""
    async with open_websocket_url(f"ws://127.0.0.1:{node.raft_port}/raft") as ws:
        await ws.send_message(encode_hello(hello))
        for m in msgs:
            try:
                await ws.send_message(encode_message(m))
            except ConnectionClosed:
                return False
        with trio.move_on_after(linger):
            try:
                await ws.get_message()  # the node answers nothing: wait for a close, briefly
            except ConnectionClosed:
                return False
    return True


async def test_a_hello_claiming_a_newer_binding_does_not_make_a_stranger_the_leader(
    tmp_path: pathlib.Path,
) -> None:
    """The hello's ``bound``/``cfg`` keys are the sender's say-so: a made-up incarnation of
    the leader's id that claims the newest configuration must not have its AppendEntries
    taken as the leader's (it appended and committed a forged credit mint)."""
    async with open_cluster(tmp_path, 3) as cluster:
        leader = await cluster.wait_bound_leader()
        target = cluster.followers()[0]
        await wait_until(
            lambda: target.runtime.applied_index >= leader.runtime.applied_index, "catch-up"
        )
        before = target.status()
        payload = encode_payload(
            Envelope(command=MintCredits(to_peer="mallory", amount=1_000_000, reason="x")), 1
        )
        last = before.last_index
        forged = AppendEntries(
            term=before.term,
            src=leader.node_id,
            dst=target.node_id,
            prev_log_index=last,
            prev_log_term=before.last_term,
            entries=(Entry(term=before.term, index=last + 1, data=payload),),
            commit=last + 1,
        )
        hello = Hello(
            version=WIRE_VERSION,
            cluster=target.cluster_id,
            src=leader.node_id,
            dst=target.node_id,
            incarnation="feedfacefeedface",
            addr="127.0.0.1:9",
            config_index=NEWEST,
            bound=True,
        )
        rejected = target.transport.statistics().rejected_connections
        refused = target.status().refused_messages

        def outcome() -> bool:
            return (
                target.runtime.sm.balance("mallory") > 0
                or target.transport.statistics().rejected_connections > rejected
                or target.status().refused_messages > refused
            )

        # The hello under the leader's own id replaces the leader's connection, and the
        # leader's redial replaces the forger's in turn: the forged append can be dropped
        # unread with its connection. The forger sends again until the node judged it.
        deadline = trio.current_time() + 60.0
        while not outcome():
            assert trio.current_time() < deadline, "the forgery was never taken or refused"
            await send_forged(target, hello, [forged])
            with trio.move_on_after(1.0):
                await wait_until(outcome, "the forgery to be taken or refused")
        assert target.runtime.sm.balance("mallory") == 0
        assert target.status().refused_messages > refused
        # The cluster still commits, and the target agrees with the leader.
        r = await cluster.http(
            leader, "POST", "/v1/credits/mint", {"to_peer": "alice", "amount": 5, "reason": "t"}
        )
        assert r.status in (200, 201), r.body
        # Equal states once both applied the write (the target may apply it before the
        # leader's apply loop published its own applied index: comparing at target >= leader
        # caught the leader one entry behind).
        await wait_until(
            lambda: (
                target.runtime.sm.balance("alice") == 5
                and state_digest(target.runtime.sm) == state_digest(leader.runtime.sm)
            ),
            "the write on the target, and the target to agree with the leader",
        )
        assert target.runtime.sm.balance("mallory") == 0


async def test_made_up_peers_and_garbage_are_bounded_in_memory_and_in_the_log(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hellos under many made-up node ids (valid cluster id: it is no secret) and frames of
    garbage: the node keeps per-peer state for a bounded number of unlisted ids, logs each
    kind of refusal from one host once at WARNING (then DEBUG), and keeps its leader."""
    caplog.set_level(logging.WARNING, logger="univrs.net")
    # The attacker runs in the nodes' own process and event loop: at the default 300 ms
    # election timeout, its CPU alone (on 2 shared cores) could make a follower time out,
    # which says nothing about the forged traffic. Generous timeouts keep "the leader stays"
    # about what the node does with that traffic (a forged term would still change it).
    slow = {"heartbeat_interval_ms": 300, "election_timeout_min_ms": 3000}
    async with open_cluster(tmp_path, 3, election_timeout_max_ms=4000, **slow) as cluster:
        leader = await cluster.wait_bound_leader()
        target = cluster.followers()[0]
        term = target.status().term
        cid = target.cluster_id
        url = f"ws://127.0.0.1:{target.raft_port}/raft"
        made_up = 2 * MAX_UNLISTED_PEERS + 10
        for i in range(made_up):
            hello = Hello(
                version=WIRE_VERSION,
                cluster=cid,
                src=f"mallory-{i}",
                dst=target.node_id,
                incarnation=f"{i:016x}",
                addr=f"127.0.0.1:{1000 + i}",
            )
            hb = Heartbeat(term=term, src=f"mallory-{i}", dst=target.node_id, commit=0)
            await send_forged(target, hello, [hb], linger=0.01)
        for garbage in (b"\xff", b"\x00" * 10, cbor2.dumps({"hello": 1}), b"\x9b" + b"\xff" * 8):
            for _ in range(10):
                async with open_websocket_url(url) as ws:
                    await ws.send_message(garbage)
                    with trio.move_on_after(2), contextlib.suppress(ConnectionClosed):
                        await ws.get_message()

        # Connections that never finish the websocket handshake (5 s each, at once), and
        # websocket connections to a path nobody serves.
        idle_ports: set[int] = set()

        async def idle() -> None:
            assert target.raft_port is not None
            stream = await trio.open_tcp_stream("127.0.0.1", target.raft_port)
            idle_ports.add(stream.socket.getsockname()[1])
            with trio.fail_after(30):
                while await stream.receive_some(100):
                    pass  # the node closes it after its handshake_timeout

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(idle)
        for _ in range(10):
            with contextlib.suppress(Exception):
                async with open_websocket_url(f"ws://127.0.0.1:{target.raft_port}/nope"):
                    pass
        transport = target.transport
        unlisted = {p.id for p in transport.statistics().peers} - set(cluster.nodes)
        assert len(unlisted) <= MAX_UNLISTED_PEERS + 1  # + the entry source
        assert len(transport.peer_incarnations()) <= 3 + MAX_UNLISTED_PEERS
        # A refused stranger's advertised address is never dialed.
        assert set(transport.peer_addresses()) <= set(cluster.nodes)
        assert not [w for w in caplog.messages if "cannot reach mallory" in w]
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        garbage_lines = [w for w in warnings if "unknown node" in w]
        assert len(garbage_lines) <= 2, garbage_lines
        stranger_lines = [w for w in warnings if "mallory-" in w]
        assert len(stranger_lines) <= 2, stranger_lines
        # Only the probes' own connections count: on a loaded machine a real member's dial to
        # another member can miss its handshake deadline too (another server, its own line).
        mine = [w for w in warnings if any(f":{port}:" in w for port in idle_ports)]
        lines = [w for w in mine if "no websocket handshake" in w]
        assert len(lines) == 1, (lines, warnings)
        lines = [w for w in warnings if "unknown path" in w]
        assert len(lines) == 1, lines
        assert await cluster.wait_leader() is leader
        assert target.status().term == term and target.status().leader == leader.node_id


async def test_a_leaderless_member_refuses_leader_traffic_from_a_made_up_id(
    tmp_path: pathlib.Path,
) -> None:
    """Plaintext, a member that follows no live leader (its leader and the third member are
    gone): an AppendEntries from a made-up id that appends and commits a credit mint used to
    be taken (the window in which a member hears an unlisted leader); now it is refused
    (``stranger``) and the node's log and state do not move."""
    async with open_cluster(tmp_path, 3) as cluster:
        leader = await cluster.wait_bound_leader()
        target = cluster.followers()[0]
        await wait_until(
            lambda: target.runtime.applied_index >= leader.runtime.applied_index, "catch-up"
        )
        for other in [n.node_id for n in cluster.running() if n is not target]:
            await cluster.kill(other)
        await wait_until(lambda: target.status().leader is None, "the target to follow no one")
        before = target.status()
        term = before.term + 1
        last = before.last_index
        payload = encode_payload(
            Envelope(command=MintCredits(to_peer="mallory", amount=1_000_000, reason="x")), 1
        )
        forged = AppendEntries(
            term=term,
            src="mallory-node",
            dst=target.node_id,
            prev_log_index=last,
            prev_log_term=before.last_term,
            entries=(Entry(term=term, index=last + 1, data=payload),),
            commit=last + 1,
        )
        hello = Hello(
            version=WIRE_VERSION,
            cluster=target.cluster_id,
            src="mallory-node",
            dst=target.node_id,
            incarnation="feedfacefeedface",
            addr="127.0.0.1:9",
        )
        refused = dict(target.status().refused).get("stranger", 0)
        await send_forged(target, hello, [forged])

        def outcome() -> bool:
            return (
                target.runtime.sm.balance("mallory") > 0
                or target.status().last_index > last
                or dict(target.status().refused).get("stranger", 0) > refused
            )

        await wait_until(outcome, "the forgery to be taken or refused")
        assert target.runtime.sm.balance("mallory") == 0
        assert target.status().last_index == last
        assert target.status().leader != "mallory-node"
        assert dict(target.status().refused).get("stranger", 0) > refused
