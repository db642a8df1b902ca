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

``snapshot_check_due`` / ``snapshot_to_check`` ask ahead of ``step`` whether it would check the
snapshot a last chunk completes (the runtime then checks it off its event loop): this layer's
sender rule plus compaction.py's receiving rules, without either's side effects;
``snapshot_check_moot`` whether such a chunk, held back during its check, can no longer
complete anything (the runtime then stops the check).

Nothing here changes the term, log, commit or role: a refused message is never acted on.
"""

from __future__ import annotations

from univrs.raft.election import ElectionLayer
from univrs.raft.messages import (
    AppendEntries,
    Heartbeat,
    InstallSnapshot,
    Membership,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
)
from univrs.raft.native import mypyc_attr
from univrs.raft.ready import Role
from univrs.raft.senders import (
    REFUSED_ENTRY,
    REFUSED_INCARNATION,
    REFUSED_TERM,
    listed_sender,
    sender_refusal,
    undecodable_config,
)

_FROM_LEADER = (AppendEntries, Heartbeat, InstallSnapshot)

MAX_TERM = 1 << 62
"""Messages with a term above this are refused (``Status.refused`` counts them, reason "term")."""

MAX_TERM_STEP = 1 << 32
"""Messages with a term more than this above the node's own are refused too (reason "term").
Honest terms move by one per election: a member would have to miss 2^32 elections (13 years of
one election every 100 ms) to see such a step. A forged one moved a leaderless member, which
takes vote requests from any sender without TLS, to ``MAX_TERM`` in one message, where every
election's next term is refused by every member: the cluster never elected a leader again
(s15-review T1). With the step, a forger needs 2^30 such messages, each taken only while the
node follows no leader and each a durable write, to get there."""


def _later_term_data(msg: Message) -> bool:
    """Does ``msg`` carry log data of a later term than its own? A leader sends entries and
    snapshots of its log, all of terms up to its current one, which its messages carry; so
    does its ``prev_log_term``. Taken, a forged entry of a later term made the follower's log
    look the most up to date of all: elected, its core crashed on its own log (its no-op's
    term below that entry's), at every start (s13-audit). The codec guarantees entries in
    term order, so the last entry's term is the largest."""
    if type(msg) is AppendEntries:
        return msg.prev_log_term > msg.term or (
            bool(msg.entries) and msg.entries[-1].term > msg.term
        )
    if type(msg) is InstallSnapshot:
        return msg.meta.term > msg.term
    if type(msg) is RequestVote:
        # A candidate's last entry is of a term up to its current one, below or at the term it
        # campaigns in (or would, for a pre-vote): a later one is made up to win the vote.
        return msg.last_log_term > msg.term
    return False


@mypyc_attr(allow_interpreted_subclasses=True)
class GateLayer(ElectionLayer):
    """Admission of messages: the term bound, the sender rule, vouches (module docstring)."""

    def _admit(self, msg: Message) -> bool:
        """May ``step`` act on ``msg``? False: not for us, or refused and counted."""
        if msg.dst != self.id or msg.src == self.id:
            return False
        if self._impossible_term(msg.term):
            # No honest node gets near 2^62 terms (one election a millisecond for a hundred
            # million years); a forged one would make every term after it unencodable and stop
            # elections for good. Nor does an honest term run 2^32 ahead of a member's: a
            # forged one at or just under the bound, taken, left no term to elect a leader in
            # (``MAX_TERM_STEP``). Refused and counted, never adopted.
            self._refuse(REFUSED_TERM)
            return False
        refusal = self._sender_refusal(msg)
        if refusal is not None:
            self._refuse(refusal)  # a stranger: never acted on (senders.py)
            if refusal == REFUSED_INCARNATION and self._listed_id(msg.src):
                # A member we list, at another incarnation than we bind (or pinned): its
                # answer never counts as a vote, but its vouch is noted (``_maybe_vouch``).
                self._maybe_vouch(msg)
            elif self._self_vouch_heard(msg):
                self._maybe_vouch(msg)  # (``_self_vouch_heard``: a learner's probed id)
            if (
                isinstance(msg, _FROM_LEADER)
                and msg.term >= self._term
                and not self.config.unlisted_leaders
            ):
                self._refused_leader_at = self._now  # (what _maybe_probe looks for)
                if self._once_listed(msg.src):
                    # (a made-up id's traffic does not displace it: ``_probe_peers``)
                    self._refused_leader = msg.src
            return False
        if _later_term_data(msg):
            self._refuse(REFUSED_TERM)  # a forgery: no leader sends data of a later term
            return False
        self._maybe_pin(msg)
        if self._listed(msg):
            self._maybe_vouch(msg)
        if isinstance(msg, AppendEntries) and msg.entries and undecodable_config(msg):
            self._refuse(REFUSED_ENTRY)  # storing it would crash us now and at every start
            return False
        return True

    def _impossible_term(self, term: int) -> bool:
        """Is ``term`` one no honest message to this node carries: above ``MAX_TERM``, or more
        than ``MAX_TERM_STEP`` above the node's own? A hook: the simulator's ``no-term-step``
        mutant keeps the first rule only."""
        return term > MAX_TERM or term > self._term + MAX_TERM_STEP

    # ---- a snapshot's check, asked ahead (the runtime runs it off its event loop) ------------

    def snapshot_check_due(self, msg: InstallSnapshot) -> bool:
        """Would stepping ``msg`` now call ``snapshot_check``, unless the data's checksum is
        wrong? Cheap (nothing joined or hashed): the runtime asks it on its event loop before
        it hands ``snapshot_to_check`` to a worker thread. Never for a chunk ``step`` takes no
        data from (compaction.py ``_receiver_to_check``): from a stale term (``step`` only
        answers it with our term), a sender the gate refuses, or anyone but the leader we
        follow in our term."""
        rx = self._receiver_to_check(msg)
        return (
            rx is not None
            and rx.completes(msg)
            and self._sender_refusal(msg) is None
            and not _later_term_data(msg)
        )

    def snapshot_to_check(self, msg: InstallSnapshot) -> bytes | None:
        """The data ``snapshot_check`` would be called with if ``msg`` were stepped now: the
        complete, verified snapshot that ``msg`` finishes (None if it finishes none, or if it
        would not be checked: ``snapshot_check_due``). A query that changes nothing, so the
        runtime can run the (expensive) check ahead, off its event loop, and answer the
        core's call from what it found (univrs/runtime/snapshots.py)."""
        rx = self._receiver_to_check(msg)
        if rx is None or self._sender_refusal(msg) is not None or _later_term_data(msg):
            return None
        return rx.completed_by(msg)

    def snapshot_check_moot(self, msg: InstallSnapshot) -> bool:
        """Can ``msg``, a last chunk whose check began (``snapshot_check_due`` was True), no
        longer complete a snapshot whatever comes next? The runtime then stops the check and
        drops the chunk (univrs/runtime/checking.py, s13-scale). Only conditions that never
        undo themselves: our term moved past the chunk's (terms only grow, and only a chunk
        of our term from the leader we follow is taken); our commit reached its index
        (``_on_install_snapshot`` answers it as held, installs nothing); the partial snapshot
        it would complete is gone (another snapshot's receiver, none, or fewer bytes held
        than its offset: the earlier chunks are lost, a resend starts another stream). A
        query; dropping the chunk is a lost message, which Raft tolerates."""
        if msg.term < self._term or msg.meta.index <= self._commit:
            return True
        if msg.offset == 0:
            return False  # a one-chunk snapshot needs no partial one
        rx = self._receiving
        return rx is None or not rx.same_snapshot(msg) or rx.received != msg.offset

    def _maybe_vouch(self, msg: Message) -> bool:
        """Note ``msg``'s vouch, if it is one: a rejected vote or pre-vote of a member we
        list (the caller checked the id), naming the leader it follows in its term, a term
        not below ours and newer than the last vouch. That leader may then lead us in that
        term even if our configuration does not list it yet (senders.py). True if noted.

        From a listed id at another incarnation than our configuration binds (a member
        replaced since our configuration, whose new data dir runs now; simulator, 5 nodes,
        seed 31095) the answer is refused, and never counts as a vote, but its vouch is
        noted too: a vouch claims no durable state (unlike a vote or an ack, which claim a
        log the incarnation may have lost), only that the named leader leads that term, and
        in the crash-fault model only a real leader of the term makes a member say so,
        whatever its data dir (one leader a term). Against a forger it adds nothing: a
        listed id at another incarnation is heard as a *leader* by a member that follows
        none (senders.py), so whoever could vouch under it could lead the member itself. A
        made-up id still is never vouched for by one."""
        if not (
            isinstance(msg, RequestVoteResponse)
            and msg.leader is not None
            and not msg.granted
            and msg.term >= self._term
            and msg.term > self._vouched_term
        ):
            return False
        self._vouched_term, self._vouched = msg.term, msg.leader
        return True

    def _listed_id(self, node: NodeId) -> bool:
        """Do our configurations (in effect, or committed) list ``node``, at any incarnation?
        A hook: the simulator's tests replace it to leave out vouches from another
        incarnation (pinning asks ``_listing`` itself)."""
        return self._listing(node) is not None

    def _listing(self, node: NodeId) -> Membership | None:
        """The configuration that lists ``node`` (at any incarnation): the one in effect if it
        does, else the committed one if it does; None if neither."""
        configs = self._configs
        current = configs.current
        if node in current.voters or node in current.learners:
            return current
        committed = configs.committed(self._commit)
        if node in committed.voters or node in committed.learners:
            return committed
        return None

    def _once_listed(self, node: NodeId) -> bool:
        """Does a configuration of our log's history (``ConfigHistory.ever_lists``: the base,
        any CONFIG entry after it, or a committed one compaction or a snapshot's install folded
        away, kept durable in ``HardState.named``; at any incarnation) name ``node``? Without
        ``unlisted_leaders`` the candidate we voted for in our term, if it is such an id, may
        lead us in that term although our configurations no longer list it (senders.py).

        The case (simulator, 3 nodes, seed 40209): n1 lags behind the changes that re-added
        n3 (removed at index 8, wiped, added again at 36 as a new incarnation) and removed n2;
        it lists n2 (retired) and n4, whose data dir was wiped since: nobody it lists can
        vouch for anyone, and the leader n3, whose configuration needs n1's acknowledgements,
        was refused as a stranger for good, although n1 had voted for it in that term.

        Why a forger gains nothing: a made-up id is named by no configuration of our log and
        stays refused. An id that one names is one the forger could already use to lead us,
        with one packet and fewer conditions: a *listed* id at another incarnation than our
        configuration binds is heard as a leader by a member that follows none (a replaced
        member that leads now must be heard; senders.py). This rule needs more: we follow no
        live leader, we granted that id our vote in our current term (a vote request the
        election rules judged: its log must hold everything ours does), and the leader
        traffic is of that very term. So no single packet moves us, and no sequence of
        packets under an id our log names does more than one under a listed id already
        could. A hook: the simulator's tests put the old rule back."""
        return self._configs.ever_lists(node)

    def _self_vouch_heard(self, msg: Message) -> bool:
        """Is ``msg``, refused as a stranger's, a vouch a learner notes all the same: the
        rejection of its probe by the id whose leader traffic it refused, naming that very id
        as the leader of its term, where a configuration of the learner's own log history named
        the id (``_once_listed``)? Only without ``unlisted_leaders``.

        The case (simulator, 5 nodes, lmdb state, lease reads within, seed 60039): learner n7,
        stuck at a snapshot whose configuration lists n1, n4 and n6, all retired since, refused
        the leader n2 as a stranger for good: nobody it lists runs to vouch, and a learner
        votes for no one (the voted-for rule needs a vote). n2 was a voter of the bootstrap
        configuration n7's log held before that snapshot replaced it (kept durable:
        ``HardState.named``). Now the learner probes n2 too (``_maybe_probe``), n2 rejects the
        probe naming itself, and n7 follows n2 in that term.

        Why a forger gains nothing: a made-up id is named by no configuration of the learner's
        history and stays refused, its vouches too. Under an id the history named it could
        already lead a voter that granted it a vote (``_once_listed``) with two packets (a
        vote request, then leader traffic); here it takes two as well (a rejected pre-vote
        naming itself, then leader traffic of that term), and it moves a learner, which counts
        in no vote and no commit. The vouch names only its sender, never a third id. A hook:
        the simulator's tests put the old rule back."""
        return (
            isinstance(msg, RequestVoteResponse)
            and not self.config.unlisted_leaders
            and not self._promotable()
            and msg.leader == msg.src
            and msg.src == self._refused_leader
            and self._once_listed(msg.src)
        )

    def _maybe_probe(self) -> bool:
        """A member that cannot campaign (a learner), without ``unlisted_leaders``, whose
        election timer ran out while it refused leader traffic within the last election
        timeout: send every other member it lists a pre-vote request (a probe), at most once
        per ``election_ticks_min`` ticks. True if sent. (The election timer is left alone:
        restarting it would make the leader we lost look live again, senders.py.)

        A vouch for an unlisted leader comes only in the rejection of a vote or pre-vote
        (senders.py), and a learner never campaigns: one whose configuration predates the
        leader's addition refused that leader as a stranger for good (simulator, 7 nodes,
        seed 30041). The probe is an ordinary pre-vote request: it changes no one's term or
        vote; a listed member that follows a leader rejects it naming that leader (in its
        lease, or because the learner's log is behind), which is the vouch; a grant is ignored
        (the learner is no pre-candidate). A made-up id is still never vouched for: only a
        listed member's rejection names a leader, the one it follows."""
        at = self._refused_leader_at
        if self.config.unlisted_leaders or at is None:
            return False
        if self._now - at > self.config.election_ticks_max:
            return False  # no leader refused lately: nothing to ask about
        probed = self._probed_at
        if probed is not None and self._now - probed < self.config.election_ticks_min:
            return False
        current = self._configs.current
        if self.id not in current.voters and self.id not in current.learners:
            return False  # not in our own configuration (a joiner): we hear any leader
        self._probed_at = self._now
        self._send_pre_votes(self._probe_peers())
        return True

    def _probe_peers(self) -> set[NodeId]:
        """Whom a learner's probe asks: every member its configuration lists, and the sender
        of the latest leader traffic it refused whose id a configuration of its log's history
        named (``_self_vouch_heard`` notes its answer). A hook: the simulator's tests put the
        old rule back."""
        peers = set(self._configs.current.members)
        if self._refused_leader is not None:
            peers.add(self._refused_leader)  # (``_admit`` notes only an id our history named)
        return peers

    def _answer_in_lease(self, msg: RequestVote) -> None:
        """A vote request of a higher term while we are in our leader's lease: we do not let
        the candidate disrupt a live leader. Without unlisted_leaders, tell it our term and
        leader (a member that lags behind the configuration adding our leader needs a listed
        member's word for it); with them, stay silent as before."""
        if self._leader_hint() is not None:
            self._refuse_vote(msg)

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
        if self._vouched_term > self._term:
            # A vouch of a newer term from a member we list at another incarnation (its
            # answer was refused, so its term is not ours yet): that term's leader, only.
            unlisted_term, unlisted_leader = self._vouched_term, self._vouched
        elif self._led_term == self._term:
            unlisted_term, unlisted_leader = self._term, self._led_by  # the one we followed
        elif self._vouched_term == self._term:
            unlisted_term, unlisted_leader = self._term, self._vouched  # a listed member's
        elif self._vote is not None and self._vote != self.id and self._once_listed(self._vote):
            # The candidate we voted for in our term, an id our log's configurations named
            # (a member removed and added again, which our log has not seen re-added):
            # ``_once_listed``, which argues why this gives a forger nothing.
            unlisted_term, unlisted_leader = self._term, self._vote
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
            unlisted_incarnation=self._unlisted_incarnation(unlisted_leader, unlisted_term),
            pinned=self._pinned_incarnations(),
        )

    def _unlisted_incarnation(self, leader: NodeId | None, term: int | None) -> str | None:
        """The incarnation the unlisted ``leader`` of ``term`` is held to (None: any): the one
        we heard it at, if we followed that id in that very term (one leader a term, at one
        incarnation). Not one we followed it at in an older term: a member wiped and added
        again may lead a later term at its new incarnation, as a *listed* id at another
        incarnation already may while we follow no live leader, and a vouched or voted-for
        leader we never followed is held to none already (simulator, 3 nodes, seed 130355:
        n1 followed the unlisted n3 at n3.1 up to term 17, voted for n3.2 in term 21 and
        refused its traffic for good, held to n3.1). A hook: the simulator's tests put the
        old rule back."""
        followed, inc = self._leader_incarnation
        if leader is None or followed != leader or self._led_term != term or self._led_by != leader:
            return None
        return inc

    def _maybe_pin(self, msg: Message) -> bool:
        """Pin ``msg``'s sender, a member our configurations list but bind to no incarnation
        (a bootstrap configuration, until the leader's binding change), to the incarnation
        the runtime attests for it, if it has no pin yet. True if pinned now.

        Such a configuration cannot tell the member from a forger under its id, nor from a
        wiped (amnesiac) data dir of it: the first incarnation we took a message from is the
        one we go on hearing under that id, so a leader counts the acknowledgements, and a
        candidate the votes, of one incarnation only, and another incarnation (or none
        attested) is refused as a stranger's (senders.py ``pinned``). Called for a message
        the sender rule let through, so the pin is never a refused sender's.

        Durable: the next hard state carries it (``HardState.pins``), and until the runtime
        reports that hard state durable nothing leaves the node and nothing committed is
        handed out (node.py ``ready``), so whatever we did after taking the message is seen
        only once the pin would survive a crash; a restart loads the pins back. (They used
        to live in this process only: a restarted node took the next incarnation it heard,
        a wiped data dir's included, as the member.)"""
        inc = msg.sender_incarnation
        if not inc or not self._would_pin(msg):
            return False
        self._pinned[msg.src] = inc
        return True

    def _would_pin(self, msg: Message) -> bool:
        """Would ``_maybe_pin`` pin ``msg``'s sender (read-only)?"""
        inc = msg.sender_incarnation
        src = msg.src
        # ``""`` (the transport's NO_INCARNATION: a hello that named none) is no incarnation
        # either: pinned, it would hold the member to nothing, and the stored pins refuse it.
        if not inc or src in self._pinned:
            return False
        listing = self._listing(src)
        if listing is None:
            return False  # not listed (a joiner's leader, a vouched one): nothing to pin
        # The configuration binds it: the binding rules.
        return listing.incarnation_of(src) is None

    def _pinned_incarnations(self) -> dict[NodeId, str]:
        """The pins the sender rule holds unbound members to. A hook: the simulator's
        UnboundAnyIncarnation mutant keeps pinning (``Status.pinned``) but ignores them."""
        return self._pinned

    def _live_incarnation(self, heard: str | None) -> str | None:
        """The incarnation the sender rule holds our live leader's id to: the one we hear it
        at. A hook: the simulator's LiveLeaderAnyIncarnation mutant forgets it."""
        return heard

    def _listed(self, msg: Message) -> bool:
        """Is ``msg``'s sender a member our configurations list, at its bound incarnation?"""
        configs = self._configs
        return listed_sender(
            msg,
            current=configs.current,
            committed=configs.committed(self._commit),
            pinned=self._pinned_incarnations(),
        )
