"""The leader's heartbeats and ReadIndex rounds: the layer of RaftNode between snapshot
streaming and replication (layers: base.py). LeaderLayer (leader.py) builds on it.

Theory of operation
-------------------
Heartbeats go to every peer each ``heartbeat_ticks`` with ``commit = min(commit, match)`` and
the newest ReadIndex round; answers (handled in leader.py, where they also unpause probes)
confirm rounds. With ``RaftConfig.skip_busy_heartbeats`` (what nodes run) a periodic heartbeat
is skipped, and owed, for a follower that an append reached and that answered within the last
interval (``_heartbeat_may_wait`` says when it must still go). Every ``election_ticks_min``
ticks CheckQuorum (``_quorum_active``) demands that a quorum of voters was heard from.

A linearizable read (dissertation 6.4) is served at the commit index once a quorum answered a
heartbeat round sent after the read arrived, and only after an entry of the leader's term
committed (``_leader_read``). With ``RaftConfig.narrow_read_rounds`` a round goes first to just
enough voters for a quorum, widened a tick later if they do not answer (read_only.py, "Narrow
rounds"); with ``RaftConfig.read_lease`` a quorum's answers also start a clock-bound lease
(read_only.py, "Leases"). Removed peers are forgotten once a heartbeat told them their removal
is committed (``_prune_progress``).
"""

from __future__ import annotations

from univrs.raft.messages import Heartbeat, NodeId
from univrs.raft.native import mypyc_attr
from univrs.raft.progress import Progress, ProgressState
from univrs.raft.quorum import has_quorum, majority, quorum_value
from univrs.raft.read_only import PendingRead, WaitingRead
from univrs.raft.snapshot_stream import SnapshotStreamLayer


@mypyc_attr(allow_interpreted_subclasses=True)
class HeartbeatLayer(SnapshotStreamLayer):
    """Heartbeats, CheckQuorum and ReadIndex rounds of a leader (see the module docstring)."""

    # ---- hooks (mutants override these) ----------------------------------------------------------

    def _read_needs_quorum_check(self) -> bool:
        """ReadIndex confirms leadership with a heartbeat round (dissertation 6.4)."""
        return True

    # ---- helpers ---------------------------------------------------------------------------------

    def _committed_in_term(self) -> bool:
        return self._log.term_at(self._commit) == self._term

    def _prune_progress(self) -> None:
        """Forget peers the committed configuration no longer has, once each was told so.

        A removed peer is forgotten after a heartbeat of an earlier round told it a commit
        index covering its removal (so it learns the removal is final and stops campaigning),
        or after ``_removal_rounds_max`` rounds if it never catches up (down, cut off). Pruning
        at the first round lost that news for a peer whose acknowledgement of the removing
        entry came after the commit: its heartbeat carried min(commit, its match), below the
        entry, and then nothing more was sent to it.
        """
        members = self._configs.current.members
        index = self._configs.current_index
        limit = self._removal_rounds_max()
        for peer in [p for p in self._progress if p not in members]:
            pr = self._progress[peer]
            pr.removal_rounds += 1
            told = pr.removal_rounds > 1 and pr.commit_sent >= index
            if told or pr.removal_rounds >= limit:
                del self._progress[peer]

    def _removal_rounds_max(self) -> int:
        """Heartbeat rounds a removed peer that does not catch up is still sent to."""
        cfg = self.config
        return max(2, 2 * cfg.election_ticks_max // cfg.heartbeat_ticks)

    # ---- CheckQuorum and heartbeats --------------------------------------------------------------

    def _quorum_active(self) -> bool:
        """CheckQuorum: did a quorum of voters answer since the last check? Resets the marks."""
        progress = self._progress
        active = {peer for peer, pr in progress.items() if pr.recent_active}
        active.add(self.id)
        ok = has_quorum(self._configs.current.voters, active.__contains__)
        for pr in progress.values():
            pr.recent_active = False
        return ok

    def _broadcast_heartbeat(self, *, periodic: bool = False) -> None:
        """Heartbeats to every peer: a ReadIndex round's (never skipped), or the periodic
        ones (``periodic``), which skip a peer whose heartbeat may wait (``_heartbeat_may_wait``).
        """
        reads = self._leader_reads
        if self.config.read_lease:
            # Every broadcast is a round of its own, so an answer tells when its heartbeat was
            # sent (at this tick or later: the runtime sends after ready()).
            if not reads.round_unsent:
                reads.round_for_new_read()
            self._lease.sent(reads.round, self._now, self.config.lease_ticks)
        ctx = reads.round
        may_skip = periodic and self._skips_heartbeats()
        for peer, pr in self._progress.items():
            if may_skip and self._heartbeat_may_wait(peer, pr):
                # Owed: sent at the first tick it may no longer wait (``_send_owed_heartbeats``).
                # The commit index it would have carried goes as a notice if no append carries
                # it (the lazy ones wait for a broadcast tick or the next tick: commit_notice.py).
                pr.heartbeat_owed = True
                self._maybe_tell_commit(peer, pr, now=True)
                continue
            self._send_heartbeat(peer, pr, ctx)
        if (
            len(self._progress) >= len(self._configs.current.members)
            and self._commit >= self._configs.current_index
        ):
            # More peers than members: some were removed and the change is committed. Forget
            # each once a heartbeat has told it so (``_prune_progress``).
            self._prune_progress()

    def _send_heartbeat(self, peer: NodeId, pr: Progress, ctx: int) -> None:
        commit = min(self._commit, pr.match)
        pr.commit_sent = max(pr.commit_sent, commit)
        pr.heartbeat_owed = False
        self._leader_reads.sent(peer, ctx)
        self._send(Heartbeat(term=self._term, src=self.id, dst=peer, commit=commit, ctx=ctx))

    def _send_read_round(self) -> None:
        """Heartbeats for a new ReadIndex round: to every peer, or with
        ``RaftConfig.narrow_read_rounds`` to as many voters as a quorum needs
        besides us, those that acknowledged the newest rounds first (read_only.py, "Narrow
        rounds"); the others get it from ``_widen_read_rounds`` a tick later if a quorum has not
        answered by then."""
        cfg = self.config
        if not cfg.narrow_read_rounds:
            self._broadcast_heartbeat()
            return
        reads = self._leader_reads
        voters = self._configs.current.voters
        need = majority(len(voters)) - (1 if self.id in voters else 0)
        progress = self._progress
        candidates = [v for v in sorted(voters) if v != self.id and v in progress]
        if need >= len(candidates):
            self._broadcast_heartbeat()
            return
        # Ties go in id order (the sort is stable), never in the voter set's hash order: the
        # core's messages must not depend on the process's string hashing (the simulator
        # replays a seed in another process).
        keys = {v: (-reads.acked_round(v), not progress[v].recent_active) for v in candidates}
        candidates.sort(key=keys.__getitem__)
        ctx = reads.round
        if cfg.read_lease:
            # A quorum's answers to this round start a lease from now, as a broadcast's do:
            # any quorum of voters that heard from us then refuses votes for as long.
            self._lease.sent(ctx, self._now, cfg.lease_ticks)
        for peer in candidates[:need]:
            self._send_heartbeat(peer, progress[peer], ctx)
        reads.narrow = (ctx, self._now)

    def _widen_read_rounds(self) -> None:
        """At a tick: a narrow read round still unconfirmed since an earlier tick goes to every
        voter that has not had it (or a later round) yet."""
        reads = self._leader_reads
        narrow = reads.narrow
        if narrow is None or self._now <= narrow[1]:
            return
        reads.narrow = None
        pending = reads.newest_pending_round()
        if not pending:
            return
        ctx = reads.round
        for peer in sorted(self._configs.current.voters):
            pr = self._progress.get(peer)
            if (
                pr is not None
                and reads.sent_round(peer) < pending
                and reads.acked_round(peer) < pending
            ):
                self._send_heartbeat(peer, pr, ctx)

    def _skips_heartbeats(self) -> bool:
        """May periodic heartbeats be skipped at all (``RaftConfig.skip_busy_heartbeats``)?
        Not with read leases: a lease runs from
        the send tick of a heartbeat round a quorum answered (read_only.py, "Leases"), and an
        append's acknowledgement names no round; skipping would let the lease lapse under
        writes and turn lease reads into ReadIndex rounds."""
        cfg = self.config
        return cfg.skip_busy_heartbeats and not cfg.read_lease

    def _heartbeat_may_wait(self, peer: NodeId, pr: Progress) -> bool:
        """May ``peer``'s periodic heartbeat be skipped now (issue 14; docs/performance.md,
        "Round 15 (s15-beat)")? Only when an AppendEntries did its work: it went to ``peer``
        less than ``heartbeat_ticks`` ago (it carries our term and commit and resets the
        follower's election timer as a heartbeat does; etcd's MsgApp resets it too) and
        ``peer`` answered something less than ``heartbeat_ticks`` ago (its acknowledgements
        set ``recent_active`` for CheckQuorum exactly as heartbeat answers do). And only for a
        member in steady REPLICATE with room in its pipeline: a probing, paused or
        snapshotting follower's heartbeat answer is what unpauses it (a lost probe, a full
        window: ``_on_heartbeat_response``); a removed member is told its removal by
        heartbeats (``_prune_progress``); a peer that has not answered the newest pending
        ReadIndex round gets the periodic heartbeat as that round's retry. A skipped
        heartbeat is owed and goes at the first tick one of these no longer holds, so the
        follower hears from us at least every ``heartbeat_ticks`` as before. A hook."""
        now, hb = self._now, self.config.heartbeat_ticks
        sent, heard = pr.append_sent_at, pr.heard_at
        current = self._configs.current
        return (
            sent is not None
            and now - sent < hb
            and heard is not None
            and now - heard < hb
            and pr.state is ProgressState.REPLICATE
            and not pr.inflights.full()
            and (peer in current.voters or peer in current.learners)
            and not self._leader_reads.waits_on(peer)
        )

    def _send_owed_heartbeats(self) -> None:
        """Between periodic ticks: send each skipped heartbeat whose reason to wait is gone."""
        for peer, pr in self._progress.items():
            if pr.heartbeat_owed and not self._heartbeat_may_wait(peer, pr):
                self._send_heartbeat(peer, pr, self._leader_reads.round)

    # ---- ReadIndex (dissertation 6.4; read_only.py) ----------------------------------------------

    def _lease_valid(self) -> bool:
        """Do we hold a read lease now (read_only.py, "Leases")? A hook: mutants break it."""
        cfg = self.config
        return cfg.read_lease and self._lease.valid(self._now, cfg.lease_ticks)

    def _lease_quorum_acked(self, round: int) -> None:
        """A quorum answered every heartbeat round up to ``round``: the lease runs from the
        newest such round's send tick. A hook: a mutant measures from the answer instead."""
        self._lease.quorum_acked(round)

    def _leader_read(self, ctx: int, requester: NodeId | None, lease: bool = False) -> None:
        deadline = self._now + self._read_timeout()
        reads = self._leader_reads
        if not self._committed_in_term():
            # Our commit index may lag the true one until an entry of our term commits.
            reads.wait_for_commit(WaitingRead(ctx=ctx, requester=requester, deadline=deadline))
            return
        if lease and self._lease_valid():
            self._confirmed_read(ctx, requester, self._commit)
            return
        if not self._read_needs_quorum_check():
            self._confirmed_read(ctx, requester, self._commit)
            return
        round, new_round = reads.round_for_new_read()
        reads.add(
            PendingRead(
                ctx=ctx, requester=requester, index=self._commit, round=round, deadline=deadline
            )
        )
        if new_round:
            self._send_read_round()
        self._confirm_reads()

    def _confirm_reads(self) -> None:
        reads = self._leader_reads
        self_id = self.id
        quorum_round = quorum_value(
            [
                reads.round if v == self_id else reads.acked_round(v)
                for v in self._configs.current.voters
            ]
        )
        if self.config.read_lease:
            self._lease_quorum_acked(quorum_round)
        for r in reads.pop_confirmed(quorum_round):
            self._confirmed_read(r.ctx, r.requester, r.index)
