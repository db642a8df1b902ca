"""Bytes of answers a node holds for the fast client protocol: ``AnswerBudget`` and ``AnswerPool``
(s15-budget, docs/security.md finding W1).

Theory of operation. An answer is *held* from the moment it is rendered (its document encoded,
``protocol.Encoded``) until the connection's writer has written it. Each connection has an
``AnswerBudget`` of ``CONNECTION_ANSWER_BYTES``, drawn from the node's ``AnswerPool`` of
``NODE_ANSWER_BYTES``. Nothing is refused for want of budget: while its own is spent, the
connection reads no more frames (back-pressure on the client through TCP), and while either
is spent it renders no more reads (``ApiService.execute_many`` waits for ``wait_room`` before
each read) and starts no more watch polls, until a writer gives bytes back; a read or a
watch poll waits for that at most until its own deadline, then is answered ``timeout``. A read is
rendered only while there is room, so what a connection holds is at most its budget plus one
answer, and with pages bounded in bytes (``opargs.PAGE_BYTES``) one answer is at most about a
page (or one object). Writes are charged their answer's length
when answered (one add), never waited for: their requests are already bounded in bytes by the
frames they came in.

Before: 4,096 requests in flight per connection and no bound on the bytes of their answers: a
10 KB frame of 256 list requests made a node hold 1.6 GB.
"""

from __future__ import annotations

import attrs
import trio

__all__ = ["CONNECTION_ANSWER_BYTES", "NODE_ANSWER_BYTES", "AnswerBudget", "AnswerPool"]

CONNECTION_ANSWER_BYTES = 8 << 20  # 8 MiB of answers held per fast-protocol connection
NODE_ANSWER_BYTES = 256 << 20  # 256 MiB for all of a node's connections together


@attrs.define(eq=False)
class AnswerPool:
    """The node-wide bound on answer bytes held (see the module docstring)."""

    limit: int = NODE_ANSWER_BYTES
    held: int = 0
    _room: trio.Event = attrs.field(factory=trio.Event)  # set when ``held`` went down


@attrs.define(eq=False)
class AnswerBudget:
    """One connection's answer bytes held, within its node's ``AnswerPool``."""

    pool: AnswerPool
    limit: int = CONNECTION_ANSWER_BYTES
    held: int = 0
    _room: trio.Event = attrs.field(factory=trio.Event)

    def has_room(self, pending: int = 0) -> bool:
        """Is there room for one more answer, beyond ``pending`` bytes rendered and not yet
        charged? (Then that answer may take the bound past its limit, once.)"""
        pool = self.pool
        return self.held + pending < self.limit and pool.held + pending < pool.limit

    def own_room(self) -> bool:
        """Is this connection's own budget not spent? (What its reader waits for before the
        next frame: a node-wide shortage holds back reads, which wait to be rendered, not
        the frames that may carry writes.)"""
        return self.held < self.limit

    def take(self, n: int) -> None:
        """Charge ``n`` bytes of answers (rendered, to be written)."""
        self.held += n
        self.pool.held += n

    def give(self, n: int) -> None:
        """Give back ``n`` bytes of answers written (or dropped)."""
        if not n:
            return
        self.held -= n
        pool = self.pool
        pool.held -= n
        self._room.set()
        pool._room.set()

    def release(self) -> None:
        """Give back everything still held (the connection is gone)."""
        self.give(self.held)

    async def wait_room(self, *, own: bool = False) -> None:
        """Wait until ``has_room()`` (``own``: ``own_room()``): this connection's writer, or
        any connection's in the node, gave bytes back."""
        while True:
            if self.held >= self.limit:
                if self._room.is_set():
                    self._room = trio.Event()
                await self._room.wait()
            elif not own and self.pool.held >= self.pool.limit:
                pool = self.pool
                if pool._room.is_set():
                    pool._room = trio.Event()
                await pool._room.wait()
            else:
                return
