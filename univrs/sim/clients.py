"""Simulated clients: writes through the nodes' APIs (api.py), and ReadIndex reads.

Each client runs one operation at a time:

* a write goes to the API of the node the client believes leads (a random member otherwise);
  the API proposes it there or forwards it to the leader, retries what certainly did not
  apply, and answers ok | conflict | refused | unknown (api.py). Every write has a unique id
  ``(client, op)`` and a unique value. About half carry an idempotency key (the state
  machine's session dedups a retried key), and some are *conditional* (set only if the key
  still holds the value this client last saw, like If-Match). On ``refused`` (nothing applied)
  the client retries, following the leader hint; on ``unknown`` it retries a keyed write (the
  key makes that safe) and gives up on a keyless one (its outcome stays unknown: it may apply
  later, which the checker allows once). A crash of the node, or a paused node not answering
  within the client's timeout, is an unknown outcome too. Every ``ok`` and ``conflict`` answer
  goes to the checker (exactly-once: a write never takes effect twice, and one answered
  ``conflict`` never took effect).
* a read asks a node (usually the believed leader, sometimes any node) for ``read_index(ctx)``
  (in lease mode, cluster.py, most reads ask for a lease read: ``read_index(ctx, lease=True)``)
  with a ctx this node's process chose (a counter from 1 in every process: the core's own wire
  ids must keep an answer to an earlier process's read from releasing it; the real driver also
  starts at a random base). It completes when the node releases ``ctx`` in ``Ready.reads``;
  the checker then compares the value served from that node's state machine with the
  committed log (see checker.py). A dropped read, a crash of the node or a timeout makes the
  client retry elsewhere.

Every read is remembered by its node's process with the highest index acknowledged before it
was issued, so even a read released after its client gave up is checked.
"""

from __future__ import annotations

import random

import attrs

from univrs.errors import UnivrsError
from univrs.raft.messages import NodeId
from univrs.sim.api import CONFLICT, OK, REFUSED, Answer
from univrs.sim.checker import READY_CONTRACT, InvariantViolation
from univrs.sim.kv import KvWrite, encode_write
from univrs.sim.world import Node, World

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
    life: int = 0
    deadline: int = 0
    ctx: int = 0  # read: the ctx of the current attempt
    retry_at: int = 0
    attempts: int = 0


@attrs.define(eq=False, slots=True)
class ReadRecord:
    """A read attempt as issued: checked whenever (if ever) it is released."""

    op: Op
    acked_at_issue: int


@attrs.define(eq=False, slots=True)
class Client:
    """One client: its belief about the leader and its operation in progress."""

    id: int
    p_read: float = 0.4  # this client's share of reads (dashboards read, controllers write)
    avoid: NodeId | None = None  # the node that just timed out on us: try the others first
    sticky: NodeId | None = None  # reconnect to this node for the next attempt (it crashed)
    leader: NodeId | None = None
    op: Op | None = None
    next_op: int = 0
    # The value this client last saw for each key (the If-Match of its conditional writes).
    seen: dict[str, str | None] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Workload:
    """All clients of one simulation plus the final liveness write."""

    sim: World
    rng: random.Random
    n_clients: int = 3
    p_op: float = 0.15  # chance per tick that an idle client starts an operation
    p_keyed: float = 0.5  # share of writes with an idempotency key
    p_cond: float = 0.3  # share of conditional writes
    p_anywhere: float = 0.25  # share of reads sent to any member (a follower serves them)
    # Read shares of the clients, cycled: a read-mostly client (a dashboard), a write-mostly
    # one (a controller), and a mixed one.
    read_mix: tuple[float, ...] = (0.9, 0.2, 0.5)
    read_timeout: int = 100  # simulated time units
    clients: list[Client] = attrs.field(factory=list)
    quiet: bool = False
    final: Op | None = None
    final_acked_at: int | None = None  # max acknowledged revision when the final write acked
    writes_acked: int = 0
    conflicts: int = 0
    unknown: int = 0  # keyless writes whose outcome stayed unknown
    reads_served: int = 0
    reads_dropped: int = 0
    retries: int = 0
    # Lease mode (cluster.py): this share of reads asks for a lease read, drawn from lease_rng.
    p_lease: float = 0.0
    lease_rng: random.Random | None = None
    lease_reads: int = 0

    def __attrs_post_init__(self) -> None:
        mix = self.read_mix
        self.clients = [Client(id=i, p_read=mix[i % len(mix)]) for i in range(self.n_clients + 1)]

    @property
    def write_timeout(self) -> int:
        """A client waits this long for an answer (the API's deadline plus a margin)."""
        return int(self.sim.api.deadline) + 3 * self.sim.tick_units

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
                c.avoid = op.node  # timed out: try somewhere else
                c.leader = None
                c.sticky = None
                if op.write is not None:
                    self._unknown(c, op)
                    continue
                op.node = None
                self.retries += 1
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
        final = write is True
        if write is None:
            write = self.rng.random() >= c.p_read
        if write:
            rng = self.rng
            cond = not final and rng.random() < self.p_cond
            w = KvWrite(
                client=c.id,
                op=c.next_op,
                key=key,
                value=f"c{c.id}.{c.next_op}",
                keyed=final or rng.random() < self.p_keyed,
                cond=cond,
                expect=c.seen.get(key) if cond else None,
            )
            return Op(
                client=c.id, op=c.next_op, key=key, write=w, data=encode_write(w), started=now
            )
        return Op(client=c.id, op=c.next_op, key=key, write=None, started=now)

    def _pick(self, c: Client, *, anywhere: bool = False) -> NodeId:
        if c.sticky is not None:
            return c.sticky
        if c.leader is not None and not anywhere:
            return c.leader
        ids = self.sim.client_targets()
        if c.avoid is not None and len(ids) > 1:
            ids = [n for n in ids if n != c.avoid]
        return self.rng.choice(ids)

    def _backoff(self, op: Op) -> int:
        """Wait before retrying: one tick, growing with failed attempts up to five."""
        return self.sim.tick_units * min(5, max(1, op.attempts // 2))

    def _attempt(self, c: Client, op: Op, now: int) -> None:
        sim = self.sim
        is_read = op.write is None
        nid = self._pick(c, anywhere=is_read and self.rng.random() < self.p_anywhere)
        sn = sim.nodes[nid]
        op.attempts += 1
        raft = sn.raft
        if raft is None:  # connection refused: the node is down (reconnect soon if sticky)
            c.leader = None
            op.retry_at = now + (self.sim.tick_units if c.sticky else self._backoff(op))
            if c.sticky and now - op.started > self.read_timeout * 3:
                c.sticky = None
            return
        op.node = nid
        op.life = sn.life
        if is_read:
            op.deadline = now + self.read_timeout
            if sn.paused:  # the request hangs until the client times out
                return
            ctx = op.ctx = sn.next_ctx
            sn.next_ctx += 1
            sn.reads[ctx] = ReadRecord(op=op, acked_at_issue=sim.checker.max_acked)
            lease = self.lease_rng is not None and self.lease_rng.random() < self.p_lease
            try:
                if lease:
                    self.lease_reads += 1
                    sim.sync_clock(sn)  # the driver catches its clock up before a lease read
                    # ... and asks its lease gate (mixed settings: capabilities.py)
                    raft.read_index(ctx, lease=sim.lease_gate_open(sn))
                else:
                    sim.settle(sn)
                    raft.read_index(ctx)
            except UnivrsError:
                op.node = None
                c.leader = None
                op.retry_at = now + self._backoff(op)
            sim.drain(sn)
            return
        w = op.write
        assert w is not None
        op.deadline = now + self.write_timeout
        attempt = op.attempts  # (a paused node's API handles it when it resumes)

        def reply(answer: Answer) -> None:
            self.on_answer(c, op, attempt, answer)

        sim.api.write(sn, w, op.data, reply)

    # ----------------------------------------------------------------- answers

    def on_answer(self, c: Client, op: Op, attempt: int, answer: Answer) -> None:
        """The API answered attempt ``attempt`` of write ``op``."""
        if c.op is not op or op.attempts != attempt or op.node is None:
            return  # a superseded attempt (the client timed out on it)
        w = op.write
        assert w is not None
        chk = self.sim.checker
        kind = answer.kind
        if kind in (OK, CONFLICT):
            chk.observe_answer(w, kind, answer.index)
            if kind == OK:
                self.writes_acked += 1
                c.seen[w.key] = w.value
                c.leader = op.node if c.leader is None else c.leader
            else:
                self.conflicts += 1
                c.seen.pop(w.key, None)  # unknown now: the next conditional write expects absent
            c.op = None
            c.avoid = None
            if op is self.final:
                self.final_acked_at = chk.max_acked
            return
        if kind == REFUSED:
            op.node = None
            c.leader = answer.hint
            op.retry_at = self.sim.now + self._backoff(op)
            self.retries += 1
            return
        self._unknown(c, op)

    def _unknown(self, c: Client, op: Op) -> None:
        """The outcome of the current attempt is unknown: resend a keyed write (the session
        answers a duplicate with the first result), give up on a keyless one."""
        w = op.write
        assert w is not None
        op.node = None
        self.retries += 1
        if w.keyed:
            op.retry_at = self.sim.now + self._backoff(op)
            return
        self.unknown += 1
        c.seen.pop(w.key, None)
        c.op = None

    # ----------------------------------------------------------------- node callbacks

    def on_read(self, sn: Node, ctx: int, read_index: int) -> None:
        """``sn`` released read ``ctx``: serve it from ``sn``'s state machine and check it."""
        rec = sn.reads.pop(ctx, None)
        if rec is None:
            raise InvariantViolation(
                READY_CONTRACT,
                f"{sn.id} released read ctx {ctx}, which this process never "
                "issued or which was already released",
            )
        op = rec.op
        value = sn.kv.get(op.key)
        self.sim.checker.observe_read(
            sn.id,
            ctx=ctx,
            read_index=read_index,
            served_at=sn.kv.applied,
            key=op.key,
            value=value,
            acked_at_issue=rec.acked_at_issue,
        )
        self.reads_served += 1
        if op.node == sn.id and op.life == sn.life and op.ctx == ctx:
            c = self.clients[op.client]
            c.leader = sn.leader or c.leader
            c.seen[op.key] = value
            c.op = None
            c.avoid = None
            c.sticky = None

    def on_read_dropped(self, sn: Node, ctx: int) -> None:
        rec = sn.reads.pop(ctx, None)
        if rec is None:
            raise InvariantViolation(
                READY_CONTRACT,
                f"{sn.id} dropped read ctx {ctx}, which this process never "
                "issued or which was already released",
            )
        self.reads_dropped += 1
        op = rec.op
        if op.node == sn.id and op.life == sn.life and op.ctx == ctx:
            c = self.clients[op.client]
            c.leader = sn.leader if sn.leader != sn.id else None
            op.node = None
            # Reconnected after a crash: ask the same node again at the next tick.
            op.retry_at = self.sim.now + (1 if c.sticky == sn.id else self._backoff(op))
            self.retries += 1

    def on_crash(self, sn: Node) -> None:
        """Connections to ``sn`` broke: its reads fail and their clients retry, on the same
        node once it is back, like a client that reconnects (writes: the API answers their
        outcome unknown, api.py)."""
        now = self.sim.now
        for c in self.clients:
            op = c.op
            if op is not None and op.write is None and op.node == sn.id:
                op.node = None
                self.retries += 1
                c.sticky = sn.id
                op.retry_at = now + self._backoff(op)
