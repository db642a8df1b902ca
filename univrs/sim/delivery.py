"""The network layer of the simulated runtime: sending messages, delivering them through the
simulated transport's incarnation checks, and handing the cores forged messages (forger.py).

A message carries its sender's incarnation and binding, as the real hello does; the receiver's
transport refuses a peer whose incarnation is not the one its configuration binds that id to,
unless the peer is bound by a configuration newer than the receiver's listing (the strict rule,
``strict_incarnations``, never lets that through).
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

import attrs

from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
)
from univrs.raft.starts import Start, StartBook, judge
from univrs.sim.base import RuntimeBase
from univrs.sim.forger import Forger
from univrs.sim.invariants import FORGERY_REFUSED, InvariantViolation
from univrs.sim.network import SimNetwork
from univrs.sim.node import SimNode


class DeliveryLayer(RuntimeBase):
    """Sending, delivering and forging messages (over RuntimeBase's Ready draining)."""

    nodes: dict[NodeId, SimNode]
    net: SimNetwork
    injector: Any  # injector.FaultInjector
    forger: Forger | None  # forges messages the cores must refuse (forger.py)
    strict_incarnations: bool
    trace: Any
    # Receivers record the starts of their peers' data dirs (rollback faults on), and refuse
    # an older copy of a data dir than one whose start they recorded; the copy refused stops
    # taking part (rollback.py; ``start_check`` False: the code before start counters).
    start_records: bool
    start_check: bool
    fenced_copies: int
    acks_later: int  # acknowledgements left for their leader's next input (``settle``)
    # ReadIndex requests a leader (id, process) received, by (reader, wire id, term): the
    # processes of the reader that sent them, oldest first.
    _read_origins: dict[tuple[NodeId, int, NodeId, int, int], deque[int]]

    def _send(self, m: Message) -> None:
        # A message carries its sender's incarnation and binding (the real hello does).
        if m.dst not in self.nodes:
            return  # an answer to the forger's made-up peer: nobody is there
        src = self.nodes[m.src]
        if src.fenced:
            return  # it sends nothing more
        if self.injector.kill_on_read and isinstance(m, ReadIndexRequest):
            self.injector.on_forward_read(src)
        if src.listed:
            expect = src.listed.get(m.dst)
            if expect is not None:
                dst = self.nodes[m.dst]
                if expect != dst.disk.incarnation and not self._newer(dst.bound_at, src):
                    # The receiver refuses a hello that expects another incarnation of it.
                    self.net.refused += 1
                    return
        # Which process of the reader a ReadIndex request or answer belongs to (the checker's
        # own bookkeeping, not the core's): a request carries its sender's, an answer that of
        # the request it answers.
        tag = -1
        if isinstance(m, ReadIndexRequest):
            tag = src.life
        elif isinstance(m, ReadIndexResponse):
            waiting = self._read_origins.get((m.src, src.life, m.dst, m.ctx, m.term))
            if waiting:
                tag = waiting.popleft()
        arg = (m, src.disk.incarnation, src.bound_at, tag, src.disk.start, src.life)
        for d in self.net.delays(m.src, m.dst):
            self._seq += 1
            heapq.heappush(self._heap, (self.now + d, self._seq, self._deliver, arg))

    def _newer(self, bound_at: int, sn: SimNode) -> bool:
        """Is a peer bound to its incarnation by a configuration newer than ``sn``'s (so
        ``sn``'s listing is stale, not the peer)? The strict rule never asks."""
        return bound_at > sn.cfg_index and not self.strict_incarnations

    def _deliver(self, arg: tuple[Message, str, int, int, Start | None, int]) -> None:
        m, incarnation, bound_at, tag, start, life = arg
        sn = self.nodes[m.dst]
        raft = sn.raft
        if raft is None or self.net.is_blocked(m.src, m.dst):
            return
        if sn.paused:
            sn.backlog.append((self._deliver, arg))
            return
        listed = sn.listed.get(m.src) if sn.listed else None
        if listed is not None and listed != incarnation and not self._newer(bound_at, sn):
            # The transport refuses a peer whose incarnation is not the one the configuration
            # binds its id to (a wiped or replaced data dir is a stranger until replaced).
            self.net.refused += 1
            return
        if self.start_records and not self._start_taken(sn, m.src, incarnation, start, life):
            return
        self.trace.append((self.now, "recv", m))
        if tag >= 0:
            if isinstance(m, ReadIndexRequest):
                key = (m.dst, sn.life, m.src, m.ctx, m.term)
                self._read_origins.setdefault(key, deque()).append(tag)
            elif tag != sn.life:
                sn.foreign_answer = True  # answers a request of an earlier process of ours
        # The transport attests the sender's incarnation (the hello's), like the real one,
        # also for a sender let in for a newer binding (a claim the core must not trust).
        attested = incarnation
        msg = attrs.evolve(m, sender_incarnation=attested)
        self.settle(sn)  # (an acknowledgement left for this input goes first)
        if raft.append_response_may_wait(msg):
            # As the node's transport leaves it in the driver's inbox (``leave``): stepped
            # before the node's next input (base.py ``settle``), not now.
            sn.later = msg
            self.acks_later += 1
        else:
            raft.step(msg)
            self.drain(sn)
        sn.foreign_answer = False
        if self.forger is not None:
            if isinstance(m, AppendEntries | Heartbeat) and sn.raft is not None:
                self._hand_forgery(sn, self.forger.maybe_forge(sn.raft, m))
            elif isinstance(m, AppendEntriesResponse | HeartbeatResponse) and sn.raft is not None:
                self._hand_forgery(sn, self.forger.maybe_forge_ack(sn.raft, m))

    def _start_taken(
        self, sn: SimNode, src: NodeId, incarnation: str, start: Start | None, life: int
    ) -> bool:
        """The transport's start checks, by the product's rules (univrs/net/inbound_starts.py
        ``_seen_problem``, ``_check_start``): a receiver whose start chain lacks the start of it
        that a member it lists (under the incarnation it binds, or unbound) recorded last is an
        older copy and fences itself; a fenced receiver refuses everyone; a sender whose start
        is older than the one ``sn`` recorded for its data dir is refused and, if that process
        still runs, fenced; a newer start of a listed sender is recorded (durable at once: the
        real transport writes it before delivering; ``StartBook``'s bound per id)."""
        sender = self.nodes[src]
        heard = src in sn.configured and sn.listed.get(src) in (None, incarnation)
        if self.start_check and not sn.fenced and heard:
            # The sender's hello names the start of ours it recorded last (``Hello.seen``,
            # ``StartBook.newest``): a copy whose chain lacks it stops before it reads a message.
            seen = StartBook(sender.disk.start_records).newest(sn.id)
            if (
                seen is not None
                and seen[0] == sn.disk.incarnation
                and judge(seen[1:], sn.disk.start) is not None
            ):
                self._fence(sn, f"{sn.id} (named by {src})")
        if sn.fenced:
            self.net.refused += 1
            return False
        book = StartBook(sn.disk.start_records)
        if self.start_check and book.problem(src, incarnation, start) is not None:
            self.net.refused += 1
            if sender.life == life and sender.raft is not None and not sender.fenced:
                self._fence(sender, f"{src} (refused by {sn.id})")
            return False
        if start is not None and src in sn.configured:
            book.maybe_record(src, incarnation, start, keep=sn.listed.get(src))
            sn.disk.start_records = book.records()
        return True

    def _fence(self, sn: SimNode, why: str) -> None:
        sn.fenced = True
        self.fenced_copies += 1
        self.trace.append((self.now, "fenced", why))

    def _hand_forgery(self, sn: SimNode, forged: Message | None) -> None:
        """Step ``forged`` on ``sn``: the core must refuse it (count it in ``Status.refused``)
        and change nothing of its term, vote, role, leader, log or commit (forgery-refused)."""
        raft = sn.raft
        if forged is None or raft is None:
            return
        assert self.forger is not None
        self.settle(sn)
        self.forger.sent += 1
        self.trace.append((self.now, "forged", forged))
        st = raft.status()
        refused = st.refused_messages
        before = (st.term, st.vote, st.role, st.leader, st.last_index, st.last_term, st.commit)
        raft.step(forged)
        st = raft.status()
        after = (st.term, st.vote, st.role, st.leader, st.last_index, st.last_term, st.commit)
        if st.refused_messages > refused:
            self.forger.refused += 1
        if st.refused_messages == refused or after != before:
            raise InvariantViolation(
                FORGERY_REFUSED,
                f"{sn.id} took a forged {type(forged).__name__} from {forged.src} "
                f"(incarnation {forged.sender_incarnation}): "
                f"{'not refused' if st.refused_messages == refused else 'refused'}, "
                f"(term, vote, role, leader, last index, last term, commit) {before} -> {after}",
            )
        self.drain(sn)
