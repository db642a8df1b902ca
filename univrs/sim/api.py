"""The simulated API write path: what ``univrs.api.store.RaftStateStore`` does with a write.

Theory of operation. A client sends a write to a node's API (``SimApi.write``, ``hops=0``). Until
its deadline, the node's API, like ``RaftStateStore.submit``:

* on the leader: adds it to the node's proposal batch, which the node flushes with one
  ``propose_many`` at the end of the current step (``ProposalBatches.flush``, which
  may hold the batch longer: until the batch in flight applies; that changes when a proposal
  is appended, not the rules of its outcome); the
  appended proposal waits in the node's ``PendingProposals`` (univrs/runtime/proposals.py, the
  same code the Trio driver uses) until its index is applied (its own entry: the state
  machine's answer; another term's entry: not applied, retry) or a snapshot from the leader
  covers it (outcome unknown). A leadership change fails the batch not yet flushed (not
  appended: retry); appended proposals stay pending, and the deadline bounds the wait;
* on a follower that knows the leader: forwards it to the leader's API (``hops=1``) over a
  simulated TCP connection (no loss; a link cut at connect time refuses it, one cut or a
  leader crash after sending breaks it with the outcome unknown); the leader's answer comes
  back the same way. A forwarded request on a node that does not lead answers not-leader
  with a hint;
* with no known leader: waits for one for at most ``leader_wait``, then answers unavailable.

Which attempt may be retried, and what the client is told, is ``WriteAttempts``'s rule
(univrs/runtime/proposals.py, shared with the real API): an attempt that certainly did not
apply is retried after a short pause; an attempt that may have applied ends a keyless write
with "unknown" and is retried for a keyed one (the state machine's session answers the
duplicate); once an attempt may have applied, refusals and the deadline answer "unknown".
The answers are ``ok`` / ``conflict`` (the state machine's result, at the index the write was
first applied), ``refused`` (nothing applied, with a leader hint if known) and ``unknown``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

import attrs

from univrs.errors import NotLeader, ProposalDropped
from univrs.raft.messages import NodeId
from univrs.raft.ready import Role
from univrs.runtime.proposals import Outcome, PendingProposals, WriteAttempts
from univrs.sim.faults import TICK
from univrs.sim.kv import KvResult, KvWrite, encode_batch
from univrs.sim.world import Node, World

OK = "ok"
CONFLICT = "conflict"
REFUSED = "refused"
UNKNOWN = "unknown"

MAX_PACK = 6  # writes in one simulated batch entry at most
SETTLE = TICK  # units between attempts that failed for a transient reason (RETRY_PAUSE)
FORWARD_MARGIN = 5  # the leader's deadline is this much shorter, so its answer comes back


@attrs.frozen(slots=True)
class Answer:
    """What the API answers a write: ok | conflict | refused | unknown."""

    kind: str
    index: int = 0  # ok / conflict: where the write was (first) applied
    hint: NodeId | None = None  # refused by a node that does not lead: who does


@attrs.define(eq=False, slots=True)
class Request:
    """One write being executed by the API of ``node`` (process ``life``)."""

    id: int
    write: KvWrite
    data: bytes
    node: NodeId
    life: int
    hops: int
    deadline: int
    reply: Callable[[Answer], None]
    attempts: WriteAttempts
    state: str = "new"  # new | batch | pending | forward | wait | done
    hint: NodeId | None = None
    wait_since: int | None = None  # waiting for a leader since (units)
    forwarded: Request | None = None  # the attempt forwarded to the leader


@attrs.define(eq=False)
class SimBatch:
    """Requests proposed together as one batch entry (kv.py ``encode_batch``)."""

    reqs: tuple[Request, ...]
    data: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.data = encode_batch([r.data for r in self.reqs])


@attrs.define(eq=False)
class SimApi:
    """The API of every simulated node (state per node lives in ``Node``)."""

    sim: World
    deadline: int  # units a client request may take (RaftStateStore.timeout)
    leader_wait: int  # units to wait for an election before answering unavailable
    # Batch entries (``_pack``): None proposes one entry per write, as a node without
    # ``raft.batch_entries`` does.
    pack_rng: random.Random | None = None
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    # Statistics.
    forwards: int = 0
    unknown: int = 0
    covered: int = 0  # proposals a snapshot install covered (bug 5's situation)

    # ----------------------------------------------------------------- entry points

    def write(
        self,
        sn: Node,
        write: KvWrite,
        data: bytes,
        reply: Callable[[Answer], None],
        *,
        hops: int = 0,
        deadline: int | None = None,
    ) -> Request:
        """A write arrives at ``sn``'s API (from a client, or forwarded with ``hops=1``)."""
        sim = self.sim
        req = Request(
            id=next(self._ids),
            write=write,
            data=data,
            node=sn.id,
            life=sn.life,
            hops=hops,
            deadline=sim.now + self.deadline if deadline is None else deadline,
            reply=reply,
            attempts=WriteAttempts(keyed=write.keyed),
        )
        sn.serving[req.id] = req
        sim.at(req.deadline, self._expire, req)
        self._attempt(req)
        return req

    def on_applied(
        self, sn: Node, index: int, term: int, results: Sequence[KvResult | None]
    ) -> None:
        """``sn`` applied the entry (index, term) with ``results``, one per write it carries
        (``[None]``: not a client write)."""
        settled = sn.proposals.applied(index, term)
        if settled is None:
            return
        token, outcome = settled
        reqs = token.reqs if isinstance(token, SimBatch) else (token,)
        if outcome is Outcome.APPLIED and len(results) != len(reqs):
            raise AssertionError(
                f"{sn.id}: entry {index} applied {len(results)} results for {len(reqs)} proposals"
            )
        for req, result in zip(reqs, results, strict=False):
            if req.state != "pending":
                continue  # answered already (its deadline passed)
            if outcome is Outcome.APPLIED:
                if result is None:
                    raise AssertionError(f"{sn.id}: proposal {req.id} applied as a non-write")
                self._finish(req, Answer(result[0], result[1]))
            else:
                self._failed(req, outcome)

    def on_install(self, sn: Node, snapshot_index: int) -> None:
        """``sn`` installed a snapshot from the leader up to ``snapshot_index``."""
        outcome = sn.proposals.covered_outcome()
        for token in sn.proposals.covered(snapshot_index):
            for req in token.reqs if isinstance(token, SimBatch) else (token,):
                if req.state == "pending":
                    self.covered += 1
                    self._failed(req, outcome)

    def on_leadership_lost(self, sn: Node) -> None:
        """``sn`` stopped leading: its batch was never appended (NotLeader: retry)."""
        batch, sn.batch = sn.batch, []
        for req in batch:
            if req.state == "batch":
                self._failed(req, Outcome.NOT_APPLIED)

    def on_crash(self, sn: Node) -> None:
        """``sn``'s process died: every request it served breaks (connection lost after the
        request was sent: the requester cannot know whether it applied)."""
        serving, sn.serving = sn.serving, {}
        sn.batch = []
        sn.proposals = PendingProposals()
        for req in serving.values():
            if req.state != "done":
                req.state = "done"
                req.reply(Answer(UNKNOWN))

    # ----------------------------------------------------------------- the attempt loop

    def _attempt(self, req: Request) -> None:
        if req.state == "done":
            return
        sim = self.sim
        sn = sim.nodes[req.node]
        if sn.life != req.life or sn.raft is None:
            return  # the process died: on_crash answered
        if sn.paused:
            sn.backlog.append((self._attempt, req))
            return
        if sim.now >= req.deadline:
            self._finish(req, Answer(REFUSED))  # unknown if an attempt may have applied
            return
        if sn.role is Role.LEADER:
            req.state = "batch"
            if not sn.batch:
                sim.at(sim.now, self._flush, (sn, sn.life))
            sn.batch.append(req)
            return
        if req.hops >= 1:
            self._finish(req, Answer(REFUSED, hint=sn.leader))
            return
        leader = req.hint or sn.leader
        req.hint = None
        if leader is None:
            if req.wait_since is None:
                req.wait_since = sim.now
            if sim.now - req.wait_since >= self.leader_wait:
                self._finish(req, Answer(REFUSED))
                return
            req.state = "wait"
            sim.at(sim.now + SETTLE, self._attempt, req)
            return
        req.wait_since = None
        if leader == sn.id:  # our view is mid-change: let it settle
            self._settle(req)
            return
        self._forward(req, leader)

    def _flush(self, arg: tuple[Node, int]) -> None:
        """The node's driver step ends: the batch becomes one ``propose_many``."""
        sn, life = arg
        if sn.life != life or sn.raft is None:
            return
        if sn.paused:
            sn.backlog.append((self._flush, arg))
            return
        batch, sn.batch = sn.batch, []
        live = [r for r in batch if r.state == "batch"]
        if not live:
            return
        entries = self._pack(live)
        self.sim.settle(sn)
        try:
            term, first = sn.raft.propose_many([e.data for e in entries])
        except (NotLeader, ProposalDropped):
            for r in live:
                self._failed(r, Outcome.NOT_APPLIED)
            self.sim.drain(sn)
            return
        for r in live:
            r.state = "pending"
        sn.proposals.appended(term, first, entries)
        self.sim.drain(sn)

    def _pack(self, live: list[Request]) -> list[Request | SimBatch]:
        """Like the node's ``Packing`` (univrs/runtime/packing.py): consecutive proposals in
        batch entries of 2 to ``MAX_PACK`` writes, here with a seeded coin per flush and per
        batch, so runs mix single and batch entries."""
        rng = self.pack_rng
        if rng is None or len(live) < 2 or rng.random() < 0.3:
            return list(live)
        out: list[Request | SimBatch] = []
        i = 0
        while i < len(live):
            n = 1 + int(rng.random() * MAX_PACK)
            group = live[i : i + n]
            i += len(group)
            if len(group) == 1:
                out.append(group[0])
            else:
                out.append(SimBatch(tuple(group)))
        return out

    def _forward(self, req: Request, leader: NodeId) -> None:
        sim = self.sim
        target = sim.nodes[leader]
        if target.raft is None or sim.net.is_blocked(req.node, leader):
            self._settle(req)  # could not connect: nothing was sent
            return
        self.forwards += 1
        req.state = "forward"
        fwd_deadline = req.deadline - FORWARD_MARGIN
        if fwd_deadline <= sim.now:
            self._finish(req, Answer(REFUSED))
            return
        sim.at(
            sim.now + self._latency(),
            self._arrive,
            (req, target, target.life, fwd_deadline),
        )

    def _arrive(self, arg: tuple[Request, Node, int, int]) -> None:
        """A forwarded request reaches the leader's API (or the connection broke)."""
        req, target, life, fwd_deadline = arg
        if req.state != "forward":
            return
        sim = self.sim
        if target.life != life or target.raft is None or sim.net.is_blocked(req.node, target.id):
            self._forward_failed(req)
            return

        box: list[Request] = []  # the forwarded request (its answer may come at once)

        def reply(answer: Answer) -> None:
            sim.at(sim.now + self._latency(), self._answered, (req, box, answer))

        box.append(self.write(target, req.write, req.data, reply, hops=1, deadline=fwd_deadline))
        req.forwarded = box[0]

    def _answered(self, arg: tuple[Request, list[Request], Answer]) -> None:
        """The leader's answer to a forwarded request comes back."""
        req, box, answer = arg
        fwd = box[0]
        if req.state != "forward" or req.forwarded is not fwd:
            return
        sim = self.sim
        sn = sim.nodes[req.node]
        if sn.paused and sn.life == req.life:
            sn.backlog.append((self._answered, arg))
            return
        req.forwarded = None
        if sim.net.is_blocked(fwd.node, req.node):
            self._forward_failed(req)  # the connection broke with the answer on its way
            return
        if answer.kind in (OK, CONFLICT, UNKNOWN):
            self._finish(req, answer)
        elif answer.hint is not None and answer.hint != fwd.node:
            req.hint = answer.hint  # follow the hint at once
            self._attempt(req)
        else:
            self._settle(req)

    def _forward_failed(self, req: Request) -> None:
        """The connection to the leader broke after the request was sent."""
        req.forwarded = None
        self._failed(req, Outcome.UNKNOWN)

    def _failed(self, req: Request, outcome: Outcome) -> None:
        if req.attempts.failed(outcome):
            self._settle(req)
        else:
            self._finish(req, Answer(UNKNOWN))

    def _settle(self, req: Request) -> None:
        req.state = "wait"
        self.sim.at(self.sim.now + SETTLE, self._attempt, req)

    def _expire(self, req: Request) -> None:
        """The request's deadline: a proposal or forward in flight may have applied."""
        if req.state == "done":
            return
        sn = self.sim.nodes[req.node]
        if sn.paused and sn.life == req.life:
            sn.backlog.append((self._expire, req))
            return
        if req.state in ("batch", "pending", "forward"):
            req.attempts.maybe_applied = True
        self._finish(req, Answer(REFUSED))

    def _finish(self, req: Request, answer: Answer) -> None:
        if req.state == "done":
            return
        if answer.kind == REFUSED and req.attempts.refusal_is_unknown():
            answer = Answer(UNKNOWN)
        if answer.kind == UNKNOWN:
            self.unknown += 1
        req.state = "done"
        sn = self.sim.nodes[req.node]
        if sn.life == req.life:
            sn.serving.pop(req.id, None)
        req.reply(answer)

    def _latency(self) -> int:
        net = self.sim.net
        return net.lat_min + int(self.sim.rng.random() * (net.lat_max - net.lat_min + 1))
