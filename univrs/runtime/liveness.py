"""Node liveness: registered machines heartbeat; the leader marks the silent ones down.

Theory of operation (Nomad's client heartbeats, made deterministic). A registered machine
sends ``node.heartbeat`` at least once per TTL (every third of it is the advice). Heartbeats
go to the leader (a follower forwards them like writes) and are noted only in the leader's
memory (``heartbeat``): a heartbeat of a live node writes nothing to the log. The leader's
task (``run``: it starts when this node becomes leader and stops when it loses the term)
checks every ``check_every`` seconds, by the leader's own clock, which nodes have not
heartbeated for ``ttl_ms`` and proposes ``UpdateNodeStatus(down, expected_version=...)`` for
each: the decision is made on the leader, the apply only applies a command (no clock is read
in the state machine), and the node's live instances turn ``unknown`` in the same step. A
heartbeat of a ``down`` node proposes it back to ``ready`` (univrs/api/ops.py).

A new leader does not know when the nodes last heartbeated to its predecessor, so it grants
everybody a grace period of one TTL from the start of its term before marking anyone down.
The conditional write (the node's version) keeps a stale decision from overwriting a newer
status: a leader deposed mid-proposal, or an operator's change, wins.

``ttl_ms = 0`` turns liveness off (nodes are then managed by hand, with ``node.update_status``).
"""

from __future__ import annotations

import logging

import attrs
import trio

from univrs.errors import NotLeader, OutcomeUnknown, ProposalDropped, Unavailable
from univrs.raft.ready import Role
from univrs.runtime.driver import RaftRuntime
from univrs.sm.commands import Envelope, UpdateNodeStatus
from univrs.sm.model import NodeStatus
from univrs.sm.responses import Failure

log = logging.getLogger("univrs.node")


@attrs.define(eq=False)
class Liveness:
    """The leader's heartbeat tracker and its down-marking task (see the module docstring)."""

    runtime: RaftRuntime
    ttl_ms: int
    # node id -> trio time of its last heartbeat to this node while it led.
    _seen: dict[str, float] = attrs.field(factory=dict, init=False)
    # trio time this node's current leadership started (None: not leading).
    _leading_since: float | None = attrs.field(default=None, init=False)
    marked_down: int = attrs.field(default=0, init=False)  # for metrics and tests

    @property
    def check_every(self) -> float:
        """Seconds between two checks: a tenth of the TTL, within 0.05 .. 1 s."""
        return min(1.0, max(0.05, self.ttl_ms / 10_000))

    def heartbeat(self, node_id: str) -> None:
        """Note a heartbeat of ``node_id`` (the caller checked it is registered)."""
        self._seen[node_id] = trio.current_time()

    async def run(self) -> None:
        """Run the leader-only task whenever this node leads (until cancelled)."""
        if self.ttl_ms <= 0:
            return
        runtime = self.runtime
        while True:
            status = runtime.status()
            if status.role is not Role.LEADER:
                await runtime.wait_changed()
                continue
            term = status.term
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._lead, term)
                while runtime.status().role is Role.LEADER and runtime.status().term == term:
                    await runtime.wait_changed()
                nursery.cancel_scope.cancel()
            self._leading_since = None
            log.info("liveness checks stopped", extra={"term": term})

    async def _lead(self, term: int) -> None:
        started = self._leading_since = trio.current_time()
        ttl = self.ttl_ms / 1000
        log.info(
            "liveness checks started; grace period of one ttl",
            extra={"term": term, "ttl_ms": self.ttl_ms},
        )
        while True:
            await trio.sleep(self.check_every)
            await self.check(started, ttl)

    async def check(self, started: float, ttl: float) -> None:
        """Propose ``down`` for every node silent for ``ttl`` seconds (counting from
        ``started`` at the earliest)."""
        now = trio.current_time()
        nodes = self.runtime.sm.list_nodes()
        registered = {n.id for n in nodes}
        for gone in [n for n in self._seen if n not in registered]:
            del self._seen[gone]  # deregistered: forget it (bounded by the registered nodes)
        for node in nodes:
            if node.status is NodeStatus.DOWN:
                continue
            seen = max(self._seen.get(node.id, started), started)
            if now - seen < ttl:
                continue
            command = UpdateNodeStatus(
                id=node.id, status=NodeStatus.DOWN, expected_version=node.version
            )
            try:
                with trio.move_on_after(ttl) as scope:
                    response = await self.runtime.propose(Envelope(command=command))
            except (NotLeader, ProposalDropped, OutcomeUnknown, Unavailable):
                return  # leadership moved: the next leader decides
            if scope.cancelled_caught:
                return
            if isinstance(response, Failure):
                continue  # its version moved on (a heartbeat, an operator): seen next round
            self.marked_down += 1
            log.info(
                "node marked down: no heartbeat within its ttl",
                extra={"node": node.id, "silent_ms": int((now - seen) * 1000)},
            )
