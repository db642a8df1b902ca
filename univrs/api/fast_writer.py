"""A fast-protocol connection's answer writer: ``AnswerWriter``, mixed into the connection
(univrs/api/fast.py), which declares every attribute named here and starts
``write_responses`` as its writer task.

The writer settles the connection's inline frames (univrs/api/inline.py) and sends what is
queued, as one frame (one encode) per wake-up, written to the socket at once when it takes it
(univrs/client/wire.py); a frame it does not take at once is finished within ``SEND_TIMEOUT``,
else the client is dropped for not reading its responses. Split out of fast.py to keep it under
600 lines. A mixin rather than an object of its own: this is the hot path of every answer, and
as methods of the connection it reads the connection's state as before, with no extra call
layer or attribute lookup per wake-up or per frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import trio
from trio_websocket import ConnectionClosed

from univrs.api.answer_frames import response_frames
from univrs.client.wire import Pending, Wire

if TYPE_CHECKING:
    from univrs.api.inline import InlineFrames
    from univrs.api.service import ApiService

__all__ = ["SEND_TIMEOUT", "AnswerWriter"]

log = logging.getLogger("univrs.api")  # the connection's logger (fast.py)

SEND_TIMEOUT = 30.0  # a client that reads none of its responses for this long is dropped


class AnswerWriter:
    """The answer writer of one connection (see the module docstring)."""

    if not TYPE_CHECKING:  # no instance dict (the connection is slotted)
        __slots__ = ()

    if TYPE_CHECKING:  # declared and built by the connection (fast.py)
        service: ApiService
        remote: str
        scope: trio.CancelScope
        wire: Wire
        inline: InlineFrames
        _outbox: list[dict[str, Any]]
        _queued: int
        _wakeup: trio.Event

        def _sent(self, answers: int, held: int) -> None: ...

    async def write_responses(self) -> None:
        """The connection's writer: settles its inline frames (``InlineFrames.settle``) and
        sends what is queued, as one frame (one encode) per wake-up.

        It sleeps until woken or the earliest inline deadline (which a new frame may bring
        forward: ``InlineFrames.add`` moves the scope's deadline) under a cancel scope that
        it keeps across wake-ups while every frame it sends is written at once (session 30:
        entering and leaving a scope cost about 4 us a wake-up). Before sleeping again in it,
        the scope's deadline is brought forward to the earliest inline deadline if a frame
        came meanwhile; left earlier than that (frames answered), it wakes the writer once
        for nothing, as before. A frame the socket does not take at once is finished outside
        the scope, so its deadline never cancels a send."""
        inline = self.inline
        try:
            while True:
                left: _Left | None = None
                with trio.CancelScope(deadline=inline.earliest()) as scope:
                    fresh = True  # the scope's deadline is the earliest: just set
                    while left is None:
                        if not (self._outbox or inline.has_filled()):
                            if not fresh:
                                earliest = inline.earliest()
                                if earliest < scope.deadline:
                                    scope.deadline = earliest
                            inline.sleep = scope
                            try:
                                await self._wakeup.wait()
                            finally:
                                inline.sleep = None
                        fresh = False
                        left = self._write_queued()
                if left is None:  # the scope's deadline passed while asleep
                    left = self._write_queued()
                while left is not None:
                    if not await self._finish(left):
                        return
                    left = self._write_more()
        except ConnectionClosed:
            return

    def _write_queued(self) -> _Left | None:
        """Settle what is due (``InlineFrames.settle``), then write what is queued
        (``_write_more``)."""
        inline = self.inline
        if inline.due(trio.current_time()):
            inline.settle()
        if self._wakeup.is_set():  # (after ``settle``, whose answers set it again)
            self._wakeup = trio.Event()
        return self._write_more()

    def _write_more(self) -> _Left | None:
        """Write what is queued, one frame (one encode) a batch, at once when the socket
        takes it (no scheduling round: univrs/client/wire.py); None when all was written,
        else what ``_finish`` must send. Raises ConnectionClosed."""
        while self._outbox:
            batch, self._outbox = self._outbox, []
            held, self._queued = self._queued, 0
            # The hint from the last built status (its leader is always current): no
            # status rebuild per response frame.
            leader = self.service.node.runtime.view.last_status().leader
            frames = response_frames(leader, batch, held)
            left = self._write_frames(frames, len(batch), held)
            if left is not None:
                return left
        return None

    def _write_frames(self, frames: Iterator[bytes], answers: int, held: int) -> _Left | None:
        """Write ``frames`` (of ``answers`` answers holding ``held`` bytes) at once while the
        socket takes them; the first it does not, with the rest, is left to ``_finish``."""
        wire = self.wire
        for frame in frames:
            pending = wire.write_now(frame)
            if pending is not None:
                return _Left(pending, frames, answers, held)
        self._sent(answers, held)
        return None

    async def _finish(self, left: _Left) -> bool:
        """Send what ``_write_frames`` left, within ``SEND_TIMEOUT`` each (False: the client
        was dropped for not reading its responses). Raises ConnectionClosed."""
        while True:
            with trio.move_on_after(SEND_TIMEOUT) as sending:
                await self.wire.finish(left.pending)
            if sending.cancelled_caught:
                log.warning(
                    "dropping client connection from %s: it has not read its responses for %gs",
                    self.remote,
                    SEND_TIMEOUT,
                )
                self.scope.cancel()
                return False
            more = self._write_frames(left.frames, left.answers, left.held)
            if more is None:
                return True
            left = more


@attrs.define(eq=False, slots=True)
class _Left:
    """What the writer could not write at once: the rest of a frame (``pending``), the batch's
    frames after it, and the batch's answers and bytes held (given back once written)."""

    pending: Pending
    frames: Iterator[bytes]
    answers: int
    held: int
