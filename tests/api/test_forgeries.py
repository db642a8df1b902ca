"""Forgeries against a real insecure (plaintext) 3-node cluster (issue 12, "Done when").

An attacker who only reaches the raft port and speaks the project's own codec (the hello of
univrs/net/hello.py, then frames of univrs/codec/) tries what wiped or corrupted clusters
before: an InstallSnapshot from a made-up peer carrying an empty state, a garbage snapshot
(valid CBOR, not a state machine) under the real leader's id and incarnation, an
AppendEntries committing a credit mint from a made-up peer and from the leader's id with
another incarnation, and a RequestVote and a TimeoutNow at term 2^64-1. Every one is refused
(the other incarnation at the handshake, the rest by the follower's core, counted by reason);
the cluster keeps its data, its leader and its term, and still commits. (Without TLS, an
attacker who copies a member's id *and* incarnation from the clear-text hellos is that
member as far as the cluster can tell: docs/security.md.)
"""

from __future__ import annotations

import json
import logging
import pathlib
import zlib

import cbor2
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.api.helpers import WAIT, WORKLOAD, open_cluster, wait_until
from univrs.codec import encode_message
from univrs.net.hello import WIRE_VERSION, Hello, encode_hello
from univrs.raft.messages import (
    AppendEntries,
    Entry,
    InstallSnapshot,
    Message,
    RequestVote,
    SnapshotMeta,
    TimeoutNow,
)
from univrs.raft.starts import Start
from univrs.runtime.payload import encode_payload
from univrs.runtime.snapshots import capture
from univrs.server.node import Node
from univrs.sm.commands import Envelope, MintCredits
from univrs.sm.snapshot import state_digest
from univrs.sm.state import ClusterStateMachine

TOP = (1 << 64) - 1  # the largest term that encodes


async def send_forged(node: Node, cluster_id: str, hello: Hello, msgs: list[Message]) -> None:
    """Dial ``node``'s raft port as ``hello`` says and send ``msgs``; wait until the node
    closed or read everything (it answers nothing an attacker could wait on)."""
    async with open_websocket_url(f"ws://127.0.0.1:{node.raft_port}/raft") as ws:
        await ws.send_message(encode_hello(hello))
        for m in msgs:
            try:
                await ws.send_message(encode_message(m))
            except ConnectionClosed:
                return


async def send_until_refused(
    node: Node, cluster_id: str, hello: Hello, msgs: list[Message], reason: str, count: int
) -> None:
    """``send_forged`` again until ``node`` counted ``count`` refusals for ``reason``.

    A hello under a live member's own id replaces that member's connection (a redial), and
    the member's own redial replaces the forger's in turn: a forged connection can be closed
    before the node read its messages. The forger simply sends again (bounded)."""

    def counted() -> bool:
        return dict(node.status().refused).get(reason, 0) >= count

    deadline = trio.current_time() + WAIT
    while not counted():
        if trio.current_time() >= deadline:
            raise AssertionError(f"no {reason} refusal counted (got {node.status().refused})")
        await send_forged(node, cluster_id, hello, msgs)
        with trio.move_on_after(1.0):  # this connection's turn; then the forger sends again
            while not counted():
                await trio.sleep(0.01)


def hello(
    cluster_id: str, src: str, dst: str, incarnation: str, start: Start | None = None
) -> Hello:
    """A forged hello. Under a member's id and incarnation the forger copies the member's
    start too (plaintext: every hello shows it), or the transport refuses it as an older copy
    of that data dir (s15-start) before the core can show what it refuses."""
    return Hello(
        version=WIRE_VERSION,
        cluster=cluster_id,
        src=src,
        dst=dst,
        incarnation=incarnation,
        start=start,
    )


async def test_every_forgery_is_refused_and_the_cluster_keeps_data_leader_and_term(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="univrs.node")
    async with open_cluster(tmp_path, 3) as cluster:
        leader = await cluster.wait_bound_leader()
        r = await cluster.http(leader, "POST", "/v1/workloads", {"id": "web", "spec": WORKLOAD})
        assert r.status in (200, 201), r.body
        mint = {"to_peer": "alice", "amount": 10, "reason": "test"}
        r = await cluster.http(leader, "POST", "/v1/credits/mint", mint)
        assert r.status in (200, 201), r.body
        target = cluster.followers()[0]
        await wait_until(
            lambda: target.runtime.applied_index >= leader.runtime.applied_index, "catch-up"
        )
        before = target.status()
        digest = state_digest(target.runtime.sm)
        cid = target.cluster_id
        lid, tid = leader.node_id, target.node_id
        linc = leader.storage.incarnation
        as_leader = hello(cid, lid, tid, linc, leader.transport.start)
        m = before.membership

        # 1. An empty state machine as a snapshot, from a made-up peer.
        empty = capture(ClusterStateMachine())()
        meta = SnapshotMeta(index=before.commit + 1000, term=before.term + 1, membership=m)
        wipe = InstallSnapshot(
            term=before.term + 1,
            src="mallory",
            dst=tid,
            meta=meta,
            offset=0,
            data=empty,
            done=True,
            total_size=len(empty),
            checksum=zlib.crc32(empty),
        )
        await send_forged(target, cid, hello(cid, "mallory", tid, "0123456789abcdef"), [wipe])

        # 2. Garbage (valid CBOR, no state machine) under the leader's own id and incarnation.
        garbage = cbor2.dumps({"format": "univrs-snapshot", "version": 1, "workloads": 7})
        meta2 = SnapshotMeta(index=before.commit + 1000, term=before.term, membership=m)
        bad = InstallSnapshot(
            term=before.term,
            src=lid,
            dst=tid,
            meta=meta2,
            offset=0,
            data=garbage,
            done=True,
            total_size=len(garbage),
            checksum=zlib.crc32(garbage),
        )
        await send_until_refused(
            target,
            cid,
            as_leader,
            [bad],
            "snapshot_data",
            1,
        )

        # 2b. A snapshot announcing 1 TiB under the leader's id: refused before a byte is held.
        huge = InstallSnapshot(
            term=before.term,
            src=lid,
            dst=tid,
            meta=meta2,
            offset=0,
            data=b"x" * 1024,
            done=False,
            total_size=1 << 40,
            checksum=0,
        )
        await send_until_refused(
            target,
            cid,
            as_leader,
            [huge],
            "snapshot_size",
            1,
        )

        # 3. A mint of 1,000,000 credits, appended and committed, from a made-up peer and from
        # the leader's id with another incarnation claiming a newer binding.
        payload = encode_payload(
            Envelope(command=MintCredits(to_peer="mallory", amount=1_000_000, reason="x")), 1
        )

        def mint_at(term: int, src: str) -> AppendEntries:
            last = before.last_index
            return AppendEntries(
                term=term,
                src=src,
                dst=tid,
                prev_log_index=last,
                prev_log_term=before.last_term,
                entries=(Entry(term=term, index=last + 1, data=payload),),
                commit=last + 1,
            )

        await send_forged(
            target,
            cid,
            hello(cid, "mallory", tid, "0123456789abcdef"),
            [mint_at(before.term + 1, "mallory")],
        )
        rejected = target.transport.statistics().rejected_connections
        stranger = hello(cid, lid, tid, "feedfacefeedface")  # the leader's id, not its data dir
        await send_forged(target, cid, stranger, [mint_at(before.term, lid)])
        await wait_until(
            lambda: target.transport.statistics().rejected_connections > rejected,
            "the handshake of another incarnation of the leader to be refused",
        )

        # 4. Terms that do not fit: a vote request and a TimeoutNow at 2^64-1, from a member.
        other = next(n for n in sorted(m.voters) if n not in (lid, tid))
        oinc = m.incarnation_of(other)
        assert oinc is not None
        top = [
            RequestVote(term=TOP, src=other, dst=tid, last_log_index=TOP, last_log_term=TOP),
            TimeoutNow(term=TOP, src=other, dst=tid),
        ]
        ostart = cluster.nodes[other].transport.start
        await send_forged(target, cid, hello(cid, other, tid, oinc, ostart), top)

        reasons = {"stranger": 2, "snapshot_data": 1, "snapshot_size": 1, "term": 2}

        def counted() -> bool:
            got = dict(target.status().refused)
            return all(got.get(k, 0) >= n for k, n in reasons.items())

        await wait_until(counted, f"the refusals {reasons} (got {target.status().refused})")
        after = target.status()
        assert (after.term, after.leader) == (before.term, lid)
        assert state_digest(target.runtime.sm) == digest
        assert await cluster.wait_leader() is leader and leader.status().term == before.term
        # The cluster still commits, on the target too, and agrees on the state.
        r = await cluster.http(leader, "POST", "/v1/credits/mint", {**mint, "amount": 5})
        assert r.status in (200, 201), r.body
        await wait_until(
            lambda: target.runtime.applied_index >= leader.runtime.applied_index, "the new write"
        )
        assert state_digest(target.runtime.sm) == state_digest(leader.runtime.sm)
        assert target.runtime.sm.balance("mallory") == 0
        with trio.fail_after(5):
            assert target.status().role.value == "follower"
        # Visible in the node's status (which never shows the cluster id itself), logged once
        # per reason.
        r = await cluster.http(target, "GET", "/v1/node/status")
        assert r.status == 200 and r.body["refused"]["stranger"] >= 2
        assert "cluster_id" not in r.body and cid not in json.dumps(r.body)
        await wait_until(
            lambda: sum("refused raft messages" in m for m in caplog.messages) >= len(reasons),
            "the logs",
        )
        lines = [m for m in caplog.messages if "refused raft messages" in m]
        assert len(lines) == len(reasons), lines  # once per reason, whatever the count
