"""A seeded fuzzer of the raft port of a real plaintext 3-node cluster (s16-fuzz).

What a forged peer checker would send to ``/raft`` from any process that reaches the port:
hellos with mutated fields (every key given a value of a wrong type, huge and negative
integers, tags, unknown and missing keys, duplicated keys, indefinite-length items), and,
after a valid hello under a made-up id, under a member's id without an incarnation and under a
member's id with a made-up one, frames of every raft message type whose fields are drawn from
the edges (terms at ``MAX_TERM`` and 2^64-1, indexes around the log's end, zero) or replaced
by values of the wrong type; batch frames; the same frames with raw damage (a byte changed,
cut short, trailing bytes, an indefinite-length or tag head put in); random bytes; frames
over the size limit; text frames. Requests go to a follower and to the leader.

Nothing may be logged at ERROR (an escaped exception), no node may change its term or leader
or apply anything but the test's own writes (the forged senders never hold a member's
incarnation), and every node must still answer and commit a write afterwards.
``UNIVRS_FUZZ_ROUNDS=N`` sets the frames per sender and node (default 60),
``UNIVRS_FUZZ_SEED`` the seed (default 16).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import random
from typing import Any

import cbor2
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.api.helpers import WORKLOAD, open_cluster, wait_until
from univrs.codec.messages import BATCH_TAG, WIRE_VERSION, encode_batch, message_fields
from univrs.net.hello import WIRE_VERSION as HELLO_VERSION
from univrs.net.hello import Hello, encode_hello
from univrs.raft import messages as m
from univrs.raft.gate import MAX_TERM
from univrs.raft.starts import Start
from univrs.sm.snapshot import state_digest

ROUNDS = int(os.environ.get("UNIVRS_FUZZ_ROUNDS", "60"))
SEED = int(os.environ.get("UNIVRS_FUZZ_SEED", "16"))
TYPES = (
    m.AppendEntries, m.AppendEntriesResponse, m.Heartbeat, m.HeartbeatResponse,
    m.InstallSnapshot, m.InstallSnapshotResponse, m.ReadIndexRequest, m.ReadIndexResponse,
    m.RequestVote, m.RequestVoteResponse, m.TimeoutNow,
)  # fmt: skip
EDGE_INTS = (0, 1, 2, 3, MAX_TERM - 1, MAX_TERM, MAX_TERM + 1, 2**63 - 1, 2**64 - 1)


def hostile(rng: random.Random, depth: int = 0) -> Any:
    """A value of a wrong type or shape for any field."""
    c = rng.randrange(12)
    if c == 0:
        return None
    if c == 1:
        return rng.choice([True, False])
    if c == 2:
        return rng.choice([-1, -(2**64), 2**64, 2**200])  # negative, or a bignum (a tag)
    if c == 3:
        return rng.choice([float("nan"), float("inf"), 0.5])
    if c == 4:
        return rng.choice(["", "\x00", "x" * 5000, "\u202e", "n1"])
    if c == 5:
        return rng.choice([b"", b"\x00" * 64, b"y" * 100_000])
    if c == 6 and depth < 3:
        return [hostile(rng, depth + 1) for _ in range(rng.randrange(4))]
    if c == 7 and depth < 3:
        return {rng.choice(["a", 1, b"k"]): hostile(rng, depth + 1) for _ in range(2)}
    if c == 8:
        return cbor2.CBORTag(rng.choice([0, 1, 24, 258, 55799]), rng.choice([1, "x", b"\x01"]))
    if c == 9:
        return cbor2.CBORSimpleValue(rng.choice([0, 19, 32, 255]))
    if c == 10:
        return list(range(rng.choice([300, 20_000])))
    return cbor2.undefined


class Forger:
    """Builds forged frames for ``dst`` from ``src`` around the log position it is told."""

    def __init__(self, rng: random.Random, src: str, dst: str, term: int, last: int) -> None:
        self.rng, self.src, self.dst, self.term, self.last = rng, src, dst, term, last
        # While True: only frames that decode (fields of the right types, at the edges), so
        # that whole connections of them reach the core instead of the first bad frame
        # closing the connection.
        self.clean = False

    def uint(self) -> int:
        rng = self.rng
        return rng.choice(
            [*EDGE_INTS, self.term, self.term + 1, self.last, self.last + 1, self.last - 1]
        )

    def value(self, kind: str) -> Any:
        rng = self.rng
        if not self.clean and rng.random() < 0.2:
            return hostile(rng)
        if kind == "uint":
            return max(0, self.uint())
        if kind in ("str", "tail_str"):
            return rng.choice([self.src, self.dst, "n1", "mallory"])
        if kind == "bool":
            return rng.choice([True, False])
        if kind == "bytes":
            return rng.choice([b"", b"\x00garbage", cbor2.dumps({"workloads": 7})])
        if kind == "entries":
            return [
                [
                    max(1, self.uint()),
                    max(1, self.last + 1 + i),
                    rng.choice([0, 1, 2, 2 if self.clean else 3]),
                    b"x",
                ]
                if self.clean or rng.random() < 0.8
                else hostile(rng)
                for i in range(rng.choice([0, 1, 2, 600]))
            ]
        # snapshot_meta: [index, term, membership]
        voters = rng.choice([["n1", "n2", "n3"], [], ["mallory"]])
        return [self.uint(), self.uint(), [voters, [], [], []]]

    def message(self) -> bytes:
        """One message frame (or a batch of a few) with fields drawn or damaged."""
        rng = self.rng
        if rng.random() < 0.15:
            return encode_batch([cbor2.dumps(self._message_items()) for _ in range(3)])
        frame = cbor2.dumps(self._message_items())
        return self.damage(frame) if not self.clean and rng.random() < 0.3 else frame

    def _message_items(self) -> list[Any]:
        rng = self.rng
        cls = rng.choice(TYPES)
        tag, fields = message_fields(cls)
        items: list[Any] = [WIRE_VERSION, tag]
        for name, kind in fields:
            items.append(
                self.src if name == "src" else self.dst if name == "dst" else self.value(kind)
            )
        c = 9 if self.clean else rng.randrange(10)
        if c == 0:
            items.append(hostile(rng))  # an extra field
        elif c == 1:
            items.pop()  # a missing one
        elif c == 2:
            items[0] = rng.choice([0, 2, "1", 2**64 - 1])  # another layout version
        elif c == 3:
            items[1] = rng.choice([0, 12, 99, BATCH_TAG, -1, "3"])  # an unknown type
        return items

    def damage(self, frame: bytes) -> bytes:
        rng = self.rng
        b = bytearray(frame)
        op = rng.randrange(6)
        if op == 0:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            del b[rng.randrange(1, len(b)) :]
        elif op == 2:
            b += rng.randbytes(rng.randrange(1, 9))
        elif op == 3:
            b.insert(rng.randrange(len(b)), rng.choice([0x9F, 0xBF, 0x5F, 0x7F, 0xC2, 0xD9, 0xFF]))
        elif op == 4:
            b[0] = 0x9F  # the frame as an indefinite-length array
            b.append(0xFF)
        else:
            b = bytearray(b"\xa2\x61a\x01\x61a\x02") + b  # a map with a duplicated key
        return bytes(b)

    def hello(self, incarnation: str | None, cluster: str, start: Start | None = None) -> bytes:
        frame = encode_hello(
            Hello(
                version=HELLO_VERSION,
                cluster=cluster,
                src=self.src,
                dst=self.dst,
                incarnation=incarnation,
                addr="127.0.0.1:9",
                start=start,
            )
        )
        if self.clean or self.rng.random() < 0.5:
            return frame
        doc = cbor2.loads(frame)
        key = self.rng.choice([*doc, "cfg", "bound", "start", "seen", "hold", "x"])
        doc[key] = hostile(self.rng)
        with contextlib.suppress(Exception):
            return cbor2.dumps(doc)
        return frame


async def attack(port: int, hello: bytes, frames: list[bytes | str]) -> None:
    """Dial ``port``, send ``hello`` then ``frames`` until the node closes the connection."""
    with trio.fail_after(30):  # the node answers or closes: never a hang
        try:
            async with open_websocket_url(
                f"ws://127.0.0.1:{port}/raft", message_queue_size=4, max_message_size=1 << 24
            ) as ws:
                await ws.send_message(hello)
                for frame in frames:
                    await ws.send_message(frame)
                with trio.move_on_after(0.2):
                    while True:
                        await ws.get_message()
        except (ConnectionClosed, OSError):
            pass
        except Exception as exc:  # the handshake refused (HTTP error status)
            if "Handshake" not in type(exc).__name__:
                raise


async def test_forged_peers_never_harm_the_cluster(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(SEED)
    # Generous timeouts: the attacker shares the nodes' event loop and 2 busy cores, so
    # "no one changes term or leader" stays about the forged traffic, not about CPU.
    slow = {"heartbeat_interval_ms": 300, "election_timeout_min_ms": 3000}
    async with open_cluster(tmp_path, 3, election_timeout_max_ms=4000, **slow) as cluster:
        leader = await cluster.wait_bound_leader()
        r = await cluster.http(leader, "POST", "/v1/workloads", {"id": "web", "spec": WORKLOAD})
        assert r.status in (200, 201), r.body
        target = cluster.followers()[0]
        await wait_until(
            lambda: target.runtime.applied_index >= leader.runtime.applied_index, "catch-up"
        )
        terms = {n.node_id: n.status().term for n in cluster.running()}
        sent = 0
        for node in (target, leader):
            assert node.raft_port is not None
            status = node.status()
            other = next(n for n in cluster.running() if n is not node).node_id
            senders = [("mallory", "feedfacefeedface"), (other, None), (other, "0123456789abcdef")]
            for src, incarnation in senders:
                forger = Forger(rng, src, node.node_id, status.term, status.last_index)
                for i in range(max(1, ROUNDS // 10)):  # ten frames a connection
                    forger.clean = i % 2 == 0
                    frames: list[bytes | str] = [forger.message() for _ in range(10)]
                    if not forger.clean and rng.random() < 0.2:
                        odd: bytes | str = "text" if rng.random() < 0.5 else rng.randbytes(64)
                        frames.insert(rng.randrange(11), odd)
                    if not forger.clean and rng.random() < 0.05:
                        frames.append(b"\x82\x01\x05" + b"\x00" * (5 << 20))  # over 4 MiB
                    hello = forger.hello(incarnation, node.cluster_id)
                    await attack(node.raft_port, hello, frames)
                    sent += len(frames)
        assert sent >= 6 * ROUNDS
        # Frames reached the cores (they decoded) and were refused there, not only at the codec.
        assert sum(dict(target.status().refused).values()) > 0

        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
        assert await cluster.wait_leader() is leader
        for n in cluster.running():
            assert n.status().term == terms[n.node_id], n.node_id
            assert n.status().leader == leader.node_id
        # Still serving: a write commits and reaches every node.
        r = await cluster.http(
            leader, "POST", "/v1/credits/mint", {"to_peer": "a", "amount": 1, "reason": "x"}
        )
        assert r.status in (200, 201), r.body
        await wait_until(
            lambda: all(n.runtime.sm.balance("a") == 1 for n in cluster.running()), "the write"
        )
        # No node diverged: at one applied index every node holds the same state (read with
        # no checkpoint in between, so nothing applies meanwhile), and no forged mint landed.
        await wait_until(
            lambda: len({n.runtime.applied_index for n in cluster.running()}) == 1, "one index"
        )
        assert len({state_digest(n.runtime.sm) for n in cluster.running()}) == 1
        assert all(n.runtime.sm.balance("mallory") == 0 for n in cluster.running())


async def test_a_peer_with_a_members_credentials_sending_edge_values_crashes_no_node(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames that decode, with fields at the edges (terms at ``MAX_TERM`` and 2^64-1,
    indexes and commits at 0, past the log's end and at 2^64-1), under the leader's own id and
    incarnation (what a buggy or compromised member, or without TLS a sniffer, can send): they
    may disturb the cluster (that is impersonation, docs/security.md), but no node may raise
    (nothing logged at ERROR), and the cluster must still agree and commit afterwards."""
    caplog.set_level(logging.WARNING)
    rng = random.Random(SEED + 1)
    async with open_cluster(tmp_path, 3) as cluster:
        leader = await cluster.wait_bound_leader()
        r = await cluster.http(leader, "POST", "/v1/workloads", {"id": "web", "spec": WORKLOAD})
        assert r.status in (200, 201), r.body
        target = cluster.followers()[0]
        assert target.raft_port is not None
        status = target.status()
        forger = Forger(rng, leader.node_id, target.node_id, status.term, status.last_index)
        forger.clean = True
        incarnation = leader.storage.incarnation
        for _ in range(max(1, ROUNDS // 10)):
            hello = forger.hello(incarnation, target.cluster_id, leader.transport.start)
            await attack(target.raft_port, hello, [forger.message() for _ in range(10)])

        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
        await cluster.wait_leader()

        async def write() -> bool:
            now = await cluster.wait_leader()
            mint = {"to_peer": "a", "amount": 1, "reason": "x"}
            r = await cluster.http(now, "POST", "/v1/credits/mint", mint)
            return r.status in (200, 201)

        with trio.fail_after(60):
            while not await write():
                await trio.sleep(0.2)
        await wait_until(
            lambda: len({n.runtime.applied_index for n in cluster.running()}) == 1, "one index"
        )
        assert len({state_digest(n.runtime.sm) for n in cluster.running()}) == 1
