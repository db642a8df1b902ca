"""The leader's half of RaftNode: replication, commit, answers to heartbeats and
configuration changes. Three layers below it hold the rest: heartbeats, CheckQuorum and
ReadIndex rounds (heartbeat.py), snapshot streaming (snapshot_stream.py; its theory is in
compaction.py) and commit notices (commit_notice.py).

Theory of operation
-------------------
On election the leader resets every peer to PROBE at ``next = last + 1`` and appends a NOOP of
its term (paper 5.4.2, 8): nothing of an earlier term commits until an entry of the new term
does, and reads wait for that too. Appends go out before the leader's own write is durable
(``Ready.messages``); the leader counts itself toward commit only up to ``_self_match_index()``.

Replication per peer follows its ``Progress`` (progress.py): one probe at a time until a
success, then a pipeline of up to ``max_inflight`` AppendEntries, each bounded by
``max_entries_per_msg`` and ``max_bytes_per_msg`` (at least one entry). A rejection carries the
follower's hint (AppendEntriesResponse docstring); ``_next_from_hint`` skips a whole term per
round trip instead of one entry (paper 5.3, end). A heartbeat's answer unpauses a probe and
unsticks a full pipeline (a lost append is retried at the next heartbeat); the periodic
tick (``_tick_leader``) runs CheckQuorum, heartbeats and leader transfers' deadlines.
"""

from __future__ import annotations

from collections.abc import Sequence

from univrs.errors import NotLeader, ProposalDropped
from univrs.raft.heartbeat import HeartbeatLayer
from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HeartbeatResponse,
    Membership,
    NodeId,
    TimeoutNow,
)
from univrs.raft.native import mypyc_attr
from univrs.raft.progress import Inflights, Progress, ProgressState
from univrs.raft.quorum import quorum_index, quorum_value
from univrs.raft.ready import Role


@mypyc_attr(allow_interpreted_subclasses=True)
class LeaderLayer(HeartbeatLayer):
    """Leader-side behaviour of RaftNode (see the module docstring; layers: base.py)."""

    # ---- hooks (mutants override these; the real logic goes through them) --------------------

    def _can_commit_by_counting(self, index: int) -> bool:
        """Figure 8 (paper 5.4.2): only an entry of the current term commits by counting."""
        return self._log.term_at(index) == self._term

    def _self_match_index(self) -> int:
        """What the leader counts for itself toward commit: its durable index."""
        return self._persisted

    def _max_inflight_config_changes(self) -> int:
        """How many uncommitted CONFIG entries may exist at once (single-server changes).

        ``propose_membership`` refuses a change while this many are uncommitted: with 1, one
        change at a time (dissertation 4.1: a new change only once the previous committed).
        """
        return 1

    def _notice_log_regress(self) -> bool:
        """Does a rejection showing a log shorter than ``match`` reset the follower's progress?"""
        return True

    def _config_change_needs_term_commit(self) -> bool:
        """A leader starts a configuration change only after committing an entry of its term.

        The 2015 correction to single-server changes: without it a new leader whose log lacks
        its predecessor's uncommitted change can append a different one, and the two
        configurations may have disjoint majorities.
        """
        return True

    def _fresh_progress_on_reentry(self) -> bool:
        """A member that (re)enters the configuration, or changes incarnation, starts over.

        The leader's old ``match`` belongs to the old incarnation or to the time before the
        removal; keeping it would stop backtracking above it and could report a follower with
        an empty log as caught up.
        """
        return True

    # ---- becoming leader, appending ----------------------------------------------------------

    def _become_leader(self) -> None:
        assert self._role is Role.CANDIDATE, f"only a candidate can win ({self!r})"
        self._set_state(Role.LEADER, self.id)
        self._votes = {}
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        self._transferee = None
        last = self._log.last_index
        self._progress = {
            peer: self._new_progress(last + 1)
            for peer in sorted(self._tracked_at_election())
            if peer != self.id
        }
        self._leader_reads.reset_acks()
        self._lease.reset()
        self._receiving = None  # a leader installs no snapshot
        self._append_as_leader(((EntryKind.NOOP, b""),))

    def _tracked_at_election(self) -> frozenset[NodeId]:
        """The peers a new leader sends the log to: the members of the configuration in
        effect, and those of the committed one that an uncommitted change removes.

        A member being removed keeps receiving the log until its removal commits and a
        heartbeat told it so (``_leader_config_change``, ``_prune_progress``), whichever
        leader it is under: a leader elected after the removal was appended used to track
        only its own configuration's members, so the member heard no leader, campaigned,
        and could vouch for none. Without TLS a member that lags behind the change adding
        that leader then had no one to vouch for it and refused it for good (simulator, 3
        nodes, seed 40194: n3 lists n1, retired, and n2, whose removal n4 holds; n4 needs
        n3). A hook: the simulator's test core without it shows that seed failing."""
        configs = self._configs
        return configs.current.members | configs.committed(self._commit).members

    def _new_progress(self, next_index: int) -> Progress:
        return Progress(
            match=0, next=next_index, inflights=Inflights(capacity=self.config.max_inflight)
        )

    def _append_entries(self, entries: Sequence[Entry]) -> None:
        """Append to the log; CONFIG entries take effect now (dissertation 4.1)."""
        before = self._configs.current
        self._log.append(entries)
        if self._configs.on_append(entries):
            self._on_config_change(before)

    def _check_can_propose(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self._transferee}")

    def _append_as_leader(self, items: Sequence[tuple[EntryKind, bytes]]) -> int:
        """Append entries of the current term, start replicating them; returns the first index."""
        first = self._log.last_index + 1
        term = self._term
        entries = [
            Entry(term=term, index=first + i, kind=kind, data=data)
            for i, (kind, data) in enumerate(items)
        ]
        self._append_entries(entries)
        for peer in self._progress:
            self._send_appends(peer)
        self._maybe_commit()
        return first

    def _on_config_change(self, before: Membership) -> None:
        """The configuration in effect changed (an append or a truncation, dissertation 4.1)."""
        if self._role is Role.LEADER:
            self._leader_config_change(before)
        elif self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            if not self._promotable():
                self._become_follower(self._term, None)
        else:
            self._role = Role.FOLLOWER if self._promotable() else Role.LEARNER

    def _leader_config_change(self, before: Membership) -> None:
        """Track every member of the configuration in effect.

        Members it removes keep receiving the log until it commits and a heartbeat has told
        them a commit index covering their removal (or, if they never catch up, for a bounded
        number of rounds: ``_prune_progress``), so a removed node learns that its removal is
        final and stops campaigning. A member that was not in ``before`` (added,
        or re-added while its old progress lingers) or whose incarnation changed gets fresh
        progress: what the old one acknowledged says nothing about the new one's log.
        """
        current = self._configs.current
        for peer in sorted(current.members):
            if peer == self.id:
                continue
            reentry = peer not in before.members or (
                current.incarnation_of(peer) != before.incarnation_of(peer)
            )
            if peer not in self._progress or (reentry and self._fresh_progress_on_reentry()):
                self._progress[peer] = self._new_progress(self._log.last_index)
        if self._transferee is not None and self._transferee not in self._configs.current.voters:
            self._transferee = None

    # ---- commit ------------------------------------------------------------------------------

    def _match_of(self, node: NodeId) -> int:
        if node == self.id:
            return self._self_match_index()
        pr = self._progress.get(node)
        return pr.match if pr is not None else 0

    def _maybe_commit(self) -> bool:
        """Advance commit to the quorum's match index if that entry is of this term (5.4.2).

        Terms never decrease along the log, so if the quorum index's entry is of an older term
        no smaller index is of this term either: checking that one index is enough.
        """
        if self._role is not Role.LEADER:
            return False
        index = quorum_index(self._configs.current.voters, self._match_of)
        if index <= self._commit or not self._can_commit_by_counting(index):
            return False
        assert index <= self._log.last_index, f"quorum index {index} beyond log ({self!r})"
        old_commit, self._commit = self._commit, index
        self._notify_commit(old_commit)
        if self._leader_reads.has_unconfirmed() and self._committed_in_term():
            for w in self._leader_reads.take_waiting():
                self._leader_read(w.ctx, w.requester)
        if self._removed():
            self._hand_over()
        return True

    def _removed(self) -> bool:
        """Is the configuration that removes (or demotes) us committed?"""
        current = self._configs.current
        return self._commit >= self._configs.current_index and (
            self.id not in current.voters or not self._bound_to_me(current)
        )

    def _hand_over(self) -> None:
        """We lead a configuration that no longer has us as a voter, and it is committed.

        Step down (dissertation 4.2.2), but first let the most up-to-date remaining voter
        campaign at once with TimeoutNow (dissertation 3.10; etcd does the same after a
        removal), so the cluster need not wait for an election timeout. If no voter holds our
        whole log yet, keep leading as a leader transfer to the best one (new proposals are
        refused): it gets TimeoutNow once caught up, and we step down then, or when the
        transfer deadline passes.
        """
        last = self._log.last_index
        candidates = [
            (-pr.match, not pr.recent_active, peer)
            for peer, pr in self._progress.items()
            if peer in self._configs.current.voters
        ]
        if not candidates:
            self._become_follower(self._term, None)
            return
        _, _, successor = min(candidates)
        if self._progress[successor].match == last:
            self._send_timeout_now(successor)
            self._become_follower(self._term, None)
            return
        if self._transferee != successor:
            self._transferee = successor
            self._transfer_elapsed = 0
        self._send_appends(successor)

    def _send_timeout_now(self, target: NodeId) -> None:
        """Tell ``target`` to campaign now (dissertation 3.10), giving up our read lease for
        the rest of the term: voters grant its votes inside their leases (read_only.py)."""
        self._lease.revoked = True
        self._send(TimeoutNow(term=self._term, src=self.id, dst=target))

    # ---- ticks ---------------------------------------------------------------------------------

    def _tick_leader(self) -> None:
        cfg = self.config
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= cfg.election_ticks_min:
                self._transferee = None  # abort: the target did not take over in time
                if self._removed():
                    self._become_follower(self._term, None)  # removed: stop leading anyway
                    return
        if self._election_elapsed >= cfg.election_ticks_min:
            self._election_elapsed = 0
            if cfg.check_quorum and not self._quorum_active():
                self._become_follower(self._term, None)
                return
        if self._heartbeat_elapsed >= cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._leader_reads.narrow = None  # this broadcast carries the newest round
            self._broadcast_heartbeat(periodic=True)
        else:
            self._widen_read_rounds()
            self._send_owed_heartbeats()
            if self._lazy_commit_notices():
                self._tell_commits()
        self._tick_snapshots()

    # ---- replication ---------------------------------------------------------------------------

    def _send_appends(self, peer: NodeId) -> None:
        """Send ``peer`` what its flow control allows (several messages when pipelining)."""
        pr = self._progress[peer]
        while self._send_append(peer, pr, send_if_empty=False):
            if pr.state is not ProgressState.REPLICATE:
                break

    def _send_append(self, peer: NodeId, pr: Progress, *, send_if_empty: bool) -> bool:
        """Send one AppendEntries from ``pr.next``; False if paused or nothing to send."""
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self._log.term_at(prev)
        if prev_term is None:
            # The entries it needs were compacted away: stream a snapshot (compaction.py).
            self._start_snapshot(peer, pr)
            return False
        entries = self._log.slice(
            pr.next, self.config.max_entries_per_msg, self.config.max_bytes_per_msg
        )
        if not entries and not send_if_empty:
            return False
        self._send(
            AppendEntries(
                term=self._term,
                src=self.id,
                dst=peer,
                prev_log_index=prev,
                prev_log_term=prev_term,
                entries=entries,
                commit=self._commit,
            )
        )
        pr.commit_sent = max(pr.commit_sent, min(self._commit, prev + len(entries)))
        pr.append_sent_at = self._now
        pr.sent(prev + len(entries), len(entries))
        return True

    def _next_from_hint(self, msg: AppendEntriesResponse) -> int:
        """Where to probe next after a rejection, skipping a whole term per round trip.

        ``hint_term == 0``: the follower's log ends at ``hint_index``. Otherwise the follower
        holds term ``hint_term`` from ``hint_index`` through the rejected index. Our entries
        after the last one of term <= hint_term (j) have larger terms and cannot match; the
        follower's entries from hint_index on have term hint_term and match us only if we have
        that term too, in which case j is our last entry of it and matches (Log Matching).
        """
        if msg.hint_term == 0:
            return msg.hint_index + 1
        j = self._log.last_index_with_term_at_most(msg.hint_term, msg.index)
        if self._log.term_at(j) == msg.hint_term:
            return j + 1
        return min(msg.hint_index, j + 1)

    def _on_append_response(self, msg: AppendEntriesResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.heard_at = self._now
        if not msg.success:
            if msg.hint_term == 0 and msg.hint_index < pr.match and self._notice_log_regress():
                # Its log ends below what it acknowledged: it lost entries it had made durable
                # (a wiped or replaced disk, which incarnations should have kept away) or this
                # is a stale answer. Either way probing below match is safe and needed: never
                # report it caught up, never loop on rejects above its real end.
                pr.match = msg.hint_index
                pr.commit_sent = min(pr.commit_sent, msg.hint_index)
                pr.next = msg.hint_index + 1
                pr.become_probe()
                self._send_append(msg.src, pr, send_if_empty=True)
                return
            if pr.maybe_decr_to(msg.index, self._next_from_hint(msg)):
                self._send_append(msg.src, pr, send_if_empty=True)
            return
        if msg.index > self._log.last_index:
            return  # cannot acknowledge what we never had: not from this term's log
        updated = pr.maybe_update(msg.index)
        if pr.state is ProgressState.PROBE:
            if not (updated or msg.index == pr.match):
                return  # a stale success: keep waiting for the probe's answer
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_to(msg.index)
        else:
            # SNAPSHOT: an answer to an append sent before the stream started. If it shows the
            # follower already holds what the snapshot covers, the stream is pointless.
            if pr.snapshot is None or pr.match < pr.snapshot.meta.index:
                return
            pr.next = pr.match + 1
            pr.become_probe()
        if updated:
            self._maybe_commit()
            if self._role is not Role.LEADER:
                return
            if msg.src == self._transferee and pr.match == self._log.last_index:
                self._send_timeout_now(msg.src)
                if self._removed():
                    self._become_follower(self._term, None)  # handed over: step down now
                    return
        self._send_appends(msg.src)
        if updated:
            self._maybe_tell_commit(msg.src, pr)

    def _append_success_may_wait(self, msg: AppendEntriesResponse) -> bool:
        """Would stepping ``msg``, a success of our term from a peer, change nothing anyone
        acts on before this node's next input (``RaftNode.append_response_may_wait``, which
        adds the checks of ``step`` and the sender gate)? Only its ``Progress`` fields would
        move (``recent_active``, ``heard_at``, ``match``, the pipeline's window), and a runtime
        that steps it before that next input leaves the core exactly as stepping it now would.
        So, each one a reason it must be stepped now:

        * the peer is not a voter in steady REPLICATE (a probe's answer starts the pipeline; a
          snapshot's ends the stream; a learner's or a removed member's progress is what its
          promotion or its pruning reads);
        * a leader transfer is under way (this answer may make the target caught up:
          TimeoutNow, and a removed leader's hand-over);
        * the answer is beyond our log (stepped, it is ignored: not worth a rule);
        * counting it commits: the quorum's match index moves past ``commit`` (which hands
          out entries to apply, releases reads waiting for the term's first commit, and a
          removed leader's hand-over);
        * the peer has more to send to (``next <= last_index``): the answer may free its full
          pipeline (``_send_appends``); with nothing left to send nothing can go out;
        * the commit index it lets us tell the peer must be told now (a commit notice that may
          not wait: ``_commit_notice_can_wait``, a read the peer waits on).

        Read rounds and leases are confirmed by heartbeat answers only (their ``ctx``), never
        by an append's, and CheckQuorum and heartbeat skipping read ``recent_active`` and
        ``heard_at`` only at a tick, which is an input: the answer is stepped before it, at the
        same ``_now``. A hook (a mutant says True always: the simulator catches it)."""
        pr = self._progress.get(msg.src)
        if (
            pr is None
            or pr.state is not ProgressState.REPLICATE
            or self._transferee is not None
            or msg.src not in self._configs.current.voters
        ):
            return False
        last = self._log.last_index
        index = msg.index
        if index > last or pr.next <= last:
            return False
        if index <= pr.match:
            return True  # match stays: no commit, no notice (the window frees nothing needed)
        src = msg.src
        commit = self._commit
        # What _maybe_commit counts once it is stepped.
        voters = self._configs.current.voters
        if quorum_value([index if v == src else self._match_of(v) for v in voters]) > commit:
            return False
        known = min(commit, index)
        return known <= pr.commit_sent or self._commit_notice_can_wait(pr, known)

    def _on_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.heard_at = self._now
        if pr.state is ProgressState.PROBE:
            pr.probe_sent = False  # the probe may have been lost: allow another
        elif pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first()  # the link works again: let the pipeline move
        if pr.match < self._log.last_index:
            self._send_append(msg.src, pr, send_if_empty=True)
        if msg.ctx:
            self._leader_reads.ack(msg.src, msg.ctx)
            self._confirm_reads()
