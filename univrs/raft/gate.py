"""GateLayer: what a message must pass before ``RaftNode.step`` acts on it (issue 12, item 5).

The layer between the election layer and the node's dispatch (base.py explains the chain).
``_admit`` is the front of ``step``: a message not addressed to us is dropped; a term above
``MAX_TERM``, a sender the membership rule refuses (univrs/raft/senders.py, which this layer
feeds with what the node knows: its live leader and the incarnation it hears it at, the
configurations, the unlisted leader it may hear without TLS) and an AppendEntries carrying a
configuration entry that does not decode are refused and counted (``Status.refused``). What
passes may carry a vouch, recorded here: a listed member's rejected vote naming the leader it
follows in a term (senders.py: how a plaintext member that lagged behind the change adding
its leader hears it). ``_answer_in_lease`` is the other side of vouches: a follower in its
leader's lease answers a vote request with the leader it follows (without
``RaftConfig.unlisted_leaders``), or stays silent.

Nothing here changes the term, log, commit or role: a refused message is never acted on.
"""

from __future__ import annotations

import attrs

from univrs.raft.election import ElectionLayer
from univrs.raft.messages import (
    AppendEntries,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
)
from univrs.raft.ready import Role
from univrs.raft.senders import (
    REFUSED_ENTRY,
    REFUSED_TERM,
    listed_sender,
    sender_refusal,
    undecodable_config,
)

MAX_TERM = 1 << 62
"""Messages with a term above this are refused (``Status.refused`` counts them, reason "term")."""


@attrs.define(eq=False, init=False, repr=False)
class GateLayer(ElectionLayer):
    """Admission of messages: the term bound, the sender rule, vouches (module docstring)."""

    def _admit(self, msg: Message) -> bool:
        """May ``step`` act on ``msg``? False: not for us, or refused and counted."""
        if msg.dst != self.id or msg.src == self.id:
            return False
        if msg.term > MAX_TERM:
            # No honest node gets near 2^62 terms (one election a millisecond for a hundred
            # million years); a forged one would make every term after it unencodable and stop
            # elections for good. Refused and counted, never adopted.
            self._refuse(REFUSED_TERM)
            return False
        refusal = self._sender_refusal(msg)
        if refusal is not None:
            self._refuse(refusal)  # a stranger: nothing of it is looked at (senders.py)
            return False
        if (
            isinstance(msg, RequestVoteResponse)
            and msg.leader is not None
            and not msg.granted
            and msg.term >= self._term
            and msg.term > self._vouched_term
            and self._listed(msg)
        ):
            # A member we list follows msg.leader in msg.term (a hint of a stale term is
            # ignored; an unlisted sender's never gets here): that leader may lead us in
            # that term even if our configuration does not list it yet (senders.py).
            self._vouched_term, self._vouched = msg.term, msg.leader
        if isinstance(msg, AppendEntries) and msg.entries and undecodable_config(msg):
            self._refuse(REFUSED_ENTRY)  # storing it would crash us now and at every start
            return False
        return True

    def _answer_in_lease(self, msg: RequestVote) -> None:
        """A vote request of a higher term while we are in our leader's lease: we do not let
        the candidate disrupt a live leader. Without unlisted_leaders, tell it our term and
        leader (a member that lags behind the configuration adding our leader needs a listed
        member's word for it); with them, stay silent as before."""
        hint = self._leader_hint()
        if hint is not None:
            self._send(
                RequestVoteResponse(
                    term=self._term,
                    src=self.id,
                    dst=msg.src,
                    granted=False,
                    pre_vote=msg.pre_vote,
                    leader=hint,
                )
            )

    def _sender_refusal(self, msg: Message) -> str | None:
        """Why ``msg``'s sender may not send to us (None: it may): the membership rule of
        univrs/raft/senders.py. A hook: the simulator's AcceptStrangers mutant disables it."""
        if self._role is Role.LEADER:
            live: NodeId | None = self.id
        elif self._leader is not None and self._election_elapsed < self.config.election_ticks_min:
            live = self._leader
        else:
            live = None
        followed, inc = self._leader_incarnation
        held: NodeId | None = None
        if followed is not None and (
            followed == live or (followed == self._leader and msg.term == self._term)
        ):
            held = followed  # our live leader, or our term's leader for a message of the term
        held_inc = self._live_incarnation(inc) if held is not None else None
        configs = self._configs
        # Without unlisted_leaders: the term and leader an unlisted leader may be heard at.
        unlisted_term: int | None = None
        unlisted_leader: NodeId | None = None
        if self._led_term == self._term:
            unlisted_term, unlisted_leader = self._term, self._led_by  # the one we followed
        elif self._vouched_term == self._term:
            unlisted_term, unlisted_leader = self._term, self._vouched  # a listed member's
        return sender_refusal(
            msg,
            me=self.id,
            current=configs.current,
            committed=configs.committed(self._commit),
            live_leader=live,
            live_incarnation=held_inc,
            held_leader=held,
            tracked=self._progress,
            unlisted_leaders=self.config.unlisted_leaders,
            unlisted_leader_term=unlisted_term,
            unlisted_leader=unlisted_leader,
            unlisted_incarnation=inc
            if unlisted_leader is not None and followed == unlisted_leader
            else None,
        )

    def _live_incarnation(self, heard: str | None) -> str | None:
        """The incarnation the sender rule holds our live leader's id to: the one we hear it
        at. A hook: the simulator's LiveLeaderAnyIncarnation mutant forgets it."""
        return heard

    def _listed(self, msg: Message) -> bool:
        """Is ``msg``'s sender a member our configurations list, at its bound incarnation?"""
        configs = self._configs
        return listed_sender(
            msg, current=configs.current, committed=configs.committed(self._commit)
        )
