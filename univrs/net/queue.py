"""The outbound queue of one peer: two bounded lanes, control messages first.

Theory of operation. The driver must never block on the network, so ``put`` is synchronous and
always succeeds at once; the peer's sender task takes messages out with ``get``. Small control
messages (heartbeats, votes, responses, TimeoutNow, ReadIndex) go in the *control* lane; log
replication (AppendEntries, InstallSnapshot) goes in the *bulk* lane. ``get`` always serves the
control lane first, so a heartbeat never waits behind queued batches (it can still wait behind
the one frame being written at that moment). Order is kept within each lane; Raft tolerates
reordering between lanes as it tolerates any network reordering.

Both lanes are bounded. When a lane is full, its oldest message is dropped: Raft tolerates loss
(the leader retransmits from its progress tracking), and the newest message carries the most
recent term and commit index.
"""

from __future__ import annotations

import collections

import attrs
import trio

from univrs.raft.messages import AppendEntries, InstallSnapshot, Message

BULK_TYPES: tuple[type[Message], ...] = (AppendEntries, InstallSnapshot)


def is_bulk(msg: Message) -> bool:
    """Whether ``msg`` travels in the bulk lane (log data) rather than the control lane."""
    return isinstance(msg, BULK_TYPES)


@attrs.define(eq=False)
class PeerQueue:
    """Two-lane bounded queue; ``put`` never blocks, ``get`` waits for a message.

    Invariants: ``len(control) <= max_control``, ``len(bulk) <= max_bulk``; ``_nonempty`` is set
    whenever either lane holds a message.
    """

    max_control: int = 256
    max_bulk: int = 64
    _control: collections.deque[Message] = attrs.field(factory=collections.deque, init=False)
    _bulk: collections.deque[Message] = attrs.field(factory=collections.deque, init=False)
    _nonempty: trio.Event = attrs.field(factory=trio.Event, init=False)
    # The sender task waits in ``wait`` and has not run since (what is queued now was queued
    # after it last looked: univrs/net/peer.py ``PeerLink.flush`` may write it instead).
    waiting: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if self.max_control < 1 or self.max_bulk < 1:
            raise ValueError("queue bounds must be positive")

    def put(self, msg: Message, *, wake: bool = True) -> Message | None:
        """Queue ``msg``; return the message dropped to make room for it, if any. With
        ``wake`` False the sender task is not woken for it (the caller writes it, or calls
        ``wake``: univrs/net/peer.py ``PeerLink.flush``)."""
        lane, bound = (
            (self._bulk, self.max_bulk) if is_bulk(msg) else (self._control, self.max_control)
        )
        dropped = lane.popleft() if len(lane) >= bound else None
        lane.append(msg)
        if wake:
            self._nonempty.set()
        return dropped

    def wake(self) -> None:
        """Wake the sender task (it finds what is queued, or work left to it elsewhere)."""
        self._nonempty.set()

    def get_nowait(self) -> Message | None:
        """The next message (control lane first), or None when both lanes are empty."""
        if self._control:
            msg = self._control.popleft()
        elif self._bulk:
            msg = self._bulk.popleft()
        else:
            return None
        if not self._control and not self._bulk and self._nonempty.is_set():
            # (an unset event stays: the sender task may be waiting on it for a ``wake``)
            self._nonempty = trio.Event()
        return msg

    async def get(self) -> Message:
        """Wait for and return the next message (control lane first)."""
        while True:
            msg = self.get_nowait()
            if msg is not None:
                return msg
            await self.wait()

    async def wait(self) -> None:
        """Wait until a message is put or ``wake`` is called (what was put may be taken by
        someone else before we run)."""
        if self._nonempty.is_set() and not self._control and not self._bulk:
            self._nonempty = trio.Event()  # (a wake-up already served)
        self.waiting = True
        try:
            await self._nonempty.wait()
        finally:
            self.waiting = False

    def clear(self) -> int:
        """Drop everything queued; return how many messages were dropped."""
        n = len(self._control) + len(self._bulk)
        self._control.clear()
        self._bulk.clear()
        self._nonempty = trio.Event()
        return n

    def __len__(self) -> int:
        return len(self._control) + len(self._bulk)
