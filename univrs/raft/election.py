"""Elections (paper 5.2, 5.4.1; dissertation 9.6 PreVote, 6.2/9.7 leases): RaftNode's voting half.

Theory of operation
-------------------
A follower whose randomized timer fires (or ``campaign()``) first runs PreVote when configured:
it asks, at ``term + 1`` but without changing its own term or vote, whether voters would grant;
only a majority of "yes" starts a real election. Voters grant a pre-vote only if the candidate's
log is up to date and they have not heard from a leader within ``election_ticks_min`` (the
lease), so a partitioned node that comes back cannot raise terms and depose a healthy leader.

A real candidate bumps its term, votes for itself and sends RequestVote *after persist*: its
self-vote must be durable before any other vote can make it leader (otherwise a crash could
forget the vote and the node could vote again in the same term). ``TimeoutNow`` starts a
real campaign with ``transfer=True``, which voters grant even inside their lease.

Votes are counted only from the voters of the candidate's configuration; non-voters still
answer (see ``_on_request_vote``).
"""

from __future__ import annotations

from collections.abc import Iterable

from univrs.raft.follower import FollowerLayer
from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    InstallSnapshot,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
)
from univrs.raft.native import mypyc_attr
from univrs.raft.quorum import VoteResult, vote_result
from univrs.raft.ready import Role


@mypyc_attr(allow_interpreted_subclasses=True)
class ElectionLayer(FollowerLayer):
    """Election behaviour of RaftNode (see the module docstring; layers: base.py)."""

    def _may_grant_vote(self, msg: RequestVote) -> bool:
        """One vote per term (paper 5.2): True if not yet voted, or voted for this candidate."""
        return self._vote is None or self._vote == msg.src

    def _log_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The election restriction (paper 5.4.1)."""
        return self._log.is_up_to_date(last_index, last_term)

    def _in_lease(self, pre_vote: bool) -> bool:
        """Heard from a live leader within the minimum election timeout (CheckQuorum lease).

        With read leases on (read_only.py, "Leases") the rule must hold without exception, since
        a leader serves reads on it: it counts ticks since the last message from a leader
        whatever happened since (a ``campaign()`` or a higher term may have cleared ``_leader``),
        counts a restart as such a message (the process cannot know whom it followed before),
        and a leader is always in its own lease.
        """
        cfg = self.config
        if not (pre_vote or cfg.check_quorum):
            return False
        if cfg.read_lease:
            if self._role is Role.LEADER:
                return True
            return self._now - self._heard_leader_at < cfg.election_ticks_min
        return self._leader is not None and self._election_elapsed < cfg.election_ticks_min

    def _leader_hint(self) -> NodeId | None:
        """The leader a vote rejection names (``RequestVoteResponse.leader``): the one we
        follow (or are) in our term, only without ``RaftConfig.unlisted_leaders``."""
        return None if self.config.unlisted_leaders else self._leader

    def _refuse_vote(self, msg: RequestVote) -> None:
        """Refuse ``msg`` (a vote, or a pre-vote: echoed) in our term, naming our leader
        (``_leader_hint``)."""
        self._send(
            RequestVoteResponse(
                term=self._term,
                src=self.id,
                dst=msg.src,
                granted=False,
                pre_vote=msg.pre_vote,
                leader=self._leader_hint(),
            )
        )

    def _hup(self, *, transfer: bool) -> None:
        if self._role is Role.LEADER or not self._promotable():
            return
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer=transfer)

    def _become_pre_candidate(self) -> None:
        """PreVote (dissertation 9.6): ask whether we could win, without touching our term."""
        self._set_state(Role.PRE_CANDIDATE, None)
        self._votes = {self.id: True}
        self._reset_election_timer()
        if vote_result(self._configs.current.voters, self._votes) is VoteResult.WON:
            self._become_candidate(transfer=False)
            return
        self._send_pre_votes(self._pre_vote_peers())

    def _pre_vote_peers(self) -> frozenset[NodeId]:
        """Whom a pre-candidate asks: the voters of its configuration; without
        ``RaftConfig.unlisted_leaders``, while it refuses leader traffic (within the last
        ``election_ticks_max`` ticks, the window of gate.py ``_maybe_probe``), its learners
        too. Only voters' answers count (``_on_vote_response``); what a learner adds is its
        rejection's vouch (gate.py ``_maybe_vouch``): the leader it follows in its term. A
        member whose configuration lags behind the change adding that leader hears it on the
        word of a member it lists, a learner's included (simulator, 5 nodes, lmdb, lease
        within, seed 60123: voter n6 listed only retired voters and the learner n5, which
        followed the leader n4; n6 asked no one who could name n4 and refused it as a stranger
        for good). Only then: an ordinary election asks the voters alone, as before. A hook:
        the simulator's tests put the old rule back."""
        current = self._configs.current
        at = self._refused_leader_at
        if (
            self.config.unlisted_leaders
            or at is None
            or self._now - at > self.config.election_ticks_max
        ):
            return current.voters
        return current.members

    def _send_pre_votes(self, peers: Iterable[NodeId]) -> None:
        """A pre-vote request for the next term to each of ``peers`` but us, in id order."""
        last_index, last_term = self._log.last_index, self._log.last_term
        for peer in sorted(peers):
            if peer != self.id:
                self._send(
                    RequestVote(
                        term=self._term + 1,
                        src=self.id,
                        dst=peer,
                        last_log_index=last_index,
                        last_log_term=last_term,
                        pre_vote=True,
                    )
                )

    def _become_candidate(self, *, transfer: bool) -> None:
        self._term += 1
        self._vote = self.id
        self._set_state(Role.CANDIDATE, None)
        self._votes = {self.id: True}
        self._reset_election_timer()
        if vote_result(self._configs.current.voters, self._votes) is VoteResult.WON:
            self._become_leader()
            return
        last_index, last_term = self._log.last_index, self._log.last_term
        for v in sorted(self._configs.current.voters):
            if v != self.id:
                # After persist: our self-vote must be durable before anyone can elect us.
                self._send_after_persist(
                    RequestVote(
                        term=self._term,
                        src=self.id,
                        dst=v,
                        last_log_index=last_index,
                        last_log_term=last_term,
                        transfer=transfer,
                    )
                )

    def _on_request_vote(self, msg: RequestVote) -> None:
        # Non-voters answer too: the candidate counts only its own configuration's voters, and
        # refusing could deadlock a node whose configuration lags the candidate's (4.2.1).
        up_to_date = self._log_up_to_date(msg.last_log_index, msg.last_log_term)
        if msg.pre_vote:
            can = (msg.term > self._term or self._may_grant_vote(msg)) and not self._in_lease(True)
            if can and up_to_date:
                self._send(
                    RequestVoteResponse(
                        term=msg.term, src=self.id, dst=msg.src, granted=True, pre_vote=True
                    )
                )
            else:
                self._refuse_vote(msg)
            return
        # A real vote: step() already brought us to msg.term.
        if self._may_grant_vote(msg) and up_to_date:
            self._vote = msg.src
            self._reset_election_timer()
            self._send_after_persist(
                RequestVoteResponse(term=self._term, src=self.id, dst=msg.src, granted=True)
            )
        else:
            self._refuse_vote(msg)

    def _on_vote_response(self, msg: RequestVoteResponse) -> None:
        if msg.pre_vote:
            if self._role is not Role.PRE_CANDIDATE:
                return
            if msg.term != (self._term + 1 if msg.granted else self._term):
                return
        elif self._role is not Role.CANDIDATE:
            return
        voters = self._configs.current.voters
        if msg.src not in voters:
            return
        self._votes.setdefault(msg.src, msg.granted)
        result = vote_result(voters, self._votes)
        if result is VoteResult.WON:
            if self._role is Role.PRE_CANDIDATE:
                self._become_candidate(transfer=False)
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(self._term, None)

    def _answer_stale(self, msg: Message) -> None:
        """A message from an older term: tell old leaders and candidates the current term.

        Without this, a node that went up a term on its own (no PreVote then) could never be
        heard again, and an old leader would only learn of its demotion by its own CheckQuorum.

        A pre-vote from an older term is refused in our term, and so is a real vote request
        when we run without PreVote (as the Raft paper's RequestVote answers ``currentTerm``):
        the candidate adopts our term and campaigns above it. Without PreVote such a request
        was dropped (session 26 sweep, 3 nodes ``--rollback checked``, seed 272137): a stale
        voter whose configuration did not list the candidate campaigned among its own peers at
        ever higher terms, never sending the candidate a thing, and dropped each of the
        candidate's requests as one from an older term, so the candidate, whose vote it
        needed, stayed a term or more below it for ever. With PreVote the candidate's next
        pre-vote is refused in our term, which it adopts the same way, so a stale real request
        is still dropped there (as before: the pinned seeds keep their courses). A refusal
        grants nothing and moves no term but the candidate's.
        """
        cfg = self.config
        if isinstance(msg, RequestVote):
            # A pre-vote under PreVote or CheckQuorum (as before); a real request without PreVote.
            if (cfg.pre_vote or cfg.check_quorum) if msg.pre_vote else not cfg.pre_vote:
                self._refuse_vote(msg)
            return
        if not (cfg.check_quorum or cfg.pre_vote):
            return
        if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
            self._send(
                AppendEntriesResponse(
                    term=self._term, src=self.id, dst=msg.src, success=False, index=0
                )
            )
