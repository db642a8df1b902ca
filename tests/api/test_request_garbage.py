"""A served request leaves no cyclic garbage behind (session 29).

A request's objects (its ``Request``, ``Job``, the frame's ``FrameWait`` or ``ReadWait``, the
``_Inline`` entry that tells the connection) are to be freed by reference counting the moment
the request is answered. Left in a reference cycle they wait for the cyclic garbage collector
instead: a leader serving 64 clients' reads ran young collections worth 250-450 ms in every
5 s (5-9 % of its CPU), each walking thousands of answered requests, and a one-client writer
a collection every 250 writes. The nodes' metrics show the collector's time
(``univrs_gc_pause_seconds_total``, the bench's "GC ms"); this test shows the cause itself:
with the collector off and ``gc.DEBUG_SAVEALL`` on, whatever a collection then finds was
cyclic garbage, and none of it may come from the request path.
"""

from __future__ import annotations

import gc
import pathlib
from collections import Counter
from typing import Any

from trio_websocket import WebSocketConnection, open_websocket

from tests.api.helpers import WORKLOAD, open_cluster
from univrs import codec
from univrs.client import protocol

# Modules whose objects a request's serving creates (their types name the leak when found).
REQUEST_PATH = ("univrs.api", "univrs.client", "univrs.runtime.waiter", "univrs.sm")


def _get(i: int, consistency: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"id": i, "op": "workload.get", "args": {"id": "w"}}
    if consistency is not None:
        request["consistency"] = consistency
    return request


def _scale(i: int) -> dict[str, Any]:
    return {"id": i, "op": "workload.scale", "args": {"id": "w", "replicas": i % 5 + 1}}


def _frames() -> list[list[dict[str, Any]]]:
    """Frames of one and of several writes, of reads of each consistency, and mixed."""
    frames: list[list[dict[str, Any]]] = []
    i = 10
    for how in (None, "linearizable", "lease", "local"):
        for size in (1, 4):
            frames.append([_get(i + k, how) for k in range(size)])
            i += size
    for size in (1, 4, 1):
        frames.append([_scale(i + k) for k in range(size)])
        i += size
    frames.append([_scale(i), _get(i + 1, None), _scale(i + 2), _get(i + 3, "local")])
    return frames


async def _serve(ws: WebSocketConnection, frames: list[list[dict[str, Any]]]) -> None:
    """Each frame sent and all its answers read (``ok`` each) before the next."""
    for frame in frames:
        await ws.send_message(codec.encode_plain(frame))
        answers: dict[int, Any] = {}
        while len(answers) < len(frame):
            _, responses = protocol.decode_responses(await ws.get_message())
            answers.update({r["id"]: r for r in responses})
        assert all("ok" in a for a in answers.values()), answers


def _request_path_garbage() -> Counter[str]:
    """What a collection now finds (saved, ``DEBUG_SAVEALL``) of the request path's types."""
    gc.collect()
    found: Counter[str] = Counter()
    for obj in gc.garbage:
        module = getattr(type(obj), "__module__", "") or ""
        if module.startswith(REQUEST_PATH):
            found[f"{module}.{type(obj).__qualname__}"] += 1
    return found


async def test_served_reads_and_writes_leave_no_cyclic_garbage(tmp_path: pathlib.Path) -> None:
    """Frames of writes, of reads of every consistency and of both, served by a three-node
    cluster's leader (read leases on) with the collector off: a collection afterwards finds
    none of the request path's objects in a cycle, in any of the nodes (one process). Fails
    if a frame of reads stays in a cycle once answered: its ``ReadWait`` keeping the callback
    it gave the round, which refers to the frame's ``_Inline``, while the ``_Inline`` keeps the
    ``ReadWait`` (either link broken ends it: ``ReadWait.settle``, ``InlineFrames.settle``)."""
    async with open_cluster(tmp_path, size=3, read_lease=True) as cluster:
        port = (await cluster.wait_bound_leader()).raft_port
        assert port is not None
        # One connection throughout: a closed connection's own objects (its reader, writer
        # and answer queue, once per connection) are not what this test is about.
        async with open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            create = {"id": 0, "op": "workload.create", "args": {"id": "w", "spec": WORKLOAD}}
            # Warm: first-use objects (caches, metrics, the leader's lease) made before.
            await _serve(ws, [[create], *_frames()])
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                gc.garbage.clear()
                await _serve(ws, _frames())
                found = _request_path_garbage()
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
    assert not found, f"cyclic garbage from the request path: {dict(found)}"
