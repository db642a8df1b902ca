"""InspectLayer: what a RaftNode says about itself: ``status()`` (a frozen view, the leader's
view of each peer included) and ``problems()`` (its internal invariants, checked). Both only
read the fields of the layers below; nothing here changes the node.
"""

from __future__ import annotations

from univrs.raft.gate import GateLayer
from univrs.raft.messages import AppendEntriesResponse, HardState, Message, NodeId
from univrs.raft.native import mypyc_attr
from univrs.raft.quorum import quorum_value
from univrs.raft.ready import PeerStatus, Role, Status

__all__ = ["InspectLayer"]


@mypyc_attr(allow_interpreted_subclasses=True)
class InspectLayer(GateLayer):
    """The node's status and invariant check (see the module docstring)."""

    def status(self) -> Status:
        """A frozen view of this node (the leader also reports each peer's progress)."""
        voters = self._configs.current.voters
        peers = tuple(
            PeerStatus(
                id=pid,
                match=pr.match,
                next=pr.next,
                state=pr.state.value,
                inflight=pr.snapshot.inflight if pr.snapshot is not None else len(pr.inflights),
                recent_active=pr.recent_active,
                voter=pid in voters,
                snapshot_acked=pr.snapshot.acked if pr.snapshot is not None else 0,
                snapshot_size=pr.snapshot.snapshot.size if pr.snapshot is not None else 0,
            )
            for pid, pr in sorted(self._progress.items())
        )
        return Status(
            id=self.id,
            role=self._role,
            term=self._term,
            vote=self._vote,
            leader=self._leader,
            commit=self._commit,
            applied=self._applied,
            persisted=self._persisted,
            last_index=self._log.last_index,
            last_term=self._log.last_term,
            first_index=self._log.first_index,
            membership=self._configs.current,
            peers=peers,
            snapshot_index=self._snapshot_index,
            refused_messages=sum(self._refused.values()),
            refused=tuple(sorted(self._refused.items())),
            config_index=self._configs.current_index,
            lease=self._role is Role.LEADER and self._lease_valid(),
            pinned=tuple(sorted(self._pinned.items())),
        )

    def role(self) -> Role:
        """``Status.role``, without building the status: one field, for a caller that asks
        every tick (the simulator's forger)."""
        return self._role

    def persist_report_may_wait(self, index: int, hard_state: HardState | None) -> bool:
        """True if a durable report of entries up to ``index`` and of ``hard_state`` changes
        nothing this node does until its next input: it follows or leads, the hard state
        raises neither its durable term nor its pins (no held message is released), nothing
        committed waits for entries to be durable here (commit <= persisted: no entry would
        be handed out to apply), ``index`` is past its snapshot (not an install's report) and,
        on a leader, counting itself durable up to ``index`` commits nothing (no quorum of
        voters with it past the commit index). A runtime may then give the report to the core
        at its next step, before that step's input, instead of waking for it (a follower's
        acks went out with the write's completion; a leader's next ack is stepped after it).
        Read-only; O(1) on a follower, O(voters) on a leader."""
        if self._commit > self._persisted or index <= self._snapshot_index:
            return False
        if self._role is Role.LEADER:
            self_id = self.id
            voters = self._configs.current.voters  # what _maybe_commit counts, once reported
            if quorum_value([index if v == self_id else self._match_of(v) for v in voters]) > (
                self._commit
            ):
                return False
        elif self._role is not Role.FOLLOWER:
            return False
        return hard_state is None or (
            hard_state.term <= self._durable_term and len(hard_state.pins) <= self._durable_pins
        )

    def append_response_may_wait(self, msg: Message) -> bool:
        """True if stepping ``msg`` now changes nothing this node does until its next input,
        so a runtime may step it then, before that input, instead of waking for it (issue
        14, round 19: the second follower's acknowledgement of a write, which the leader's
        driver woke for to do nothing). Only for an AppendEntries success of our term to us
        as leader whose sender the gate takes without pinning it (a pin is a hard state to
        persist), and which the leader's own rules say changes nothing: no commit, nothing
        more to send, no notice due, no transfer, a voter in REPLICATE
        (``_append_success_may_wait``). Stepped later, before the next input and at the same
        clock, it leaves the core as stepping it now would; anything stepped meanwhile would
        be an input. Read-only; O(voters)."""
        return (
            type(msg) is AppendEntriesResponse
            and msg.success
            and self._role is Role.LEADER
            and msg.term == self._term
            and msg.dst == self.id
            and msg.src != self.id
            and not self._would_pin(msg)
            and self._append_success_may_wait(msg)
        )

    def pinned_incarnation(self, node: NodeId) -> str | None:
        """The incarnation ``node`` is pinned to (its entry in ``Status.pinned``), or None:
        one lookup, for a caller that asks per message (the simulator's forger)."""
        return self._pinned.get(node)

    def problems(self) -> list[str]:
        """Broken internal invariants, described (empty when all hold).

        Cheap enough to call after every step (the simulator does): O(peers), never O(log).
        Callers raise on a non-empty answer, so the checks survive ``python -O``, unlike the
        core's own asserts.
        """
        # Messages are built only for a check that fails: this runs after every step.
        broken: list[str] = []
        bad = broken.append  # no closure: mypyc compiles this module (scripts/compile)
        log = self._log
        last = log.last_index

        if self._durable_term > self._term:
            bad(f"durable term {self._durable_term} > term")
        if self._durable_pins > len(self._pinned):
            bad(f"{self._durable_pins} pins durable, {len(self._pinned)} held")
        if log.last_term > self._term:
            bad(f"last log term {log.last_term} > term {self._term}")
        if self._commit > last:
            bad(f"commit {self._commit} beyond last index {last}")
        if self._persisted > log.stable_limit:
            bad(f"persisted {self._persisted} beyond stable")
        # (An installed snapshot counts as handed out before its write is durable.)
        if self._handed > min(self._commit, max(self._persisted, self._snapshot_index)):
            bad(f"handed out {self._handed} > min(commit, persisted)")
        if self._applied > self._handed:
            bad(f"applied {self._applied} > handed {self._handed}")
        if log.first_index - 1 > min(self._applied, self._commit):
            bad(f"compacted to {log.first_index - 1}, past applied/commit")
        if log.snapshot_index > self._snapshot_index:
            bad("log compacted past the newest snapshot")
        if (self._leader == self.id) != (self._role is Role.LEADER):
            bad("leader field vs role")
        if self._role is not Role.LEADER:
            if self._progress:
                bad("a non-leader keeps replication progress")
            return self._described(broken)
        if self._vote != self.id:
            bad(f"leader voted for {self._vote} in its own term")
        if log.last_term != self._term:
            bad("leader's log does not end in its term")
        for peer in sorted(self._configs.current.members):
            if peer != self.id and peer not in self._progress:
                bad(f"no progress for {peer}")
        for peer, pr in self._progress.items():
            if not 0 <= pr.match < pr.next:
                bad(f"{peer}: match {pr.match} next {pr.next}")
            if pr.match > last:
                bad(f"{peer}: match {pr.match} beyond last index {last}")
        return self._described(broken)

    def _described(self, broken: list[str]) -> list[str]:
        """``problems()``'s answers: each broken invariant with the node that broke it."""
        return [f"{self.id}: {what} ({self!r})" for what in broken]
