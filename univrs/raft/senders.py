"""Who may send this node a message: the membership rule for senders (issue 12, item 5).

Every message from the network is hostile until proven otherwise. Before ``RaftNode.step``
looks at a message's term or contents it asks ``sender_refusal``: a message whose sender is not
a member of this node's configuration (by id, and by incarnation where the runtime attests one)
is refused and counted (``Status.refused``), never acted on. The rule, with the legitimate cases
it must let through (docs/core-api.md, "Who may send a message"):

* *Known senders* are the voters and learners of the configuration in effect (the latest one
  appended, dissertation 4.1) and of the latest committed one, and, on a leader, the peers it
  still replicates to. The committed one covers a leader that removes itself: it keeps
  replicating until the removal commits (4.2.2), while the followers that appended the
  removal already list it no more. The leader's peers cover a removed member, which keeps
  hearing the log until one more heartbeat told it that its removal is committed: its
  answers must count.
* Incarnation: ``Message.sender_incarnation`` is what the runtime's transport attests (the
  incarnation the sender's hello named, also when the transport let it in because it claims a
  binding newer than the receiver's listing: an unauthenticated claim; None: nothing
  attested). When it is attested and the configuration binds the sender's id to
  another incarnation (the configuration may have moved since the connection was accepted),
  the sender is held to the rule for strangers below (reason ``incarnation`` if refused): a
  data dir that lost its state is a new member, not the old one. It is still heard as the
  leader we follow at the incarnation we adopted it at, or as a leader to adopt when we
  follow none; never while we follow another incarnation of it or another leader.
* Leader traffic (AppendEntries, Heartbeat, InstallSnapshot) from an unknown sender is let
  through in two cases only, because a node's configuration can lag behind its leader's:
  - the node is not in its own latest configuration (a fresh node whose configuration is
    still empty, a joiner replaying an old log that does not list it yet, a removed node):
    it cannot vote or campaign, and it must hear the leader it was added by;
  - the node follows no live leader: it heard from none within ``election_ticks_min`` ticks.
    A member that lagged behind the configuration adding
    the current leader must still be able to catch up from it; etcd-io/raft and
    hashicorp/raft accept AppendEntries from any leader for the same reason. A follower of
    a live leader, the normal state of every member, refuses them. Only where node ids are
    authenticated (``RaftConfig.unlisted_leaders``, on with TLS). Without TLS (a made-up id
    led a leaderless node and committed entries on it) an id that no configuration lists is
    heard then only at the node's own term, and only as the leader a listed member vouched
    for in that term (``RequestVoteResponse.leader``: a member that rejects a vote or
    pre-vote names the leader it follows in its term, also when it is in its lease, where
    it used to stay silent) or as the one unlisted leader it already followed in that term:
    the lagging member, whose pre-votes its listed peers reject, hears the leader they
    follow. A made-up id is never vouched for, so it cannot pick a term, nor lead a node in
    an election's window (after a listed candidate's vote request showed it the new term).
    A vouch counts only from a listed member's id (a made-up id's vote answer is refused
    here; a listed id's at another incarnation is refused too, never a vote, but gate.py
    notes its vouch) and only for the term it names, when that is not below the node's own.
    A learner, which never campaigns, asks for vouches with a pre-vote probe (gate.py
    ``_maybe_probe``); a pre-candidate that refuses leader traffic asks the learners it lists
    too (election.py ``_pre_vote_peers``). A listed id of another incarnation (a replaced
    member that leads now) is still heard. So is the candidate the node voted for in its
    term, at that term, if a configuration of the node's own log named that id (a member
    removed and added again, whose return the node missed; gate.py ``_once_listed``, which
    argues why a forger gains nothing: under such an id it could already lead the node).
    "Named" means by the log's whole history: configurations compaction or a snapshot's
    install folded away count (``HardState.named`` keeps them durable). A learner, which
    votes for no one, probes the id whose leader traffic it refused if its history named it,
    and hears it in the term that id's rejection names it the leader of (gate.py
    ``_self_vouch_heard``).
* Unbound members are pinned: for an id the configuration binds to no incarnation yet (a
  bootstrap configuration, until the leader's binding change), ``pinned`` holds the first
  incarnation this process took a message from under it (gate.py ``_maybe_pin``), and the
  id is held to it as if the configuration bound it (none attested counts as another): a
  leader counts acknowledgements, and a candidate votes, of one incarnation per such id.
* The leader this node follows stays a known sender (at the incarnation its messages were
  attested with when we adopted it), whatever the configuration says: a leader that
  removed itself hands leadership over with TimeoutNow once the removal commits
  (dissertation 3.10, 4.2.2), when its followers list it no more.
* And only at that incarnation: while this node follows a live leader it hears at an
  attested incarnation, every message under that leader's id from another one, or with
  none attested, is refused (``incarnation``), whatever the configuration binds and
  whatever the message's type or term; so is every message of the node's current term under
  the id of the leader it followed in that term, live or not (a term has one leader, at one
  incarnation). A configuration that binds the leader to no
  incarnation yet (a bootstrap one, until the leader's binding change reaches this node)
  cannot tell the forgery apart: a hello under the leader's id with a made-up incarnation
  had its AppendEntries taken as the leader's and committed a forged mint (red team,
  tests/api/test_redteam_raft.py). Once the leader went quiet, its id at another
  incarnation may lead again (a replaced member) and is heard at that one.
* A node whose configuration is empty (a new data dir waiting to be joined, a wiped one)
  judges no sender: it has no state to protect and no list to check against.
* Vote and pre-vote requests from an unknown sender only while this node follows no live
  leader (then the election's own rules judge the candidate: a member that lagged behind the
  configuration adding it may be the only vote it can get, when the other member of both
  configurations lost its disk; simulator, 3 nodes, seed 7115). A follower of a live leader
  refuses them.
* Everything else from an unknown sender is refused: votes and pre-votes to a follower of a
  live leader, every vote *answer*, TimeoutNow, other responses, ReadIndex traffic.

A message from a known sender is still checked for what would break the node: an
AppendEntries carrying a configuration entry that does not decode is refused
(``undecodable_config``; a node reads its configuration from its log, so storing one would
make it crash at every start). Snapshots are checked once complete (``RaftConfig``
``max_snapshot_bytes`` and the runtime's ``snapshot_check``, compaction.py).

Pure, like the rest of the core: the node passes what it knows.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from univrs.raft.messages import (
    AppendEntries,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    Membership,
    Message,
    NodeId,
    RequestVote,
    decode_membership,
)

REFUSED_TERM = "term"
"""A term above ``MAX_TERM``."""
REFUSED_STRANGER = "stranger"
"""The sender is not a member of the configuration in effect or the committed one."""
REFUSED_INCARNATION = "incarnation"
"""The sender's attested incarnation is not the one the configuration binds its id to."""
REFUSED_SNAPSHOT_SIZE = "snapshot_size"
"""An InstallSnapshot announcing more than ``RaftConfig.max_snapshot_bytes``."""
REFUSED_SNAPSHOT_DATA = "snapshot_data"
"""A complete snapshot whose data the state machine cannot restore (``snapshot_check``)."""

REFUSED_ENTRY = "entry"
"""An AppendEntries carrying a configuration entry that does not decode (a node would crash
on it, now and at every start: its configuration is read from the log)."""

REFUSAL_REASONS = (
    REFUSED_TERM,
    REFUSED_STRANGER,
    REFUSED_INCARNATION,
    REFUSED_SNAPSHOT_SIZE,
    REFUSED_SNAPSHOT_DATA,
    REFUSED_ENTRY,
)

_FROM_LEADER = (AppendEntries, Heartbeat, InstallSnapshot)


def undecodable_config(msg: AppendEntries) -> bool:
    """Does ``msg`` carry a CONFIG entry that is not a valid configuration?"""
    for e in msg.entries:
        if e.kind is EntryKind.CONFIG:
            try:
                decode_membership(e.data)
            except (ValueError, KeyError, TypeError, AttributeError):
                return True
    return False


def _lists(m: Membership, node: NodeId) -> bool:
    # Not ``node in m.members``: that builds a set, and this runs for every message.
    return node in m.voters or node in m.learners


def _held_to(
    config: Membership, src: NodeId, attested: str | None, pinned: Mapping[NodeId, str] | None
) -> bool:
    """Is ``src``, listed by ``config``, heard at ``attested`` as the member listed? At the
    incarnation the configuration binds it to (or with none attested); an id it binds to none
    at the one pinned for it (``pinned``: the first this process took; ``attested`` must
    match), or at any while none is pinned."""
    bound = config.incarnation_of(src)
    if bound is not None:
        return attested is None or attested == bound
    pin = pinned.get(src) if pinned else None
    return pin is None or attested == pin


def listed_sender(
    msg: Message,
    *,
    current: Membership,
    committed: Membership,
    pinned: Mapping[NodeId, str] | None = None,
) -> bool:
    """Is ``msg``'s sender a voter or learner of ``current`` or ``committed``, at the
    incarnation that configuration binds it to (or with none attested or bound; for an
    unbound id with a pin, at the pinned one)?"""
    src = msg.src
    if _lists(current, src):
        config = current
    elif _lists(committed, src):
        config = committed
    else:
        return False
    return _held_to(config, src, msg.sender_incarnation, pinned)


def sender_refusal(
    msg: Message,
    *,
    me: NodeId,
    current: Membership,
    committed: Membership,
    live_leader: NodeId | None,
    live_incarnation: str | None = None,
    tracked: Container[NodeId] = (),
    unlisted_leaders: bool = True,
    unlisted_leader_term: int | None = None,
    unlisted_leader: NodeId | None = None,
    unlisted_incarnation: str | None = None,
    held_leader: NodeId | None = None,
    pinned: Mapping[NodeId, str] | None = None,
) -> str | None:
    """Why ``msg`` must be refused (a ``REFUSED_*`` reason), or None to accept it.

    ``current`` is the configuration in effect, ``committed`` the latest committed one,
    ``live_leader`` the leader this node heard from within the minimum election timeout (or
    leads as), None if none, and ``live_incarnation`` the incarnation its messages were
    attested with (None: not known); ``tracked`` the peers a leader replicates to.
    ``unlisted_leaders`` False (``RaftConfig.unlisted_leaders``, off without TLS): a node in its
    own configuration takes leader traffic from an id no configuration lists, while it follows
    no live leader, only at ``unlisted_leader_term`` (None: never), its own term, and only from
    ``unlisted_leader``: the leader it already followed in that term (at
    ``unlisted_incarnation``, the incarnation it was heard at, when known) or the one a listed
    member vouched for in that term (None: no one).
    A listed id of another incarnation is still heard while it follows no live leader.
    ``held_leader`` (default ``live_leader``): the id held to ``live_incarnation``, also the
    leader of the node's current term for a message of that term once its lease lapsed (one
    leader a term, at one incarnation).
    ``pinned``: for members the configuration binds to no incarnation, the incarnation this
    process first took a message from under their id; such an id is held to it as if the
    configuration bound it (another incarnation, or none attested, is a stranger's).
    """
    src = msg.src
    if not current.voters and not current.learners:
        return None  # an empty configuration (a data dir yet to be filled) knows no one
    attested = msg.sender_incarnation
    held = live_leader if held_leader is None else held_leader
    if src == held and live_incarnation is not None and attested != live_incarnation:
        # Our live leader's id from another incarnation than the one we hear it at (or from a
        # connection that names none): not our leader, whatever the configuration binds. A
        # configuration that binds no incarnation to the leader yet let such a forgery through
        # as the leader (its AppendEntries committed a credit mint; docs/security.md).
        return REFUSED_INCARNATION
    if _lists(current, src):
        config: Membership | None = current
    elif _lists(committed, src) or src in tracked:
        config = committed
    else:
        config = None
    if config is not None and _held_to(config, src, attested, pinned):
        return None
    # (Listed at another incarnation than our listing binds or pinned: either our listing is
    # the stale one (the transport lets a sender whose binding is newer through) or a forgery.)
    # A stranger, or a member of another incarnation: only our leader, or a leader to adopt.
    if src == live_leader:
        return None  # the leader we follow, at its incarnation (a change may have removed it)
    if isinstance(msg, _FROM_LEADER) and (
        not _lists(current, me)
        or (
            live_leader is None
            and (
                config is not None
                or unlisted_leaders
                or (
                    msg.term == unlisted_leader_term
                    and src == unlisted_leader
                    and (unlisted_incarnation is None or attested in (None, unlisted_incarnation))
                )
            )
        )
    ):
        return None  # a leader our configuration does not know yet (the module docstring)
    if isinstance(msg, RequestVote) and live_leader is None:
        # A candidate our configuration does not know yet (or knows at another incarnation),
        # while we follow no leader: the election's own rules judge it (its log must hold
        # everything ours does, and only its configuration's majority elects it). Refusing
        # it deadlocked a cluster whose only other up-to-date member of both configurations
        # had lost its disk (simulator, 3 nodes, seed 7115). Its answer never counts here:
        # votes *from* strangers stay refused.
        return None
    return REFUSED_STRANGER if config is None else REFUSED_INCARNATION
