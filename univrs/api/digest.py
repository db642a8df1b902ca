"""``GET /v1/node/digest``: this replica's state digest and, on request, a digest of its log.

For comparing replicas (chaos checks, operators): two nodes that applied the same commands
report the same ``state_digest`` at the same ``applied_index``. The state digest and the
indexes are read in one synchronous step, so they describe the same moment.

``?log_from=A&log_to=B`` adds ``log_digest``: a SHA-256 over the entries A..B inclusive
(index, term, kind and data of each), read from this node's durable log. Entries up to the
applied index are committed and never change, so two nodes agree on a committed prefix exactly
when their digests over it are equal. B may not exceed the applied index; a range below the
first stored index (compacted into a snapshot) answers 409 ``compacted``.

Who may use it: with auth on, a caller with a ``read`` token (401 without a valid token, 403
without the role, before anything is read); with auth off, anyone who reaches the API. The
answer names no object and no secret, but digests and log positions are the cluster's
business: a hostile caller without a token learns nothing, and a reader's log range is
bounded by the applied index and read in 1 MiB chunks off the event loop.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from univrs.api import rest
from univrs.errors import UnivrsError
from univrs.runtime.snapshots import capture_digest

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

LOG_CHUNK_BYTES = 1 << 20  # entries read per storage call


async def digest_view(node: NodeHandle) -> dict[str, Any]:
    """Indexes and state digest of ``node``, taken together: the status and a view of the
    state at once (no await in between), the digest of that view then computed in a worker
    thread (``capture_digest``: streamed, off the event loop; seconds at 1,000,000 objects)."""
    s = node.status()
    digest = capture_digest(node.runtime.sm)
    view = {
        "id": s.id,
        "term": s.term,
        "role": s.role.value,
        "leader": s.leader,
        "commit_index": s.commit,
        "applied_index": s.applied,
        "first_index": s.first_index,
        "last_index": s.last_index,
    }
    view["state_digest"] = await trio.to_thread.run_sync(digest)
    return view


def log_digest(node: NodeHandle, lo: int, hi: int) -> str:
    """SHA-256 over the entries ``lo..hi`` inclusive of the node's durable log (a thread)."""
    h = hashlib.sha256()
    index = lo
    while index <= hi:
        entries = node.storage.entries(index, hi + 1, max_bytes=LOG_CHUNK_BYTES)
        for e in entries:
            h.update(struct.pack(">QQBQ", e.index, e.term, int(e.kind), len(e.data)))
            h.update(e.data)
        index = entries[-1].index + 1
    return "sha256:" + h.hexdigest()


def _error(code: str, message: str, status: int) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def node_digest(request: Request) -> Response:
    """The digest document (see the module docstring); a ``read`` token when auth is on."""
    node: NodeHandle = request.app.state.node
    try:
        await rest.authority_of(request).authorize_fresh(
            rest.caller_of(request), "read", "node digest"
        )
    except UnivrsError as exc:
        return rest.error_response(exc)
    view = await digest_view(node)
    q = request.query_params
    if "log_from" in q or "log_to" in q:
        try:
            lo = int(q.get("log_from", "1"))
            hi = int(q.get("log_to", str(view["applied_index"])))
        except ValueError:
            return _error("invalid-argument", "log_from and log_to are integers", 422)
        if not 1 <= lo <= hi + 1 or hi > view["applied_index"]:
            return _error(
                "invalid-argument",
                f"log range {lo}..{hi} must lie within 1..{view['applied_index']} (applied)",
                422,
            )
        from univrs.storage.log_store import LogCompacted

        try:
            digest = await trio.to_thread.run_sync(log_digest, node, lo, hi)
        except LogCompacted as exc:
            return _error("compacted", str(exc), 409)
        view.update(log_from=lo, log_to=hi, log_digest=digest)
    return JSONResponse(view)
