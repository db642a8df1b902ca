"""The inbound half's start checks (``StartChecks``, a base of ``RaftInbound``): whether a
hello comes from an older copy of its sender's data dir (``_check_start``, recording a newer
start durably before the connection delivers anything), and whether its ``seen`` says that
*we* run an older copy of ours (``_seen_problem``). The rules are univrs/raft/starts.py's;
docs/security.md says what a forger gets in plaintext and with TLS. A record moves at most once
per ``TransportSettings.start_record_interval`` per member id (``StartTooSoon``): each move is
one synced write, and a plaintext forger may name a higher start in every hello.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from univrs.net.hello import Hello
from univrs.net.settings import TransportSettings
from univrs.raft.messages import NodeId
from univrs.raft.starts import Records, Start, StartBook, judge

log = logging.getLogger("univrs.net")


class StartTooSoon(Exception):
    """A hello would move its sender's start record again within
    ``start_record_interval`` of the last move: refused (1013, try again), nothing recorded."""


class StartChecks:
    """The start checks of ``RaftInbound`` (fields declared and documented on
    ``RaftTransport``; this class names the ones its methods use)."""

    incarnation: str | None
    bound_incarnation: Callable[[NodeId], str | None]
    start_book: StartBook
    start: Start | None
    save_starts: Callable[[Records], None] | None
    settings: TransportSettings
    _start_lock: trio.Lock
    _start_moved: dict[NodeId, float]
    _configured: dict[NodeId, str]

    def _fence(self, peer: NodeId, reason: str) -> None:
        raise NotImplementedError  # RaftTransport's

    def _started(self, peer: NodeId) -> None:
        raise NotImplementedError  # RaftTransport's

    def _seen_problem(self, hello: Hello) -> str | None:
        """Why the start of us that ``hello``'s sender recorded (``Hello.seen``) shows that we
        run an older copy of our data dir (None: it does not, or it names none).

        Only a member our configuration lists, under the incarnation it binds to that id (or
        any, while unbound), is heard: a fence stops this node until it restarts, so a made-up
        id or a stale incarnation must not be able to fence every node with one hello each
        (plaintext hellos are not authenticated; docs/security.md)."""
        if hello.seen is None or self.start is None or hello.seen[0] != self.incarnation:
            return None
        if hello.src not in self._configured or self.bound_incarnation(hello.src) not in (
            None,
            hello.incarnation,
        ):
            return None
        problem = judge(hello.seen[1:], self.start)
        if problem is None:
            return None
        return f"{hello.src} saw a later start of this data dir: {problem}"

    async def _check_start(self, hello: Hello) -> str | None:
        """Why ``hello`` comes from an older copy of its sender's data dir than one we heard
        (None: it does not). A start newer than the one recorded for a listed peer is recorded
        durably (``save_starts``) before its connection delivers anything: with TLS the hello
        is authenticated (its ``src`` is its certificate's node), so only the member's key
        moves the record; without TLS anyone may (docs/security.md), so a record moves at most
        once per ``start_record_interval`` per id: a faster move raises ``StartTooSoon``, the
        book as it was (a restart is seconds apart; a crash loop is only delayed)."""
        async with self._start_lock:  # judged and recorded as one step: no two starts race
            before = self.start_book.records()
            stale = self.start_book.problem(hello.src, hello.incarnation, hello.start)
            if stale is not None:
                return f"{hello.src} runs an older copy of its data dir: {stale}"
            if (
                hello.start is None
                or hello.incarnation is None
                or hello.src not in self._configured
                or not self.start_book.maybe_record(
                    hello.src,
                    hello.incarnation,
                    hello.start,
                    keep=self.bound_incarnation(hello.src),
                )
            ):
                return None
            now = trio.current_time()
            moved = self._start_moved.get(hello.src)
            if moved is not None and now - moved < self.settings.start_record_interval:
                self.start_book.restore(before)
                # One reason for every refusal of it: the dialer logs a streak of one reason once.
                raise StartTooSoon(
                    f"the start of {hello.src} was recorded less than "
                    f"{self.settings.start_record_interval:g} s ago: try again"
                )
            if self.save_starts is not None:
                try:
                    await trio.to_thread.run_sync(self.save_starts, self.start_book.records())
                except BaseException:
                    # Not durable: forget it, or the member's next hello of this start (the
                    # record unchanged, so no save) would deliver on a record a crash loses.
                    self.start_book.restore(before)
                    raise
            # Stamped once durable (a failed save moved nothing); listed ids only.
            self._start_moved = {
                nid: t for nid, t in self._start_moved.items() if nid in self._configured
            }
            self._start_moved[hello.src] = now
            self._started(hello.src)
            log.info(
                "%s started (start %d of incarnation %s)",
                hello.src,
                hello.start.counter,
                hello.incarnation,
                extra={"peer": hello.src, "start": hello.start.counter, "boot": hello.start.boot},
            )
            return None
