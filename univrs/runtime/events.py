"""The driver's events and the one channel they arrive on (``Inbox``).

Everything that wants the core to do something puts an event in the inbox: the transport's
reader tasks (Raft messages), the ticker (``TICK``), the API (``Propose``, ``Read``, ``Call``),
and the apply loop (``Applied``); the storage writer's reports wait beside the channel and a
wake-up event on it announces them (step.py). Only the driver receives.

The inbox is its own object, made before the runtime, so that a server can hand its send side
to the transport first and the finished transport to the runtime (no late wiring): the
transport needs somewhere to deliver, the runtime something to send with.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import attrs
import trio

from univrs.raft.messages import Message
from univrs.raft.node import RaftNode
from univrs.runtime.waiter import Waiter
from univrs.sm.responses import Response

EVENT_QUEUE = 4096  # bounded: a flood of peer messages back-pressures the transport


def _never(msg: Message) -> bool:
    return False


@attrs.define(eq=False)
class Inbox:
    """The driver's one bounded event channel: ``sender`` for everybody, ``receiver`` for the
    driver alone.

    Beside it, ``later``: Raft messages left for the driver's next step instead of waking it
    (``leave``, offered by the transport's readers; which ones the runtime that receives
    decides: ``may_leave``, set by it, step.py ``_may_leave``). The driver steps them at the
    start of its next step, before that step's input, with the time they arrived."""

    size: int = EVENT_QUEUE
    sender: trio.MemorySendChannel[object] = attrs.field(init=False)
    receiver: trio.MemoryReceiveChannel[object] = attrs.field(init=False)
    later: collections.deque[tuple[Message, float]] = attrs.field(
        factory=collections.deque, init=False
    )
    may_leave: Callable[[Message], bool] = _never
    # Steps a message at once in the caller's task if the driver waits idle (True), set by
    # the runtime (step.py ``_step_now``).
    step_now: Callable[[Message], bool] = _never

    def __attrs_post_init__(self) -> None:
        self.sender, self.receiver = trio.open_memory_channel[object](self.size)

    def leave(self, msg: Message, *, last: bool = True) -> bool:
        """Take ``msg`` without the channel (True): keep it for the driver's next step if the
        runtime says it may wait, or have the runtime step it now, in the caller's task, if
        its driver waits idle (session 27); False: the caller delivers it on the channel as
        usual."""
        if not self.may_leave(msg):
            # Not a message with more of its frame behind it (``last`` False): the driver
            # steps those together, in one step and one write (h1 review).
            return last and self.step_now(msg)
        self.later.append((msg, trio.current_time()))
        return True


@attrs.define(eq=False)
class Propose:
    """A proposal: the entry's bytes and the proposer waiting for its outcome."""

    payload: bytes
    waiter: Waiter[Response]
    started: float  # trio time, for the commit latency metric
    # The plain document ``payload`` encodes, when it round-trips exactly: the apply loop
    # reads this node's own entry from it instead of decoding the bytes (payload.py).
    doc: list[Any] | None = None


@attrs.define(eq=False)
class ProposeBatch:
    """Proposals packed into one batch entry (payload version 2, univrs/runtime/packing.py):
    the entry's bytes, the document they encode (exact: univrs/runtime/payload.py), and the
    proposals in the order of their commands in it."""

    payload: bytes
    doc: list[Any]
    proposals: tuple[Propose, ...]


@attrs.define(eq=False)
class ProposeMany:
    """Several proposals handed over together (``RaftRuntime.propose_together``): one inbox
    event and one driver wake-up for a client frame's writes; they join the open batch in
    this order, exactly as that many ``Propose`` events would."""

    proposals: list[Propose]


class Tick:
    """The ticker's event: one tick of the core's logical clock."""


TICK = Tick()


@attrs.frozen
class Read:
    """A linearizable read: the waiter gets the confirmed read index (``lease``: a lease read,
    confirmed by the leader's lease when it holds one, RaftNode.read_index)."""

    waiter: Waiter[int]
    lease: bool = False


@attrs.frozen
class Applied:
    """The apply loop applied everything up to ``index``."""

    index: int


@attrs.frozen
class Call:
    """Run ``fn(core)`` on the driver (campaign, transfer, membership) and report the result."""

    fn: Callable[[RaftNode], Any]
    waiter: Waiter[Any]
