"""``GET /v1/cluster/backup``: stream a consistent snapshot of the cluster (``univrs snapshot
save``), in the backup file format of ``univrs/storage/backup.py``.

Consistency: the node asked first confirms a linearizable read point (ReadIndex: the leader's
commit index, confirmed by a quorum; a follower asks its leader) and waits until it has applied
it, then snapshots its state machine (``take_snapshot``, or the stored snapshot if nothing was
applied since) and streams the stored snapshot, whose index is at or after that read point. So
the file holds every write acknowledged before the request and is a state the cluster really
had. Any node can serve it, which keeps the leader's CPU out of it.

Who may use it: operators only. It hands out the whole state (every workload, balance and
client session), so it is one of the admin endpoints (``univrs/api/admin.py`` lists it and
requires an ``admin`` token when auth is on). What a caller gets: without a
leader or quorum, 503 ``unavailable`` within ``READ_TIMEOUT``; a second save while one streams
from this node, 503 (``Retry-After``): memory stays bounded by one copy of the snapshot (which
the node keeps anyway to send to followers) plus one chunk, whatever the number of callers.
The body is sent in chunks of ``CHUNK_BYTES`` (flow control: nothing more is produced than
the caller takes); a caller that goes away ends its stream, one that takes nothing for
``STALL_TIMEOUT`` loses it, and the slot is free again either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from univrs import __version__
from univrs.api.rest import error_response
from univrs.errors import Conflict, Unavailable, UnivrsError
from univrs.raft.messages import SnapshotMeta
from univrs.storage.backup import DIGEST_BYTES, END, BackupHeader, encode_header, stream_chunks
from univrs.storage.snapshot_check import reading_for

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.api")

READ_TIMEOUT = 10.0  # seconds to confirm the read point (no leader: answered 503)
STALL_TIMEOUT = 60.0  # seconds a caller may take no data before its stream is dropped
MEDIA_TYPE = "application/vnd.univrs.snapshot"


class _Slot:
    """The node's one save slot. Not a ``trio.Lock``: the stream that frees it runs in another
    task than the handler that took it. Taking it never awaits, so check-and-take is atomic."""

    busy: bool = False
    # The running stream's cancel scope: its deadline moves STALL_TIMEOUT ahead whenever the
    # caller has taken a chunk, so a caller that stops reading loses the slot, not the node.
    scope: trio.CancelScope | None = None

    def progress(self) -> None:
        if self.scope is not None:
            self.scope.deadline = trio.current_time() + STALL_TIMEOUT


def _slot(request: Request) -> _Slot:
    slot: _Slot | None = getattr(request.app.state, "backup_slot", None)
    if slot is None:
        slot = request.app.state.backup_slot = _Slot()
    return slot


async def save(request: Request) -> Response:
    """Stream a consistent snapshot (module docstring)."""
    node: NodeHandle = request.app.state.node
    slot = _slot(request)
    if slot.busy:
        return error_response(
            Unavailable("a snapshot is already streaming from this node; retry", retry_after=5.0)
        )
    slot.busy = True
    try:
        header, data, read_index = await _prepare(node)
    except UnivrsError as exc:
        slot.busy = False
        return error_response(exc)
    except BaseException:
        slot.busy = False
        raise
    started = time.monotonic()

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        try:
            for part in stream_chunks(header, data):
                slot.progress()  # the caller took the previous chunk
                sent += len(part)
                yield part
            log.info(
                "snapshot streamed",
                extra={
                    "index": header.index,
                    "term": header.term,
                    "read_index": read_index,
                    "bytes": sent,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        except BaseException:
            log.warning("snapshot stream ended early", extra={"index": header.index, "bytes": sent})
            raise

    total = len(encode_header(header)) + header.size + DIGEST_BYTES + len(END)
    return _SlotResponse(
        slot,
        body(),
        media_type=MEDIA_TYPE,
        headers={
            "Content-Length": str(total),
            "X-Univrs-Snapshot-Index": str(header.index),
            "X-Univrs-Snapshot-Term": str(header.term),
        },
    )


class _SlotResponse(StreamingResponse):
    """Frees the save slot when the response is over, however it ends (sent, the caller gone,
    cancelled), including before its body was ever started."""

    def __init__(self, slot: _Slot, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with trio.CancelScope() as stall:
            self._slot.scope = stall
            self._slot.progress()
            try:
                await super().__call__(scope, receive, send)
            finally:
                self._slot.busy = False
                self._slot.scope = None
        if stall.cancelled_caught:
            log.warning("snapshot stream dropped: the caller read nothing for %gs", STALL_TIMEOUT)


async def _prepare(node: NodeHandle) -> tuple[BackupHeader, bytes, int]:
    """Confirm a read point, snapshot at or after it, load the stored snapshot."""
    try:
        with trio.fail_after(READ_TIMEOUT):
            read_index = await node.runtime.read_index()
    except trio.TooSlowError:
        raise Unavailable(
            f"no linearizable read point within {READ_TIMEOUT:g}s (no leader or no quorum); retry",
            retry_after=1.0,
        ) from None
    meta = await node.runtime.take_snapshot()
    if meta is None:
        raise Conflict("nothing has been applied on this node yet: there is nothing to save")
    storage = node.storage

    def load() -> tuple[SnapshotMeta, bytes] | None:
        with reading_for("backup"):  # damage found here is counted as the backup's
            return storage.load_snapshot()

    loaded = await trio.to_thread.run_sync(load)
    # The stored snapshot is the one just taken or a newer one (installed from the leader).
    if loaded is None or loaded[0].index < read_index:
        raise Unavailable("the stored snapshot moved while it was read; retry", retry_after=1.0)
    stored, data = loaded
    header = BackupHeader(
        cluster_id=node.cluster_id,
        index=stored.index,
        term=stored.term,
        membership=stored.membership,
        node=node.node_id,
        created_ms=int(time.time() * 1000),
        size=len(data),
        version=__version__,
    )
    return header, data, read_index
