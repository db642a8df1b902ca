"""A fast-protocol connection's watch polls (``events.poll``): ``WatchPolls``, mixed into the
connection (univrs/api/fast.py), which declares every attribute named here.

A poll waits for events, so each runs in a task of its own (a long poll must not hold up the
other requests of its frame), at most ``MAX_WATCHES`` at once per connection (more are
answered ``unavailable`` at once; the node's own watcher limit applies too, univrs/api/
watch.py), and starts only while the connection's answer budget has room (its page of events
carries whole objects).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from univrs.api.answer_frames import response_of
from univrs.api.auth import Caller
from univrs.api.budget import AnswerBudget
from univrs.api.frame_reads import BUDGET_TIMEOUT
from univrs.api.service import ApiService, Job
from univrs.api.store import MAX_TIMEOUT
from univrs.client import protocol
from univrs.client.protocol import Request
from univrs.errors import Timeout, Unavailable, error_to_plain

__all__ = ["MAX_WATCHES", "WatchPolls"]

MAX_WATCHES = 16  # watch polls (events.poll) waiting at once per connection


class WatchPolls:
    """The watch polls of one connection (see the module docstring)."""

    if not TYPE_CHECKING:  # no instance dict (the connection is slotted)
        __slots__ = ()

    if TYPE_CHECKING:  # declared and built by the connection (fast.py)
        service: ApiService
        budget: AnswerBudget
        _watches: int

        def _send(self, responses: list[dict[str, Any]]) -> None: ...

        def _caller_of(self, req: Request) -> Caller: ...

    async def _handle_watch(self, req: Request) -> None:
        if self._watches >= MAX_WATCHES:
            error = Unavailable(
                f"this connection has {MAX_WATCHES} watch polls waiting already", retry_after=0.5
            )
            self._send([{"id": req.id, "error": error_to_plain(error)}])
            return
        self._watches += 1
        try:
            # A poll's events carry whole objects: it starts only while there is room (so
            # at most MAX_WATCHES answers past the budget), waiting for it at most until its
            # own deadline, as a read does (then ``timeout``: it took nothing, gives nothing).
            limit = self.service.store.timeout if req.timeout_ms is None else req.timeout_ms / 1000
            deadline = trio.current_time() + min(limit, MAX_TIMEOUT)
            with trio.move_on_at(deadline) as waited:
                await self.budget.wait_room()
            if waited.cancelled_caught:
                error = Timeout(BUDGET_TIMEOUT, retry_after=1.0)
                response = {"id": req.id, "error": error_to_plain(error)}
            else:
                response = await self._execute(req, deadline - trio.current_time())
        finally:
            self._watches -= 1
        self._send([response])

    async def _execute(self, req: Request, timeout: float | None = None) -> dict[str, Any]:
        """Run one request on its own (a watch poll): its response document, the result
        encoded (``Encoded``: ``_send`` charges the budget its real size, as a read's; a
        poll's page is up to about ``opargs.PAGE_BYTES``). ``timeout``: what is left of its
        time (None: the request's own ``timeout_ms``)."""
        job = Job(name=req.op, args=req.args, consistency=req.consistency, tag=req)
        try:
            if timeout is None and req.timeout_ms is not None:
                timeout = req.timeout_ms / 1000
            job.result, job.meta = await self.service.execute(
                req.op,
                req.args,
                key=req.key,
                consistency=req.consistency,
                timeout=timeout,
                hops=req.hops,
                caller=self._caller_of(req),
                encoded=True,
                answer=req.answer,
            )
            job.result = protocol.encode_document(job.result)
        except Exception as exc:
            job.error = exc
        return response_of(job)
