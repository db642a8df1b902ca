"""Simulated clients: writes proposed to whoever they believe leads, and ReadIndex reads.

Each client runs one operation at a time and retries it until it completes:

* a write is proposed on the node the client believes leads (``NotLeader`` hints redirect it).
  It is *acknowledged* when that same node, in the same incarnation, applies an entry at the
  (index, term) ``propose`` returned; an entry of another term there means the proposal was
  overwritten and the client retries. A retry re-proposes the same (client, op, key, value).
* a read asks a node (usually the believed leader, sometimes any node) for ``read_index(ctx)``.
  It completes when the node releases ``ctx`` in ``Ready.reads``; the checker then compares the
  value served from that node's state machine with the committed log (see checker.py).
  A dropped read, a crash of the node or a timeout makes the client retry elsewhere.

Every read ever issued is remembered with the highest index acknowledged before it was
issued, so even a read released after its client gave up is checked.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import attrs

from univrs.errors import NotLeader, UnivrsError
from univrs.raft.messages import Entry, NodeId
from univrs.sim.checker import READY_CONTRACT, InvariantViolation
from univrs.sim.kv import KvWrite, encode_write

if TYPE_CHECKING:
    from univrs.sim.cluster import SimNode, Simulation

KEYS = tuple(f"k{i}" for i in range(6))


@attrs.define(eq=False, slots=True)
class Op:
    """A client operation and its current attempt."""

    client: int
    op: int
    key: str
    write: KvWrite | None  # None for a read
    data: bytes = b""
    started: int = 0
    # The current attempt; ``node`` is None between attempts.
    node: NodeId | None = None
    incarnation: int = 0
    deadline: int = 0
    index: int = 0  # write: where propose put it
    term: int = 0
    ctx: int = 0  # read: the ctx of the current attempt
    retry_at: int = 0
    attempts: int = 0


@attrs.define(eq=False, slots=True)
class ReadRecord:
    """A read attempt as issued: checked whenever (if ever) it is released."""

    op: Op
    node: NodeId
    incarnation: int
    acked_at_issue: int
    done: bool = False


@attrs.define(eq=False, slots=True)
class Client:
    """One client: its belief about the leader and its operation in progress."""

    id: int
    p_read: float = 0.4  # this client's share of reads (dashboards read, controllers write)
    avoid: NodeId | None = None  # the node that just timed out on us: try the others first
    leader: NodeId | None = None
    op: Op | None = None
    next_op: int = 0


@attrs.define(eq=False)
class Workload:
    """All clients of one simulation plus the final liveness write."""

    sim: Simulation
    rng: random.Random
    n_clients: int = 3
    p_op: float = 0.15  # chance per tick that an idle client starts an operation
    # Read shares of the clients, cycled: a read-mostly client (a dashboard), a write-mostly
    # one (a controller), and a mixed one.
    read_mix: tuple[float, ...] = (0.9, 0.2, 0.5)
    write_timeout: int = 150  # simulated time units
    read_timeout: int = 100
    clients: list[Client] = attrs.field(factory=list)
    reads: dict[int, ReadRecord] = attrs.field(factory=dict)
    next_ctx: int = 1
    quiet: bool = False
    final: Op | None = None
    final_acked_at: int | None = None  # max acknowledged index when the final write acked
    writes_acked: int = 0
    reads_served: int = 0
    reads_dropped: int = 0
    retries: int = 0

    def __attrs_post_init__(self) -> None:
        mix = self.read_mix
        self.clients = [Client(id=i, p_read=mix[i % len(mix)]) for i in range(self.n_clients + 1)]

    # ----------------------------------------------------------------- driving

    def step(self, now: int) -> None:
        """Once per tick: start new operations, retry stalled ones."""
        for c in self.clients:
            op = c.op
            if op is None:
                if self.quiet or c.id == self.n_clients or self.rng.random() >= self.p_op:
                    continue
                op = c.op = self._new_op(c, now)
            if op.node is not None:
                if now < op.deadline:
                    continue
                c.avoid = op.node
                self._abandon(c, op)  # timed out: try somewhere else
                c.leader = None
            if now >= op.retry_at:
                self._attempt(c, op, now)

    def start_final_write(self, now: int) -> None:
        """The quiet period began: stop new operations and issue the final liveness write."""
        self.quiet = True
        c = self.clients[self.n_clients]
        c.op = self.final = self._new_op(c, now, write=True)

    def _new_op(self, c: Client, now: int, write: bool | None = None) -> Op:
        c.next_op += 1
        key = self.rng.choice(KEYS)
        if write is None:
            write = self.rng.random() >= c.p_read
        if write:
            w = KvWrite(client=c.id, op=c.next_op, key=key, value=f"c{c.id}.{c.next_op}")
            return Op(
                client=c.id, op=c.next_op, key=key, write=w, data=encode_write(w), started=now
            )
        return Op(client=c.id, op=c.next_op, key=key, write=None, started=now)

    def _pick(self, c: Client, *, anywhere: bool = False) -> NodeId:
        if c.leader is not None and not anywhere:
            return c.leader
        ids = self.sim.client_targets()
        if c.avoid is not None and len(ids) > 1:
            ids = [n for n in ids if n != c.avoid]
        return self.rng.choice(ids)

    def _backoff(self, op: Op) -> int:
        """Wait before retrying: one tick, growing with failed attempts up to five."""
        return self.sim.tick_units * min(5, max(1, op.attempts // 2))

    def _abandon(self, c: Client, op: Op) -> None:
        # A read attempt abandoned here stays in ``reads``: if it is released later it is still
        # checked, but it no longer completes the operation (``op.ctx`` will have moved on).
        op.node = None
        self.retries += 1

    def _attempt(self, c: Client, op: Op, now: int) -> None:
        sim = self.sim
        is_read = op.write is None
        nid = self._pick(c, anywhere=is_read and self.rng.random() < 0.25)
        sn = sim.nodes[nid]
        op.attempts += 1
        raft = sn.raft
        if raft is None:  # connection refused: the node is down
            c.leader = None
            op.retry_at = now + self._backoff(op)
            return
        op.node = nid
        op.incarnation = sn.incarnation
        if sn.paused:  # the request hangs until the client times out
            op.deadline = now + (self.read_timeout if is_read else self.write_timeout)
            return
        if is_read:
            ctx = op.ctx = self.next_ctx
            self.next_ctx += 1
            self.reads[ctx] = ReadRecord(
                op=op,
                node=nid,
                incarnation=sn.incarnation,
                acked_at_issue=sim.checker.max_acked,
            )
            op.deadline = now + self.read_timeout
            try:
                raft.read_index(ctx)
            except UnivrsError:
                op.node = None
                c.leader = None
                op.retry_at = now + self._backoff(op)
            sim.drain(sn)
            return
        try:
            term, index = raft.propose(op.data)
        except NotLeader as e:
            op.node = None
            c.leader = e.leader_hint if e.leader_hint not in (None, nid) else None
            op.retry_at = now + self._backoff(op)
            sim.drain(sn)
            return
        except UnivrsError:
            op.node = None
            op.retry_at = now + self._backoff(op)
            sim.drain(sn)
            return
        c.leader = nid
        op.index, op.term = index, term
        op.deadline = now + self.write_timeout
        sn.acks.setdefault(index, []).append(op)
        sim.drain(sn)

    # ----------------------------------------------------------------- node callbacks

    def on_applied(self, sn: SimNode, e: Entry, waiting: list[Op]) -> None:
        """``sn`` applied ``e``; ``waiting`` are the write attempts it returned that index to."""
        for op in waiting:
            if op.node != sn.id or op.incarnation != sn.incarnation or op.index != e.index:
                continue  # a superseded attempt
            c = self.clients[op.client]
            if e.term != op.term:  # overwritten by another leader's entry
                op.node = None
                c.leader = None
                op.retry_at = self.sim.now
                self.retries += 1
                continue
            if e.data != op.data:
                raise InvariantViolation(
                    READY_CONTRACT,
                    f"{sn.id}: propose returned (index {op.index}, term {op.term}) but the entry "
                    f"applied there carries {e.data!r}, not {op.data!r}",
                )
            self.sim.checker.observe_ack(e.index)
            self.writes_acked += 1
            c.op = None
            c.avoid = None
            if op is self.final:
                self.final_acked_at = self.sim.checker.max_acked

    def on_read(self, sn: SimNode, ctx: int, read_index: int) -> None:
        """``sn`` released read ``ctx``: serve it from ``sn``'s state machine and check it."""
        rec = self.reads.get(ctx)
        if rec is None or rec.node != sn.id or rec.incarnation != sn.incarnation:
            raise InvariantViolation(READY_CONTRACT, f"{sn.id} released unknown read ctx {ctx}")
        if rec.done:
            raise InvariantViolation(
                READY_CONTRACT, f"{sn.id} released read ctx {ctx} that was already released"
            )
        rec.done = True
        op = rec.op
        self.sim.checker.observe_read(
            sn.id,
            ctx=ctx,
            read_index=read_index,
            served_at=sn.kv.applied,
            key=op.key,
            value=sn.kv.get(op.key),
            acked_at_issue=rec.acked_at_issue,
        )
        self.reads_served += 1
        if op.node == sn.id and op.ctx == ctx:
            c = self.clients[op.client]
            c.leader = sn.leader or c.leader
            c.op = None
            c.avoid = None

    def on_read_dropped(self, sn: SimNode, ctx: int) -> None:
        rec = self.reads.get(ctx)
        if rec is None or rec.node != sn.id:
            raise InvariantViolation(READY_CONTRACT, f"{sn.id} dropped unknown read ctx {ctx}")
        if rec.done:
            raise InvariantViolation(
                READY_CONTRACT, f"{sn.id} dropped read ctx {ctx} after releasing it"
            )
        rec.done = True
        self.reads_dropped += 1
        op = rec.op
        if op.node == sn.id and op.ctx == ctx:
            c = self.clients[op.client]
            c.leader = sn.leader if sn.leader != sn.id else None
            op.node = None
            op.retry_at = self.sim.now + self._backoff(op)
            self.retries += 1

    def on_crash(self, sn: SimNode) -> None:
        """Connections to ``sn`` broke: its attempts fail and their clients retry."""
        now = self.sim.now
        for c in self.clients:
            op = c.op
            if op is not None and op.node == sn.id:
                self._abandon(c, op)
                c.leader = None
                op.retry_at = now + self._backoff(op)
