"""s26-fuzz: frames shaped for the paths sessions 16 to 22 made (a frame of writes served by the
reader, a frame of reads of one consistency served inline, a frame of writes beside reads, a
bad request or a watch poll), with hostile arguments and repeated request ids, on the leader
and on a follower, over one connection that pipelines many frames.

Every request is answered exactly once: as many answers carry an id as requests carried it
(a duplicate id is two requests, answered twice; never an answer for an id not sent, never one
lost or doubled), never with ``internal``, nothing is logged at ERROR, and the node still
commits a write after. Seeded (``UNIVRS_FUZZ_SEED``, ``UNIVRS_FUZZ_ROUNDS``)."""

from __future__ import annotations

import collections
import logging
import os
import pathlib
import random
from typing import Any

import cbor2
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.api.helpers import Cluster, open_cluster
from tests.api.test_fuzz_surfaces import bug_records, fast_request, hostile
from univrs.api.inline_reads import READ_OPS
from univrs.api.service import WRITE_OPS

SEED = int(os.environ.get("UNIVRS_FUZZ_SEED", "26"))
ROUNDS = int(os.environ.get("UNIVRS_FUZZ_ROUNDS", "6"))
FRAMES = 12  # frames pipelined per connection per round
ANSWER_WITHIN = 40.0

WRITES = sorted(WRITE_OPS)
READS = sorted(READ_OPS)


def _of(rng: random.Random, ops: list[str], rid: int) -> dict[str, Any]:
    """A request of one of ``ops`` (arguments as the surface fuzzer makes them)."""
    while True:
        req = fast_request(rng, rid)
        if req["op"] in ops:
            return req


def _frame(rng: random.Random, next_id: int) -> list[Any]:
    shape = rng.randrange(6)
    n = rng.randrange(1, 12)
    if shape == 0:  # writes only: the reader proposes them itself on the leader
        reqs = [_of(rng, WRITES, next_id + i) for i in range(n)]
    elif shape == 1:  # reads of one consistency: inline reads
        how = rng.choice(["local", "linearizable", "lease", None])
        reqs = [_of(rng, READS, next_id + i) for i in range(n)]
        for r in reqs:
            r.pop("consistency", None)
            if how is not None:
                r["consistency"] = how
    elif shape == 2:  # writes beside reads: split
        reqs = [_of(rng, rng.choice([WRITES, READS]), next_id + i) for i in range(n)]
    elif shape == 3:  # anything, with a bad request or a watch poll among them
        reqs = [fast_request(rng, next_id + i) for i in range(n)]
        bad: dict[str, Any] = {"id": next_id + n, "op": hostile(rng), "args": hostile(rng)}
        reqs.insert(rng.randrange(len(reqs) + 1), bad)
        if rng.random() < 0.5:
            poll = {"id": next_id + n + 1, "op": "events.poll", "args": {"wait_ms": 10}}
            reqs.append(poll)
    elif shape == 4:  # the same id again and again, within the frame
        rid = next_id
        reqs = [_of(rng, rng.choice([WRITES, READS]), rid) for _ in range(n)]
    else:  # an empty frame
        reqs = []
    for r in reqs:
        if rng.random() < 0.1:
            r["timeout_ms"] = rng.choice([0, 1, 5])  # deadlines that pass while waiting
    return reqs


async def _round(cluster: Cluster, rng: random.Random, round_: int) -> list[str]:
    problems: list[str] = []
    node = rng.choice(cluster.running())
    frames: list[list[Any]] = []
    next_id = 0
    for _ in range(FRAMES):
        frame = _frame(rng, next_id)
        frames.append(frame)
        next_id += 20
        if rng.random() < 0.2:
            next_id -= 20  # the next frame repeats this one's ids
    sent: collections.Counter[int] = collections.Counter(r["id"] for f in frames for r in f)
    got: collections.Counter[int] = collections.Counter()
    url = f"ws://{cluster.client_address(node)}/client"
    async with open_websocket_url(url, max_message_size=64 * 2**20) as ws:
        await ws.send_message(cbor2.dumps({"univrs": "client", "v": 1}))
        await ws.get_message()
        for frame in frames:
            await ws.send_message(cbor2.dumps(frame))
        with trio.move_on_after(ANSWER_WITHIN):
            while sum(got.values()) < sum(sent.values()):
                data = await ws.get_message()
                assert isinstance(data, bytes)
                for r in cbor2.loads(data)["r"]:
                    got[r["id"]] += 1
                    error = r.get("error") or {}
                    if error.get("code") == "internal":
                        problems.append(f"round {round_}: internal {error}")
        # Anything more would be an answer too many: a ping's pong comes after it.
        await ws.ping(b"end")
        with trio.move_on_after(0.5):
            while True:
                data = await ws.get_message()
                assert isinstance(data, bytes)
                for r in cbor2.loads(data)["r"]:
                    got[r["id"]] += 1
    if got != sent:
        missing = sent - got
        extra = got - sent
        problems.append(f"round {round_} on {node.node_id}: missing {missing}, extra {extra}")
    return problems


@pytest.mark.parametrize("size", [1, 3])
async def test_frames_of_every_shape_are_answered_once_each(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    caplog.set_level(logging.ERROR)
    rng = random.Random(SEED * 10 + size)
    async with open_cluster(tmp_path, size=size) as cluster:
        await cluster.wait_leader()
        problems: list[str] = []
        for round_ in range(ROUNDS):
            problems += await _round(cluster, rng, round_)
        assert not problems, "\n".join(problems[:20])
        assert not bug_records(caplog), bug_records(caplog)[:10]
        leader = await cluster.wait_leader()
        spec = {"spec": {"name": "after", "image": "nginx"}}
        created = await cluster.http(leader, "POST", "/v1/workloads", spec)
        assert created.status == 201, created


async def test_a_frame_that_does_not_decode_is_decoded_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader's tap refuses a frame that does not decode by handing over why, not the
    frame to decode a second time (a hostile frame of 4 MiB costs about 0.35 s of the node's
    loop per decode)."""
    from trio_websocket import ConnectionClosed

    from univrs.client import protocol

    calls = 0
    real = protocol.decode_requests

    def counted(data: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(data, **kw)

    monkeypatch.setattr(protocol, "decode_requests", counted)
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        url = f"ws://{cluster.client_address(node)}/client"
        async with open_websocket_url(url) as ws:
            await ws.send_message(cbor2.dumps({"univrs": "client", "v": 1}))
            await ws.get_message()
            bad = cbor2.dumps([{"id": 1, "op": "x", "args": {"a": ["ab"] * 1000}}]) + b"\x00"
            await ws.send_message(bad)
            with trio.fail_after(10), pytest.raises(ConnectionClosed):
                await ws.get_message()
        assert calls == 1
