"""A raft link's frames written from the step that queued them (issue 14, s17-lat1):
``LinkFlush``, mixed into ``PeerLink`` (univrs/net/peer.py).

Theory of operation. ``RaftTransport.send_now`` queues one step's messages without waking the
links' tasks, then calls ``flush`` on each link it touched. While the link's task (the pump)
waits on its queue with nothing in progress, what was queued since it last looked is exactly
what this step queued after it: ``flush`` frames it as the pump would (``_batch``,
``_frames``: one batch frame per step when the peer reads them) and writes each frame the
kernel takes whole (``wsdirect.write_whole_nowait``), so the frame leaves in the caller's
step (the driver's, after a Ready's messages; the storage writer's completion, after a
write's acks) instead of the pump's a scheduling round later, and the pump does not wake at
all. From the first frame that does not qualify on (too large, no room, a ping holding the
send lock) the frames are the pump's (``_carry``, sent before anything queued later), and
whatever is left is announced to it (``PeerQueue.wake``). A frame the kernel took in part
ends the session (wsdirect.py says why); its messages are counted as dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from trio_websocket import ConnectionClosed, WebSocketConnection

from univrs.net import wsdirect
from univrs.net.queue import PeerQueue
from univrs.net.stats import PeerCounters
from univrs.raft.messages import Message

__all__ = ["LinkFlush"]


class SessionState(Protocol):
    """What ``flush`` reads and sets of the link's session (peer.py ``_Session``)."""

    reason: str
    broken: bool
    direct: bool


class LinkFlush:
    """``flush``, mixed into ``PeerLink``, which declares and builds every attribute named
    here."""

    if not TYPE_CHECKING:  # (PeerLink is slotted; see runtime/step.py for the same pattern)
        __slots__ = ()

    queue: PeerQueue
    counters: PeerCounters
    _live: tuple[WebSocketConnection, SessionState] | None
    _carry: list[tuple[bytes, int]]
    _writing: bool

    if TYPE_CHECKING:

        def _batch(self, first: Message) -> list[Message]: ...

        def _frames(self, batch: list[Message]) -> list[tuple[bytes, int]]: ...

    def flush(self) -> None:
        """Write what was queued since the pump last looked from the caller's step (the
        driver's; the writer's completion), not the pump's a round later (s17-lat1): while
        the pump waits idle, frames the kernel takes whole (``wsdirect.write_whole_nowait``).
        The rest is the pump's, in order: from the first frame that does not qualify on
        (``_carry``), and everything queued while it holds any."""
        try:
            self._write_queued()
        finally:  # anything left (or queued unannounced, ``enqueue``): the pump's
            if self._carry or len(self.queue):
                self.queue.wake()

    def _write_queued(self) -> None:
        live = self._live
        queue = self.queue
        if live is None or self._carry or not queue.waiting or not len(queue):
            return
        ws, session = live
        if not session.direct or self._writing:
            return
        while True:
            first = queue.get_nowait()
            if first is None:
                return
            frames = self._frames(self._batch(first))
            for i, (data, count) in enumerate(frames):
                try:
                    written = wsdirect.write_whole_nowait(ws, data)
                except ConnectionClosed:  # a partial write: the socket was shut down
                    session.reason = "a frame written from the driver's step was cut short"
                    session.broken = True
                    self.counters.dropped += sum(c for _d, c in frames[i:])
                    return
                if not written:
                    self._carry = frames[i:]  # the pump, woken by the queue, sends them
                    return
                self.counters.messages_sent += count
                self.counters.frames_sent += 1
                self.counters.bytes_sent += len(data)
