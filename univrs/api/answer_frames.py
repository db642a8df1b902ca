"""A client connection's answers as the fast protocol writes them (univrs/api/fast.py): the
response document of an answered request (``response_of``) and a batch of them as frames of at
most ``protocol.MAX_FRAME`` bytes (``response_frames``, ``encode_frame``). Split out of fast.py
in session 19 (its answer written from the apply's step made it pass 600 lines)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from univrs import codec
from univrs.api.service import Job
from univrs.client import protocol
from univrs.client.protocol import Request
from univrs.errors import InternalError, PayloadTooLarge, UnivrsError, error_to_plain

__all__ = ["encode_frame", "response_frames", "response_of"]

log = logging.getLogger("univrs.api")


def response_of(job: Job) -> dict[str, Any]:
    """A request's response document from its answered job."""
    req: Request = job.tag
    exc = job.error
    if exc is not None:
        if isinstance(exc, UnivrsError) and exc.on_wire():
            return {"id": req.id, "error": error_to_plain(exc)}
        log.error("operation %s failed with a bug", req.op, exc_info=exc)
        error = InternalError(f"{type(exc).__name__} in {req.op}")
        return {"id": req.id, "error": error_to_plain(error)}
    rendered = job.rendered  # a read's document shared at this revision: encoded once
    ok = job.result if rendered is None else (rendered.encoded() or job.result)
    response: dict[str, Any] = {"id": req.id, "ok": ok}
    meta = job.meta
    if meta is not None and (req.consistency == "local" or "index" in meta):
        response["meta"] = meta  # writes: their log index; local reads: staleness
    return response


def response_frames(
    leader: str | None, batch: list[dict[str, Any]], held: int = 0
) -> Iterator[bytes]:
    """``batch`` as response frames of at most ``protocol.MAX_FRAME`` bytes, the most a client
    reads (s15-review B1): usually one. Two answers of 3 MB (two pages of big workloads) used
    to go out as one 6 MB frame, which the client refuses by closing the connection: every
    request on it lost, retried, and lost again, reported as "no univrs node reachable". An
    answer that alone exceeds the frame is replaced by a ``payload-too-large`` error saying so
    (only a read's can: a write's request frame is bounded by the same size).

    Frames are made as they are sent (a generator), and a batch whose charged bytes
    (``held``) already pass a frame is not encoded whole first: what is held while a batch
    is written stays about the batch itself (s15-budget)."""
    if held <= protocol.MAX_FRAME:
        frame = encode_frame(leader, batch)
        if len(frame) <= protocol.MAX_FRAME:
            yield frame
            return
    run: list[dict[str, Any]] = []
    size = 0
    for resp in batch:
        one = len(encode_frame(leader, [resp]))
        if one > protocol.MAX_FRAME:
            error = PayloadTooLarge(
                f"the answer is {one} bytes, more than the fast protocol's frame of "
                f"{protocol.MAX_FRAME}: ask for fewer items (limit), or use the REST API"
            )
            resp = {"id": resp["id"], "error": error_to_plain(error)}
            one = len(encode_frame(leader, [resp]))
        if run and size + one > protocol.MAX_FRAME:
            yield encode_frame(leader, run)
            run, size = [], 0
        run.append(resp)
        size += one
    if run:
        yield encode_frame(leader, run)


def encode_frame(leader: str | None, batch: list[dict[str, Any]]) -> bytes:
    try:
        return protocol.encode_responses(leader, batch)
    except (TypeError, ValueError):
        pass
    # One response is not plain data (a bug): find it, answer it with an internal error.
    clean = []
    for resp in batch:
        if type(resp.get("ok")) is protocol.Encoded:
            clean.append(resp)  # checked plain when it was encoded
            continue
        try:
            codec.encode_plain(resp)
            clean.append(resp)
        except (TypeError, ValueError) as exc:
            log.error("response to request %s cannot be encoded: %s", resp.get("id"), exc)
            error = InternalError("the response could not be encoded")
            clean.append({"id": resp["id"], "error": error_to_plain(error)})
    return protocol.encode_responses(leader, clean)
